"""``last.ckpt`` is the end of the latest finished epoch, whatever the monitored metric does,
and ``--resume`` from it continues with the next epoch."""

import torch

from detlab.engine.trainer import fit
from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.recipe import load

from conftest import RECIPE, TINY, metric_epochs


def _worsening_primary(monkeypatch):
    """Make the monitored metric fall every epoch, so the best epoch is always epoch 0."""
    compute = SegmentationEvaluator.compute
    calls = {"n": 0}

    def worse(self):
        metrics = compute(self)
        calls["n"] += 1
        metrics["pr_auc"] = 1.0 - 0.1 * calls["n"]
        return metrics

    monkeypatch.setattr(SegmentationEvaluator, "compute", worse)


def test_last_is_final_epoch_when_best_is_first(tmp_path, monkeypatch):
    _worsening_primary(monkeypatch)
    tiny = [a for a in TINY if not a.startswith("train.max_epochs")]
    recipe = load(RECIPE, [*tiny, "train.max_epochs=3", "train.num_threads=1",
                           "train.diagnostics=false"])
    run_dir, task, trainer = fit(recipe, work_dir=tmp_path)
    steps = trainer.global_step
    assert steps == 3 * 4  # 16 samples / batch 4, 3 epochs
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0  # the metric only got worse after epoch 0
    assert last["epoch"] == 2 and last["global_step"] == steps
    final = task.state_dict()
    assert all(torch.equal(last["state_dict"][k], final[k].cpu()) for k in final)
    key = next(k for k in final if k.endswith("classifier.weight"))
    assert not torch.equal(best["state_dict"][key], last["state_dict"][key])

    resumed = load(RECIPE, [*tiny, "train.max_epochs=4", "train.num_threads=1",
                            "train.diagnostics=false"])
    run_dir2, _, trainer2 = fit(resumed, resume="latest", work_dir=tmp_path)
    assert run_dir2 == run_dir
    assert trainer2.global_step == 4 * 4  # one more epoch, none repeated
    after = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["epoch"] == 3 and after["global_step"] == 16
    assert metric_epochs(run_dir) == [0, 1, 2, 3]
