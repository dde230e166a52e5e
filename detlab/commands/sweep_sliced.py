"""``detlab sweep`` over sliced inference: ``inference.slicing.<knob>`` keys.

Combinations are grouped by the settings that change the tiles the network sees
(:data:`~detlab.postprocess.slicing.NETWORK_KEYS`: tile size, overlap, batch size); the
network runs once per group. Within a group the merge knobs (``merge``, ``match_metric``,
``match_threshold``, ``class_agnostic``, ``full_image``, ``blend``) only re-run the merge on the
cached per-tile predictions. When ``model.head.<postprocess arg>`` keys are swept too, the raw
per-tile network outputs are cached instead and the head's post-processing re-runs as well.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import fields
from typing import Any

from ..recipe import apply_overrides
from ..registry import EVALUATORS
from ..structures import Batch, to_device
from ..engine.sliced import TileOutputs, combine, run_tiles, sliced_loader, tile_predictions
from .sweep import rebuild_head

__all__ = ["SLICING_PREFIX", "slicing_fields", "is_slicing_key", "run_sliced_sweep"]

SLICING_PREFIX = "inference.slicing."


def slicing_fields() -> tuple[str, ...]:
    """The sweepable ``inference.slicing`` knobs (the :class:`~detlab.postprocess.slicing.SlicedInference` fields)."""
    from ..postprocess.slicing import SlicedInference

    return tuple(f.name for f in fields(SlicedInference))


def is_slicing_key(key: str) -> bool:
    """Whether ``key`` is ``inference.slicing.<knob>``."""
    return key.startswith(SLICING_PREFIX) and key[len(SLICING_PREFIX):] in slicing_fields()


def _override(key: str, value: Any) -> str:
    # ``+``: the recipe may have no inference section yet (an override adds it).
    return f"+{key}={value!r}" if is_slicing_key(key) else f"{key}={value!r}"


def run_sliced_sweep(task: Any, grid: dict[str, list[Any]], data: Any, loader: Any,
                     device: Any, limit: int | None, result: Any) -> Any:
    """Fill ``result`` (a :class:`~detlab.commands.sweep.SweepResult`) with one row per
    combination of ``grid``, evaluated with sliced inference (module docstring)."""
    from ..engine.inference_model import inference_task
    from ..postprocess.slicing import SlicedInference

    model = task.model  # its head's weights rebuild swept heads
    runner = inference_task(task).model  # the network pass: what detlab eval runs
    keys = list(grid)
    head_swept = any(k.startswith("model.head.") for k in keys)
    combos = []
    for values in itertools.product(*(grid[k] for k in keys)):
        recipe = copy.deepcopy(dict(task.recipe))
        apply_overrides(recipe, [_override(k, v) for k, v in zip(keys, values)])
        settings = SlicedInference.from_recipe(recipe) or SlicedInference()
        combos.append((values, recipe, settings))
    groups: dict[Any, list[Any]] = {}
    for combo in combos:
        groups.setdefault(combo[2].network_settings(), []).append(combo)

    head_state = {k: v.cpu() for k, v in model.head.state_dict().items()}
    neck_or_backbone = model.neck if model.neck is not None else model.backbone
    inference_s = postprocess_s = 0.0
    higher = True
    for members in groups.values():
        first = members[0][2]
        full_image = any(s.full_image for _, _, s in members)
        t0 = time.perf_counter()
        cached = []
        for i, sliced in enumerate(sliced_loader(data, loader, first)):
            if limit is not None and i >= limit:
                break
            raw = run_tiles(runner, sliced, first, device, full_image=full_image)
            frames = Batch(sliced.batch.images, to_device(sliced.batch.targets, "cpu"),
                           sliced.batch.meta)
            if head_swept:  # raw outputs: the head's post-processing re-runs per combination
                cached.append((TileOutputs(frames, [(to_device(o, "cpu"), b, own, win)
                                                    for o, b, own, win in raw.chunks],
                                           to_device(raw.full, "cpu")), frames))
            else:  # per-tile predictions: only the merge re-runs
                cached.append((tile_predictions(model.head, raw), frames))
        inference_s += time.perf_counter() - t0
        t1 = time.perf_counter()
        for values, recipe, settings in members:
            head = model.head
            if head_swept:
                head = rebuild_head(recipe, neck_or_backbone, head_state)
            evaluator = EVALUATORS.build(recipe["evaluator"], key="evaluator")
            evaluator.reset()
            for item, frames in cached:
                parts, full = tile_predictions(head, item) if head_swept else item
                evaluator.update(combine(head, parts, full, frames.meta, settings), frames)
            result.append({"settings": dict(zip(keys, values)), "metrics": evaluator.compute()})
            result.primary = evaluator.primary
            higher = getattr(evaluator, "higher_is_better", True)
        postprocess_s += time.perf_counter() - t1
    result.inference_s, result.postprocess_s = inference_s, postprocess_s
    result.network_passes = len(groups)
    result.sort(key=lambda r: r["metrics"].get(result.primary, 0.0), reverse=higher)
    return result

