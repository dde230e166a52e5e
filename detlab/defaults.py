"""Defaults of the recipe sections detlab reads itself (``train``, ``data``).

They are merged into every loaded recipe before overrides, so ``detlab show`` prints every knob
and ``train.precision=16-mixed`` works even when the recipe file does not mention it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRAIN_DEFAULTS", "DETLAB_TRAIN_KEYS", "DATA_DEFAULTS", "SECTION_DEFAULTS"]

TRAIN_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,               # epochs to train
    "optimizer": {"type": "AdamW", "lr": 1e-3},
    "scheduler": None,              # e.g. dict(type="WarmupCosine", warmup_epochs=1)
    "precision": "32-true",         # "16-mixed" / "bf16-mixed" for AMP
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "gradient_clip_algorithm": "norm",
    "ema": None,                    # dict(decay=0.9999, tau=2000, validate="ema"): EMA of the
                                    # weights with the YOLO ramp (detlab.engine.ema)
    "accelerator": "auto",          # a GPU when there is one
    "devices": "auto",
    "num_nodes": 1,
    "strategy": "auto",             # "ddp" for several GPUs / nodes
    "sync_batchnorm": False,        # True: BatchNorm statistics over all DDP processes
                                    # (SyncBatchNorm); no effect with one process
    "seed": 0,
    "num_threads": None,            # torch CPU threads; None: torch's default (one per core).
                                    # 1 can be ~3x faster on a CPU other processes share
    "limit_train_batches": None,
    "limit_val_batches": None,
    "log_every_n_steps": 10,
    "check_val_every_n_epoch": 1,
    "work_dir": "runs",
    "deterministic": False,
    "num_sanity_val_steps": 0,
    "progress_bar": True,
    "progress_every": 20,           # without a terminal (CI logs, a file): one progress line
                                    # (loss, it/s) every N training steps and at epoch ends
    "diagnostics": True,            # probability histograms, collapse warning, attention maps
    # before training: count what the data gives to learn, stop (or warn) when it is nothing
    # (detlab.engine.positives_check); None turns it off
    "positives": {"min_fraction": 0.0, "min_kept": 0.1, "on_empty": "error",
                  "max_samples": 64, "max_lost": 0.5, "min_size": None},
}

# The ``train`` keys detlab reads itself; every other key is the ``lightning.pytorch.Trainer``
# argument of the same name, passed through (detlab.engine.trainer.trainer_arguments).
DETLAB_TRAIN_KEYS: frozenset[str] = frozenset({
    "optimizer", "scheduler", "ema", "seed", "num_threads", "work_dir", "progress_bar",
    "progress_every", "diagnostics", "positives",
})

DATA_DEFAULTS: dict[str, Any] = {
    "train": None,
    "val": None,
    "test": None,                   # falls back to val
    "predict": None,                # dataset for `detlab predict` (gets paths=[...])
    "batch_size": 8,
    "val_batch_size": None,         # defaults to batch_size
    "num_workers": 2,
    "size_divisor": None,           # defaults to the model's largest stride
    "sampler": None,                # e.g. dict(type="PositiveOversampler", positive_fraction=0.5)
    "multi_scale": None,            # training only: (0.5, 1.5) x the train dataset's img_size,
                                    # a random size per batch (detlab.data.multiscale)
    "pin_memory": False,
    "persistent_workers": None,     # defaults to num_workers > 0
    "root": None,                   # data folder/list for datasets taking `root` (CT studies)
    "classes": None,                # class names once, in label order (detlab.classes)
    "cache": None,                  # "ram" / "disk": decoded, resized images (detlab.data.cache)
    "uint8_batches": None,          # uint8 train batches normalized on the device (None: where
                                    # the pipeline allows it; detlab.data.uint8_batches)
}

SECTION_DEFAULTS: dict[str, dict[str, Any]] = {"train": TRAIN_DEFAULTS, "data": DATA_DEFAULTS}
