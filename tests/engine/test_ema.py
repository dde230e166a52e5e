"""detlab's EMA: the YOLOv5/v8 ramp, the average against a hand-computed recursion, validation
on the EMA weights, the checkpoint layout and the update count across ``--resume``."""

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detlab.engine.ema import ModelEMA, build_ema, ema_decay
from detlab.errors import ConfigError


def test_ramp_formula_hand_values():
    # decay * (1 - exp(-n / tau)), worked out by hand for decay=0.9999, tau=2000
    assert ema_decay(1) == pytest.approx(0.9999 * 0.00049987504, rel=1e-7)
    assert ema_decay(60) == pytest.approx(0.9999 * 0.0295544665, rel=1e-7)
    assert ema_decay(2000) == pytest.approx(0.9999 * 0.6321205588, rel=1e-7)
    assert ema_decay(10**7) == pytest.approx(0.9999)
    assert ema_decay(5, decay=0.9, tau=0) == 0.9  # no ramp
    assert ema_decay(10, decay=0.9, tau=20) == pytest.approx(0.9 * (1 - math.exp(-0.5)))


def test_build_ema_config_errors():
    assert build_ema(None) is None and build_ema(False) is None
    ema = build_ema(True)
    assert (ema.decay, ema.tau, ema.validate) == (0.9999, 2000.0, "ema")
    assert build_ema({"decay": 0.99, "tau": 10}).tau == 10
    with pytest.raises(ConfigError, match="did you mean 'decay'"):
        build_ema({"decya": 0.9})
    with pytest.raises(ConfigError, match="validate"):
        build_ema({"validate": "best"})


