"""CLI round trip on tiny settings: train → checkpoint → eval → predict → resume; and the
errors users make, each one line on stderr with exit status 2."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detlab.cli import main

from conftest import RECIPE, TINY, metric_epochs as _metric_epochs


def test_train_writes_run_directory(trained):
    _, run_dir = trained
    for name in ("recipe.json", "recipe_source.py", "provenance.json", "metrics.csv",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents*"))
    resolved = json.loads((run_dir / "recipe.json").read_text())
    assert resolved["train"]["max_epochs"] == 1
    assert resolved["model"]["head"]["type"] == "AttentionUNetHead"
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)  # safe format
    prov = json.loads(ckpt["detlab_recipe"])
    import hashlib

    entry = next(v for v in prov["files"].values() if v["path"].endswith("fracture_unet.py"))
    assert entry["sha256"] == hashlib.sha256(RECIPE.read_bytes()).hexdigest()
    assert _metric_epochs(run_dir) == [0]
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_focal_tversky_epoch" in header and "train/loss_focal_epoch" in header


def test_eval_from_checkpoint_alone_in_other_folder(trained, tmp_path, capsys, monkeypatch):
    _, run_dir = trained
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.json"
    assert main(["eval", str(run_dir / "checkpoints/best.ckpt"), "--json", str(out),
                 "--quiet"]) == 0
    metrics = json.loads(out.read_text())
    assert {"dice", "pr_auc", "best_threshold"} <= set(metrics)
    printed = capsys.readouterr().out
    assert "pr_auc=" in printed and "dice=" in printed


def test_eval_override_changes_threshold(trained, tmp_path):
    _, run_dir = trained
    ckpt = str(run_dir / "checkpoints/best.ckpt")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", ckpt, "model.head.postprocessor.threshold=0.0001",
                 "--json", str(a), "--quiet"]) == 0
    assert main(["eval", ckpt, "model.head.postprocessor.threshold=0.9999",
                 "--json", str(b), "--quiet"]) == 0
    ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ma["pr_auc"] == pytest.approx(mb["pr_auc"])  # threshold-free metric unchanged
    assert ma["dice"] != mb["dice"]


def test_predict_writes_masks_and_overlays(trained, tmp_path):
    _, run_dir = trained
    images = []
    for i, size in enumerate([(64, 64), (70, 90)]):  # second is not a multiple of 32
        arr = (np.random.default_rng(i).random(size) * 255).astype(np.uint8)
        p = tmp_path / f"slice{i}.png"
        Image.fromarray(arr).save(p)
        images.append(str(p))
    out = tmp_path / "out"
    assert main(["predict", str(run_dir / "checkpoints/last.ckpt"), *images,
                 "--out", str(out), "--save-probs"]) == 0
    for i, (h, w) in enumerate([(64, 64), (70, 90)]):
        mask = np.asarray(Image.open(out / f"slice{i}_mask.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert np.asarray(Image.open(out / f"slice{i}_overlay.png")).shape == (h, w, 3)
        probs = np.load(out / f"slice{i}_probs.npy")
        assert probs.shape == (1, h, w) and 0 <= probs.min() and probs.max() <= 1


def test_resume_continues_from_saved_epoch(trained):
    work, run_dir = trained
    before = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert before["epoch"] == 0
    args = ["train", str(RECIPE), *[a for a in TINY if not a.startswith("train.max_epochs")],
            "train.max_epochs=2", "--resume", "--work-dir", str(work)]
    assert main(args) == 0
    after = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert after["global_step"] == 2 * before["global_step"]  # one more epoch, not two
    assert _metric_epochs(run_dir) == [0, 1]  # history before the interruption is kept
    assert not (work / "fracture_unet" / "version_1").exists()
    assert after["optimizer_states"] and after["lr_schedulers"]


def _error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert "recipe file not found" in _error(capsys, ["show", str(tmp_path / "none.py")])
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(\n")
    assert "syntax error" in _error(capsys, ["show", str(bad)])
    assert "did you mean 'train.max_epochs'" in _error(
        capsys, ["show", str(RECIPE), "train.max_epoch=3"])
    assert "expected an integer" in _error(capsys, ["show", str(RECIPE), "train.max_epochs=x"])
    err = _error(capsys, ["train", str(RECIPE), "model.backbone.type=TimBackbone",
                          "--work-dir", str(tmp_path)])
    assert "Did you mean: TimmBackbone" in err
    assert "checkpoint not found" in _error(capsys, ["eval", str(tmp_path / "x.ckpt")])
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    assert "not a detlab checkpoint" in _error(capsys, ["eval", str(plain)])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(64))
    assert "not a detlab checkpoint: " in _error(capsys, ["eval", str(garbage)])
    assert "unknown kind" in _error(capsys, ["list", "headz"])


def test_predict_missing_input(trained, tmp_path, capsys):
    _, run_dir = trained
    err = _error(capsys, ["predict", str(run_dir / "checkpoints/last.ckpt"),
                          str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")])
    assert "input not found" in err


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="recipe file not found"):
        main(["--debug", "show", str(tmp_path / "none.py")])


def test_list_prints_docstring_lines(capsys):
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    assert "FocalTverskyLoss" in out and "losses:" in out


def test_ema_weights_are_checkpointed_and_used_by_eval(tmp_path):
    assert main(["train", str(RECIPE), *TINY, "train.ema={'decay': 0.5}",
                 "--work-dir", str(tmp_path)]) == 0
    ckpt_path = tmp_path / "fracture_unet" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    # detlab's ModelEMA: averaged weights in state_dict, live ones kept aside for resume
    live = ckpt["detlab_ema"]["live_state"]
    key = next(k for k in ckpt["state_dict"] if k.endswith("classifier.weight"))
    assert not torch.equal(ckpt["state_dict"][key], live[key])
    from detlab.engine.trainer import load_task

    task = load_task(ckpt_path)
    assert torch.equal(dict(task.named_parameters())[key], ckpt["state_dict"][key])
