"""Before the first step: does the data give the model anything to learn?

``train.positives`` (recipe, default ``dict(min_fraction=0.0, min_kept=0.1, on_empty="error",
max_samples=64, max_lost=0.5, min_size=None)``; ``None``/``False`` turns the check off):

* every split of ``data`` (train, val) is counted with
  :func:`~detlab.data.positives.count_positives` on ``max_samples`` evenly spread images and
  one line per split is printed;
* **train** is (near) empty -> a :class:`~detlab.errors.DataError` naming the knob to change
  (``on_empty="warn"``: a warning, and training goes on). Empty: no positive pixel, fewer than
  ``min_kept`` of its words / boxes survive the pipeline (ICDAR words 16-20 px tall at 1280 px
  keep 9 of 268 at ``img_size=480``, ``min_text_size=8``), or ``fraction < min_fraction``;
* a split that loses more than ``max_lost`` of its objects in the pipeline (text words below
  ``min_text_size``, boxes clipped away or below ``min_size`` px) -> a warning with the numbers;
* **val** (nearly) empty by the same rules -> a warning.

It runs in :class:`PositivesCheck` (``on_fit_start``), which the trainer adds whether or not
``train.diagnostics`` is on: training on nothing is an error, not a picture.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ..data.positives import PositiveStats, UnknownTargets, count_positives
from ..checks import is_int, is_number
from ..errors import ConfigError, DataError

__all__ = ["POSITIVES_DEFAULTS", "positives_config", "check_training_positives",
           "PositivesCheck"]

log = logging.getLogger("detlab.diagnostics")

POSITIVES_DEFAULTS: dict[str, Any] = {
    "min_fraction": 0.0,    # train positive pixels / input pixels below this is "empty"
    "min_kept": 0.1,        # train keeping fewer than this share of its objects is "empty"
    "on_empty": "error",    # or "warn"
    "max_samples": 64,      # images counted per split (evenly spread)
    "max_lost": 0.5,        # warn when a split loses more than this share of its objects
    "min_size": None,       # boxes: shorter side (input px) below this counts as lost
}


def positives_config(value: Any) -> dict[str, Any] | None:
    """``train.positives`` checked and completed with :data:`POSITIVES_DEFAULTS` (None: off)."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"train.positives must be a dict (keys {sorted(POSITIVES_DEFAULTS)}), "
                          f"None or a bool, got {value!r}")
    unknown = sorted(set(value) - set(POSITIVES_DEFAULTS))
    if unknown:
        raise ConfigError(f"train.positives: unknown key(s) {unknown}; known keys: "
                          f"{sorted(POSITIVES_DEFAULTS)}")
    cfg = {**POSITIVES_DEFAULTS, **value}
    if cfg["on_empty"] not in ("error", "warn"):
        raise ConfigError(f"train.positives.on_empty must be 'error' or 'warn', got "
                          f"{cfg['on_empty']!r}")
    for key, low, high in (("min_fraction", 0.0, 1.0), ("min_kept", 0.0, 1.0),
                           ("max_lost", 0.0, 1.0)):
        v = cfg[key]
        if not is_number(v) or not low <= v <= high:
            raise ConfigError(f"train.positives.{key} must be a number in [{low:g}, {high:g}], "
                              f"got {v!r}")
    m = cfg["max_samples"]
    if m is not None and (not is_int(m) or m < 1):
        raise ConfigError(f"train.positives.max_samples must be an int >= 1 or None, got {m!r}")
    s = cfg["min_size"]
    if s is not None and (not is_number(s) or s < 0):
        raise ConfigError(f"train.positives.min_size must be a number >= 0 px or None, got {s!r}")
    return cfg