class _Regress(pl.LightningModule):
    """Linear + BatchNorm regression of a fixed, learnable batch; logs val/loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5
    return DataLoader(TensorDataset(x, y), batch_size=16)  # one learnable batch per step


class _Recorder(pl.Callback):
    def __init__(self):
        self.live, self.val = [], []

    def on_fit_start(self, trainer, pl_module):
        self.init = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.live.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    def on_validation_end(self, trainer, pl_module):
        self.val.append(float(trainer.callback_metrics["val/loss"]))


def _train(ema, epochs, tmp_path):
    rec = _Recorder()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ema, rec],
                         default_root_dir=str(tmp_path))
    module = _Regress()
    trainer.fit(module, _loader(), _loader())
    return trainer, module, rec


def test_average_matches_hand_recursion_and_leaves_init(tmp_path):
    ema = ModelEMA(decay=0.9, tau=20)  # a slow average: the recursion is tested, not a copy
    trainer, module, rec = _train(ema, 60, tmp_path)
    assert ema.updates == 60 == trainer.global_step
    expected = {k: v.clone() for k, v in rec.init.items()}
    for n, live in enumerate(rec.live, start=1):
        d = 0.9 * (1 - math.exp(-n / 20))
        for k, v in live.items():
            if v.dtype.is_floating_point:  # BN running stats averaged too (buffers="ema")
                expected[k] = d * expected[k] + (1 - d) * v
            else:
                expected[k] = v.clone()  # num_batches_tracked copied
    for k in expected:
        torch.testing.assert_close(ema.ema[k], expected[k], rtol=1e-5, atol=1e-6)
    assert int(ema.ema["net.1.num_batches_tracked"]) == 60


def test_default_ema_after_60_steps_is_not_the_init(tmp_path):
    ema = ModelEMA()  # decay 0.9999, tau 2000 (helmet_yolo_p2_coco's setting)
    _, module, rec = _train(ema, 60, tmp_path)
    live = rec.live[-1]
    for k in ("net.0.weight", "net.2.weight"):
        moved = (live[k] - rec.init[k]).norm()
        lag = (ema.ema[k] - live[k]).norm()
        # Without the ramp 0.9999**60 = 99.4 % of the init would remain (lag ≈ moved).
        assert moved > 0.1 and lag < 0.2 * moved


def test_validation_uses_ema_and_follows_live_trend(tmp_path):
    ema = ModelEMA(decay=0.5, tau=0)
    trainer, module, rec = _train(ema, 8, tmp_path)
    assert all(b < a for a, b in zip(rec.val, rec.val[1:]))  # falls every epoch
    assert rec.val[-1] < 0.5 * rec.val[0]
    # the logged value is the EMA weights' loss, not the live one
    x, y = next(iter(_loader()))
    averaged = _Regress().eval()
    averaged.load_state_dict(ema.ema)
    module.eval()
    with torch.no_grad():
        ema_loss = float(nn.functional.mse_loss(averaged.net(x), y))
        live_loss = float(nn.functional.mse_loss(module.net(x), y))
    assert rec.val[-1] == pytest.approx(ema_loss, rel=1e-5)
    assert abs(live_loss - ema_loss) > 1e-3 * ema_loss


def test_checkpoint_layout_ema_and_live(tmp_path):
    for validate in ("ema", "live"):
        ema = ModelEMA(decay=0.5, tau=0, validate=validate)
        trainer, module, rec = _train(ema, 2, tmp_path)
        path = tmp_path / f"{validate}.ckpt"
        trainer.save_checkpoint(path)
        ckpt = torch.load(path, weights_only=True)
        info = ckpt["detlab_ema"]
        assert info["updates"] == 2 and info["validate"] == validate
        live_key, avg = ("live_state", ckpt["state_dict"]) if validate == "ema" else (
            "ema_state", None)
        if validate == "ema":
            torch.testing.assert_close(avg["net.0.weight"], ema.ema["net.0.weight"])
            torch.testing.assert_close(info[live_key]["net.0.weight"],
                                       rec.live[-1]["net.0.weight"])
        else:
            torch.testing.assert_close(ckpt["state_dict"]["net.0.weight"],
                                       rec.live[-1]["net.0.weight"])
            torch.testing.assert_close(info["ema_state"]["net.0.weight"],
                                       ema.ema["net.0.weight"])


def test_recipe_run_saves_ema_and_resume_continues_count(tmp_path, monkeypatch):
    """fracture_unet with helmet_yolo_p2_coco's EMA setting: the evaluated weights left the
    init after 4 steps, resume continues the count and trains on the live weights."""
    from conftest import RECIPE, TINY
    from detlab.engine.trainer import fit, load_task
    from detlab.recipe import load

    seen = []
    fit_start = ModelEMA.on_fit_start

    def record(self, trainer, pl_module):
        seen.append({k: v.clone() for k, v in pl_module.state_dict().items()})
        fit_start(self, trainer, pl_module)
        seen.append({k: v.clone() for k, v in self.ema.items()})

    monkeypatch.setattr(ModelEMA, "on_fit_start", record)
    tiny = [a for a in TINY if not a.startswith("train.max_epochs")]
    args = [*tiny, "train.ema={'decay': 0.9999}", "train.num_threads=1",
            "train.diagnostics=false", "train.scheduler=None"]
    run_dir, _, trainer = fit(load(RECIPE, [*args, "train.max_epochs=1"]), work_dir=tmp_path)
    path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    info = ckpt["detlab_ema"]
    assert info["updates"] == trainer.global_step == 4 and info["tau"] == 2000
    init, ema_w, live = seen[0], ckpt["state_dict"], info["live_state"]
    key = next(k for k in init if k.endswith("classifier.weight"))
    moved = (live[key] - init[key]).norm()
    assert moved > 0 and (ema_w[key] - live[key]).norm() < 0.05 * moved  # not ~the init
    task = load_task(path)  # eval/predict use the EMA weights
    assert torch.equal(dict(task.named_parameters())[key], ema_w[key])

    run_dir2, _, trainer2 = fit(load(RECIPE, [*args, "train.max_epochs=2"]), resume=str(path),
                                work_dir=tmp_path)
    assert run_dir2 == run_dir
    assert all(torch.equal(seen[2][k], live[k]) for k in live)  # trains on from live weights
    assert all(torch.equal(seen[3][k], ema_w[k]) for k in ema_w)  # average restored
    after = torch.load(path, weights_only=True)["detlab_ema"]
    assert after["updates"] == trainer2.global_step == 8
