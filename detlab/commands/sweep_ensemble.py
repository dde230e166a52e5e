"""``detlab sweep A.ckpt B.ckpt ensemble.iou_thr=0.5,0.6 ensemble.weights=[1,1],[2,1]``: the
merge settings of an ensemble (or of TTA) tried on one inference pass per model.

Every (model, view) member's post-processed predictions of every image are kept once
(:func:`detlab.engine.ensemble.gathered_members`); each combination only re-merges them
(:func:`~detlab.engine.ensemble.merge_members`) and re-runs the first model's evaluator. Keys:
``ensemble.<knob>`` or ``inference.ensemble.<knob>`` with ``<knob>`` in
:attr:`~detlab.postprocess.ensemble.EnsembleSettings.sweepable`, and ``evaluator.<arg>``.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..postprocess.ensemble import EnsembleSettings

__all__ = ["is_ensemble_key", "run_ensemble_sweep"]


def _knob(key: str) -> str | None:
    for prefix in ("inference.ensemble.", "ensemble."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


def is_ensemble_key(key: str) -> bool:
    """Whether ``key`` is an ensemble merge setting (``[inference.]ensemble.<knob>``)."""
    return _knob(key) is not None


def run_ensemble_sweep(tasks: Sequence[Any], names: Sequence[str], grid: dict[str, list[Any]],
                       split: str = "val", limit: int | None = None,
                       tta: Any = None) -> Any:
    """Evaluate every combination of ``grid`` on the merged predictions of ``tasks``.

    Returns:
        a :class:`~detlab.commands.sweep.SweepResult`, best row first.

    Raises:
        ConfigError: a key that is neither ``[inference.]ensemble.<knob>`` (a sweepable knob)
            nor ``evaluator.<arg>``; members that do not fit.
    """
    import torch

    from ..engine.ensemble import (gathered_members, member_weight_list, merge_members,
                                   resolve_settings)
    from ..engine.inference import data_module, default_device
    from ..recipe import apply_overrides
    from ..registry import EVALUATORS
    from .sweep import SweepResult, _fast_evaluator, sort_rows

    for key in grid:
        knob = _knob(key)
        if knob is None and not key.startswith("evaluator."):
            raise ConfigError(f"cannot sweep {key!r} over an ensemble: sweep ensemble.<knob> "
                              f"(<knob> in {', '.join(EnsembleSettings.sweepable)}) or "
                              "evaluator.<arg>")
        if knob is not None and knob not in EnsembleSettings.sweepable:
            raise ConfigError(f"cannot sweep {key!r}: ensemble knobs are "
                              f"{', '.join(EnsembleSettings.sweepable)}")
    base, tta_settings = resolve_settings(tasks[0].recipe, tta=tta)
    keys = list(grid)
    combos = []
    for values in itertools.product(*(grid[k] for k in keys)):
        changes = {_knob(k): v for k, v in zip(keys, values) if _knob(k) is not None}
        settings = EnsembleSettings.from_config({**base.to_config(), **changes})
        weights = member_weight_list(settings, names, tta_settings)  # fail before the pass
        recipe = copy.deepcopy(dict(tasks[0].recipe))
        apply_overrides(recipe, [f"{k}={v!r}" for k, v in zip(keys, values)
                                 if k.startswith("evaluator.")])
        combos.append((values, settings, weights, recipe["evaluator"]))

    device = default_device()
    loaders = []
    for task in tasks:
        task.to(device).eval()
        data = data_module(task)
        loaders.append(data.val_dataloader() if split == "val" else data.test_dataloader())
    result = SweepResult()
    t0 = time.perf_counter()
    with torch.inference_mode():
        cached = [([[m.to("cpu") for m in members] for members in gathered], batch)
                  for gathered, batch in gathered_members(tasks, loaders, device, names,
                                                          tta_settings, limit)]
        result.inference_s = time.perf_counter() - t0
        result.network_passes = len(tasks)
        result.images = sum(len(batch.meta) for _, batch in cached)
        higher = True
        for values, settings, weights, evaluator_cfg in combos:
            evaluator = EVALUATORS.build(_fast_evaluator(evaluator_cfg), key="evaluator")
            evaluator.reset()
            t1 = time.perf_counter()
            merged = [([merge_members(tasks, members, weights, meta, settings)
                        for members, meta in zip(gathered, batch.meta)], batch)
                      for gathered, batch in cached]
            t2 = time.perf_counter()
            for preds, batch in merged:
                evaluator.update(preds, batch)
            metrics = evaluator.compute()
            result.postprocess_s += t2 - t1
            result.evaluation_s += time.perf_counter() - t2
            result.append({"settings": dict(zip(keys, values)), "metrics": metrics,
                           "ignored": {}})
            result.primary = evaluator.primary
            higher = getattr(evaluator, "higher_is_better", True)
    sort_rows(result, result.primary, higher)
    return result
