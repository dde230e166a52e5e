"""Sliced validation during training (``inference.slicing.during_training=True``): Lightning's
validation loop logs, for every head family slicing supports, the metrics ``detlab eval``
computes for the same weights and slicing; a 1-epoch ``detlab train`` logs the numbers
``detlab eval last.ckpt`` prints; off by default (validation then stays unsliced)."""

from __future__ import annotations

import csv
import json
import math

import lightning.pytorch as pl
import pytest
import torch

from detlab.cli import main
from detlab.engine.inference import data_module, evaluate
from detlab.structures import Prediction

from ensemble_models import ROOT, assert_same_predictions, prediction_numbers, tiny_task

torch.set_num_threads(1)

# 64 px frames, 40 px tiles, overlap 0.25: 2x2 tiles per frame (each resized like a val image)
SLICED = ["+inference.slicing.slice_height=40", "+inference.slicing.overlap=0.25"]
ON = [*SLICED, "+inference.slicing.during_training=True"]


def _validate(task) -> dict[str, float]:
    """The ``val/*`` metrics Lightning's validation loop logs for ``task`` (no training)."""
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.validate(task, datamodule=data_module(task), verbose=False)
    return {k[len("val/"):]: float(v) for k, v in logged.items()
            if k.startswith("val/") and k != "val/primary"}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _recorded(task, run) -> tuple[dict[str, float], list[Prediction]]:
    """``run(task)``'s metrics and every prediction its evaluator was fed, in order."""
    seen: list[Prediction] = []
    update = task.evaluator.update

    def record(preds, batch):
        seen.extend(preds)
        update(preds, batch)

    task.evaluator.update = record
    try:
        return run(task), seen
    finally:
        task.evaluator.update = update


@pytest.mark.parametrize("kind, extra", [
    ("yolo", ["model.head.postprocessor.score_threshold=0.0"]),
    ("db", []),
    ("unet", []),
])
def test_sliced_validation_logs_what_eval_computes(kind, extra):
    task = tiny_task(kind, extra=[*ON, *extra])
    logged, val_preds = _recorded(task, _validate)
    want, eval_preds = _recorded(task, evaluate)  # detlab eval's loop: sliced
    want = _finite(want)
    assert logged.keys() == want.keys() and len(want) >= 3
    assert logged == pytest.approx(want, abs=1e-6)
    # the same frame predictions (untrained boxes score AP 0: compare the boxes themselves)
    assert len(eval_preds) == 2
    assert_same_predictions(val_preds, eval_preds, atol=1e-6)
    # the validation really was sliced: the unsliced validation of the same weights differs
    plain = tiny_task(kind, extra=[*SLICED, *extra])
    assert plain.val_slicing is None  # off by default
    _, plain_preds = _recorded(plain, _validate)
    assert any(prediction_numbers(p).shape != prediction_numbers(e).shape or not torch.allclose(prediction_numbers(p), prediction_numbers(e))
               for p, e in zip(plain_preds, eval_preds))


def test_sliced_validation_with_tta_logs_what_eval_computes():
    # eval of a recipe with inference.tta and inference.slicing fuses the sliced views
    task = tiny_task("unet", extra=[*ON, "+inference.tta.flips=['none', 'h']"])
    logged = _validate(task)
    want = _finite(evaluate(task))
    assert logged == pytest.approx(want, abs=1e-6)
    untta = tiny_task("unet", extra=ON)
    assert _finite(evaluate(untta)) != pytest.approx(want, abs=1e-6)


def test_train_one_epoch_sliced_val_equals_eval_of_last_ckpt(tmp_path):
    tiny = ["data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
            "data.val.image_size=64", "data.batch_size=4", "data.num_workers=0",
            "data.val.positive_fraction=1.0", "data.val.lesion_fraction=0.05",
            "train.max_epochs=1", "train.progress_bar=false",
            "model.head.decoder_channels=[16, 16, 16, 8, 8]"]
    recipe = str(ROOT / "recipes" / "fracture_unet.py")
    assert main(["train", recipe, *tiny, *ON, "--work-dir", str(tmp_path)]) == 0
    run = tmp_path / "fracture_unet" / "version_0"
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/pr_auc")]
    logged = {k[len("val/"):]: float(v) for k, v in rows[-1].items()
              if k.startswith("val/") and v and k != "val/primary"}

    def run_eval(*extra: str) -> dict[str, float]:
        out = tmp_path / f"m{len(list(tmp_path.glob('*.json')))}.json"
        assert main(["eval", str(run / "checkpoints" / "last.ckpt"), *extra, "--quiet",
                     "--json", str(out)]) == 0
        return _finite(json.loads(out.read_text()))

    sliced = run_eval()
    assert logged.keys() == sliced.keys() and sliced["pr_auc"] > 0
    assert logged == pytest.approx(sliced, abs=1e-6)
    assert run_eval("inference.slicing=None") != pytest.approx(sliced, abs=1e-6)


def test_during_training_must_be_a_bool():
    from detlab.errors import ConfigError
    from detlab.postprocess.slicing import SlicedInference

    with pytest.raises(ConfigError, match="inference.slicing.during_training='yes'"):
        SlicedInference(during_training="yes")


@pytest.mark.slow
def test_sliced_validation_under_ddp_matches_eval():
    # 2 gloo processes on the CPU, 3 val frames: Lightning adds its DistributedSampler to the
    # sliced val loader (one rank gets a padded duplicate the evaluator drops) and the
    # evaluator gathers; float32 logging leaves ~1e-8
    task = tiny_task("unet", extra=[*ON, "data.val.num_samples=3",
                                    "data.val.positive_fraction=1.0",
                                    "data.val.lesion_fraction=0.05"])
    want = _finite(evaluate(task))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    (logged,) = trainer.validate(task, datamodule=data_module(task), verbose=False)
    got = {k[len("val/"):]: float(v) for k, v in logged.items()
           if k.startswith("val/") and k != "val/primary"}
    assert want["pr_auc"] > 0 and got == pytest.approx(want, abs=1e-6)
