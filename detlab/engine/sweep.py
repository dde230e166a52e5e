"""``detlab sweep``: post-processing and evaluator settings tried on one inference pass.

The network runs once over the evaluation split; its raw outputs are kept (on the CPU). For
every combination of the swept values, only the head's post-processing and the evaluator are
rebuilt from the recipe with those overrides and re-run on the kept outputs. A table sorted by
the primary metric is printed.

Only keys that cannot change the network's outputs may be swept: ``evaluator.…`` and
``model.head.<arg>…`` where ``<arg>`` is listed in the head's ``postprocess_args``
(e.g. ``threshold`` for the Attention U-Net, ``postprocess`` for the DB head), and
``inference.slicing.<knob>`` (sliced inference, :mod:`detlab.engine.sweep_sliced`: the network
runs once per tile size / overlap, merge knobs reuse the per-tile predictions).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import ConfigError
from ..recipe import apply_overrides, parse_value
from ..registry import EVALUATORS, HEADS
from ..structures import to_device
from .callbacks import format_metrics
from .checkpoint import add_trust_arguments

__all__ = [
    "parse_sweep", "split_values", "run_sweep", "sort_rows", "add_command", "SweepResult",
    "rebuild_head",
]


def split_values(raw: str) -> list[str]:
    """Split ``"1,2,[3, 4]"`` at top-level commas: ``["1", "2", "[3, 4]"]``."""
    parts, depth, current = [], 0, []
    for ch in raw:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_sweep(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["a.b=1,2", "c=x"]`` → ``{"a.b": [1, 2], "c": ["x"]}`` (values typed like overrides)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"sweep item {item!r} is not of the form key=v1,v2,…")
        key, raw = item.split("=", 1)
        values = split_values(raw)
        if not values:
            raise ConfigError(f"sweep item {item!r} has no values")
        grid[key.strip()] = [parse_value(v) for v in values]
    if not grid:
        raise ConfigError("detlab sweep: give at least one key=v1,v2,… item")
    return grid


def _check_keys(grid: dict[str, list[Any]], head: torch.nn.Module) -> None:
    from .sweep_sliced import is_slicing_key

    allowed = tuple(getattr(head, "postprocess_args", ()))
    for key in grid:
        parts = key.split(".")
        if parts[0] == "evaluator" or is_slicing_key(key):
            continue
        if parts[:2] == ["model", "head"] and len(parts) >= 3 and parts[2] in allowed:
            continue
        raise ConfigError(
            f"cannot sweep {key!r}: only evaluator.*, inference.slicing.<knob> and "
            f"model.head.<arg>.* for post-processing arguments of {type(head).__name__} "
            f"({', '.join(allowed) or 'none'}) reuse the network outputs; other keys need "
            "`detlab eval CKPT key=value` per value"
        )


class SweepResult(list):
    """Rows ``{"settings": {...}, "metrics": {...}}`` plus timing attributes (seconds)."""

    inference_s: float = 0.0
    postprocess_s: float = 0.0
    primary: str = ""
    network_passes: int = 1  # sliced sweeps: one per distinct tile size / overlap


@torch.inference_mode()
def run_sweep(task: Any, grid: dict[str, list[Any]], split: str = "val",
              limit: int | None = None) -> SweepResult:
    """Run ``task``'s model once over ``split`` and evaluate every combination of ``grid``.

    Returns rows sorted by the primary metric (best first).
    """
    from ..data.datamodule import DataModule

    model = task.model
    _check_keys(grid, model.head)
    data = DataModule(task.recipe.section("data"), size_divisor=model.size_divisor)
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    from ..postprocess.slicing import SlicedInference
    from .sweep_sliced import is_slicing_key, run_sliced_sweep

    if any(is_slicing_key(k) for k in grid) or SlicedInference.from_recipe(task.recipe):
        return run_sliced_sweep(task, grid, data, loader, device, limit, SweepResult())

    t0 = time.perf_counter()
    cached = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        outputs = model(batch.images.to(device))
        cached.append((to_device(outputs, "cpu"), batch))
    inference_s = time.perf_counter() - t0

    head_state = {k: v.cpu() for k, v in model.head.state_dict().items()}
    neck_or_backbone = model.neck if model.neck is not None else model.backbone
    result = SweepResult()
    keys = list(grid)
    higher = True
    t1 = time.perf_counter()
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = [f"{k}={v!r}" for k, v in zip(keys, values)]
        recipe = copy.deepcopy(dict(task.recipe))
        apply_overrides(recipe, overrides)
        head = rebuild_head(recipe, neck_or_backbone, head_state)
        evaluator = EVALUATORS.build(recipe["evaluator"], key="evaluator")
        evaluator.reset()
        for outputs, batch in cached:
            evaluator.update(head.postprocess(outputs, batch, stage="test"), batch)
        result.append({"settings": dict(zip(keys, values)), "metrics": evaluator.compute()})
        result.primary = evaluator.primary
        higher = getattr(evaluator, "higher_is_better", True)
    result.postprocess_s = time.perf_counter() - t1
    result.inference_s = inference_s
    sort_rows(result, result.primary, higher)
    return result


def sort_rows(rows: list[dict[str, Any]], primary: str, higher_is_better: bool = True) -> None:
    """Sort sweep rows in place, best ``metrics[primary]`` first; rows whose primary metric
    is undefined (NaN, e.g. COCO AP without ground truth) or missing go last."""

    def key(row: dict[str, Any]) -> tuple[bool, float]:
        value = float(row["metrics"].get(primary, float("nan")))
        if value != value:
            return (not higher_is_better, 0.0)
        return (higher_is_better, value)

    rows.sort(key=key, reverse=higher_is_better)


def format_table(result: SweepResult) -> str:
    """The sweep as an aligned text table, best row first."""
    if not result:
        return "(no combinations)"
    keys = list(result[0]["settings"])
    metric_keys = [result.primary] + [
        k for k in result[0]["metrics"] if k != result.primary and "/" not in k
    ][:5]
    header = keys + metric_keys
    rows = [
        [repr(r["settings"][k]) for k in keys]
        + [_cell(r["metrics"].get(m, float("nan"))) for m in metric_keys]
        for r in result
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    value = float(value)
    return "n/a" if value != value else f"{value:.4f}"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run ``detlab sweep``."""
    from .checkpoint import load_task

    grid = parse_sweep(args.items)
    task = load_task(args.checkpoint, trust=args.trust_recipe, recipe=args.recipe)
    result = run_sweep(task, grid, split=args.split, limit=args.limit)
    print(format_table(result))
    n = len(result)
    per_combo = result.postprocess_s / max(n, 1)
    passes = result.network_passes
    naive = n * (result.inference_s / passes + per_combo)
    once = "once" if passes == 1 else f"{passes}x (one per tile size/overlap)"
    print(
        f"\n{n} combination(s): inference {once} {result.inference_s:.2f} s, post-processing + "
        f"evaluation {per_combo:.2f} s each; re-running inference per combination would take "
        f"~{naive:.1f} s ({naive / max(result.inference_s + result.postprocess_s, 1e-9):.1f}x)"
    )
    best = result[0]
    print("best: " + "  ".join(f"{k}={v!r}" for k, v in best["settings"].items())
          + "  →  " + format_metrics(best["metrics"], result.primary))
    return 0


def add_command(sub: Any) -> None:
    """Add ``detlab sweep`` to the CLI."""
    p = sub.add_parser(
        "sweep", help="try post-processing settings on one inference pass",
        description="Run CKPT once over the validation set, then re-run post-processing and "
        "evaluation for every combination of key=v1,v2,… and print a table sorted by the "
        "primary metric. Example: detlab sweep CKPT evaluator.threshold=0.1,0.3,0.5",
    )
    p.add_argument("checkpoint")
    p.add_argument("items", nargs="+", metavar="KEY=V1,V2,…")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--limit", type=int, default=None, help="use only the first N batches")
    add_trust_arguments(p)
    p.set_defaults(func=cmd_sweep)


def rebuild_head(recipe: dict[str, Any], features: Any, head_state: dict[str, Any]) -> Any:
    """The head of ``recipe["model"]["head"]`` (with swept post-processing keys) built on
    ``features`` (the neck, else the backbone: its ``channels``/``strides``), loaded with the
    trained ``head_state`` and in eval mode."""
    head = HEADS.build(recipe["model"]["head"], key="model.head",
                       in_channels=list(features.channels), strides=list(features.strides))
    head.load_state_dict(head_state)
    head.eval()
    return head