def _empty_reason(stats: PositiveStats, min_fraction: float, min_kept: float) -> str | None:
    if stats.images == 0:
        return None
    if stats.objects == 0 and stats.positive_pixels == 0:
        return "its annotations hold no object at all"
    if stats.positive_pixels == 0 or (stats.kind != "masks" and stats.objects_kept == 0):
        return "no object survives the pipeline"
    if stats.kind != "masks" and stats.objects_kept < min_kept * stats.objects:
        return (f"only {stats.objects_kept} of {stats.objects} objects survive the pipeline "
                f"(< train.positives.min_kept={min_kept:g})")
    if stats.fraction < min_fraction:
        return (f"positive pixels are {stats.fraction:.3g} of the input, below "
                f"train.positives.min_fraction={min_fraction:g}")
    return None


def _knob(stats: PositiveStats) -> str:
    hint = stats.hint()
    if hint:
        return hint
    if stats.kind == "masks":
        return "check that the masks are loaded (`detlab show-data RECIPE --out DIR`)"
    return ("check the annotations, img_size and the class selection "
            "(`detlab show-data RECIPE --out DIR`)")


def check_training_positives(datamodule: Any, cfg: Mapping[str, Any] | None,
                             warn_file: str | Path | None = None) -> list[PositiveStats]:
    """Count and report the positives of ``datamodule``'s train and val splits (module
    docstring); returns the stats. Raises DataError for an empty train split when
    ``cfg["on_empty"] == "error"``; ``cfg`` None/False: no check, ``True``/``{}``: defaults.
    ``warn_file``: warnings are appended there too."""
    cfg = positives_config(cfg)
    if cfg is None:
        return []
    splits = [s for s in ("train", "val")
              if getattr(datamodule, "cfg", {}).get(s) is not None]
    results, warnings = [], []
    for split in splits:
        try:
            stats = count_positives(datamodule.dataset(split), split, cfg["max_samples"],
                                    min_size=cfg["min_size"])
        except UnknownTargets as err:  # a custom dataset with other targets: nothing to judge
            rank_zero_info(f"positives in data.{split}: not counted ({err})")
            continue
        results.append(stats)
        rank_zero_info(f"positives in data.{stats.summary()}")
        empty = _empty_reason(stats, float(cfg["min_fraction"]), float(cfg["min_kept"]))
        if empty and split == "train":
            message = (f"data.train gives the model nothing to learn: {empty} "
                       f"({stats.summary()}). {_knob(stats)}. Set "
                       "train.positives.on_empty='warn' to train anyway")
            if cfg["on_empty"] == "error":
                raise DataError(message)
            warnings.append(message)
        elif empty:
            warnings.append(f"data.{split} is (nearly) empty after the pipeline: {empty} "
                            f"({stats.summary()}). {_knob(stats)}")
        elif stats.objects and stats.objects_lost > cfg["max_lost"] * stats.objects:
            warnings.append(f"data.{split} loses {stats.objects_lost} of {stats.objects} "
                            f"objects in the pipeline ({stats.summary()}). {_knob(stats)}")
    for message in warnings:
        log.warning(message)
        if warn_file is not None:
            path = Path(warn_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"start: {message}\n")
    return results


class PositivesCheck(Callback):
    """Runs :func:`check_training_positives` at ``on_fit_start`` on every rank (each raises
    the same error, so no rank waits for another); only rank 0 prints.

    Args:
        cfg: ``train.positives`` (None/False: the callback does nothing).
        run_dir: warnings are also appended to ``<run_dir>/diagnostics/warnings.log``.
    """

    def __init__(self, cfg: Any = None, run_dir: str | Path | None = None) -> None:
        self.cfg = positives_config(cfg)
        self.warn_file = Path(run_dir) / "diagnostics" / "warnings.log" if run_dir else None
        self.stats: list[PositiveStats] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Count the positives of the trainer's datamodule (no datamodule: nothing to do)."""
        datamodule = getattr(trainer, "datamodule", None)
        if self.cfg is None or datamodule is None or not callable(
                getattr(datamodule, "dataset", None)):
            return
        warn_file = self.warn_file if trainer.is_global_zero else None
        self.stats = check_training_positives(datamodule, self.cfg, warn_file)
