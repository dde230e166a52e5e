"""``detlab sweep``: post-processing and evaluator settings tried on one inference pass.

The network runs once over the evaluation split; its raw outputs are kept (on the CPU). For
every combination of the swept values, only the head's post-processing and the evaluator are
rebuilt from the recipe with those overrides and re-run on the kept outputs. A table of every
metric, sorted by the primary one, is printed (``--json`` writes the rows).

Only keys that cannot change the network's outputs may be swept:

- ``evaluator.<arg>``;
- ``model.head.postprocessor.<knob>`` (both stages) and ``model.head.postprocessor.test.<knob>``
  where ``<knob>`` is in the head's post-processor ``sweepable`` names
  (:class:`~detlab.postprocess.staged.StagedPostprocessor`); a knob the chosen settings ignore
  (its ``ignored_settings()``, e.g. ``iou_threshold`` of Gaussian Soft-NMS) is refused when it
  is ignored in every combination and flagged (``*`` and a note) when only in some;
- ``inference.slicing.<knob>`` (sliced inference, :mod:`detlab.commands.sweep_sliced`: the
  network runs once per tile size / overlap, merge knobs reuse the per-tile predictions).

Each setting costs its post-processing plus one evaluation: a COCO evaluator runs on
faster-coco-eval when it is installed (same numbers as pycocotools, tested in
tests/evaluation/test_coco_runtime.py), and a box post-processor stops at the detections
the evaluator reads (:func:`~detlab.postprocess.evaluated.evaluated_only`: same numbers,
less NMS).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from collections.abc import Iterable
from typing import Any

from .cli_args import add_trust_arguments
from .sweep_workers import available_cores, run_jobs
from ..errors import ConfigError
from ..postprocess.evaluated import evaluated_only, stage_postprocessor
from ..postprocess.staged import StagedPostprocessor
from ..recipe import apply_overrides, parse_value
from ..registry import EVALUATORS, HEADS

__all__ = [
    "parse_sweep", "split_values", "run_sweep", "sort_rows", "add_command", "SweepResult",
    "rebuild_head", "format_table", "POSTPROCESSOR_KEY", "check_keys",
]

POSTPROCESSOR_KEY = "model.head.postprocessor"


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


def _postprocessor_knob(key: str) -> str | None:
    """``<knob>`` of ``model.head.postprocessor[.test].<knob>``, else None."""
    rest = key[len(POSTPROCESSOR_KEY) + 1:].split(".") if key.startswith(
        POSTPROCESSOR_KEY + ".") else []
    if len(rest) == 1 or (len(rest) == 2 and rest[0] == "test"):
        return rest[-1]
    return None


def check_keys(grid: dict[str, list[Any]], head: Any) -> None:
    """Refuse swept keys that could change the network's outputs (ConfigError naming them)."""
    from .sweep_sliced import is_slicing_key

    slot = getattr(head, "postprocessor", None)
    staged = isinstance(slot, StagedPostprocessor)
    for key in grid:
        parts = key.split(".")
        if parts[0] == "evaluator" or is_slicing_key(key):
            continue
        if staged and key.startswith(POSTPROCESSOR_KEY + "."):
            knob = _postprocessor_knob(key)
            names = slot.sweepable
            if knob is None or knob not in names:
                hint = (" (sweep evaluates the test stage; val settings only apply inside "
                        "`detlab train`)" if parts[3:4] == ["val"] else "")
                raise ConfigError(
                    f"cannot sweep {key!r}{hint}: {type(slot.for_stage('test')).__name__} lets "
                    f"sweep vary {POSTPROCESSOR_KEY}.<knob> or {POSTPROCESSOR_KEY}.test.<knob> "
                    f"for <knob> in {', '.join(names) or 'none'}")
            continue
        allowed = f"{POSTPROCESSOR_KEY}.<knob>" if staged else (
            f"nothing of {type(head).__name__}'s (it has no postprocessor slot)")
        raise ConfigError(
            f"cannot sweep {key!r}: only evaluator.*, inference.slicing.<knob> and {allowed} "
            "reuse the network outputs; other keys need `detlab eval CKPT key=value` per value"
        )


_test_postprocessor = stage_postprocessor


def _ignored(head: Any, keys: list[str]) -> dict[str, str]:
    """Swept post-processor keys whose knob the head's test post-processor ignores → reason."""
    post = _test_postprocessor(head)
    if not callable(getattr(post, "ignored_settings", None)):
        return {}
    ignored = post.ignored_settings()
    out = {}
    for key in keys:
        parts = key.split(".")
        if parts[:2] == ["model", "head"] and len(parts) >= 4 and parts[-1] in ignored:
            out[key] = ignored[parts[-1]]
    return out


def _fast_evaluator(cfg: dict[str, Any]) -> dict[str, Any]:
    """The evaluator config with a COCO evaluator on faster-coco-eval when it is installed."""
    from ..evaluation.coco import CocoEvaluator

    kind = cfg.get("type")
    if kind not in ("CocoEvaluator", CocoEvaluator) or cfg.get("backend", "pycocotools") != (
            "pycocotools"):
        return cfg
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return cfg
    return {**cfg, "backend": "faster_coco_eval"}


class SweepResult(list):
    """Rows ``{"settings": {...}, "metrics": {...}, "ignored": {key: reason}}`` plus timing
    attributes (seconds): ``inference_s`` (network passes), ``postprocess_s`` and
    ``evaluation_s`` (all combinations together; ``postprocess_s`` includes ``decode_s``, the
    decoding all combinations share, done once)."""

    inference_s: float = 0.0
    postprocess_s: float = 0.0
    evaluation_s: float = 0.0
    decode_s: float = 0.0
    workers: int = 1  # processes the settings ran in
    serial_reason: str = ""  # why not in workers, when more were asked for
    primary: str = ""
    network_passes: int = 1  # sliced sweeps: one per distinct tile size / overlap
    images: int = 0


def _combinations(task: Any, grid: dict[str, list[Any]], features: Any,
                  head_state: dict[str, Any]) -> list[tuple[tuple, dict, Any, dict[str, str]]]:
    """``(values, recipe, head, ignored)`` per combination; refuses a key whose knob every
    combination ignores (all its rows would be the same)."""
    keys = list(grid)
    combos = []
    for values in itertools.product(*(grid[k] for k in keys)):
        recipe = copy.deepcopy(dict(task.recipe))
        apply_overrides(recipe, [f"{k}={v!r}" for k, v in zip(keys, values)])
        head = rebuild_head(recipe, features, head_state)
        combos.append((values, recipe, head, _ignored(head, keys)))
    for key in keys:
        reasons = [ignored.get(key) for *_, ignored in combos]
        if len(grid[key]) > 1 and all(reasons):
            raise ConfigError(f"cannot sweep {key!r}: {reasons[0]}, so every value gives the "
                              "same rows; sweep a knob the chosen settings use")
    return combos


def run_sweep(task: Any, grid: dict[str, list[Any]], split: str = "val",
              limit: int | None = None, workers: int = 1) -> SweepResult:
    """Run ``task``'s model once over ``split`` and evaluate every combination of ``grid``,
    in up to ``workers`` forked processes (:mod:`detlab.commands.sweep_workers`; the sliced
    sweep runs in this one).

    Returns rows sorted by the primary metric (best first).
    """
    import torch  # here, not at import: `detlab sweep --help` must not load torch

    with torch.inference_mode():
        return _run_sweep(task, grid, split, limit, workers)


def _run_sweep(task: Any, grid: dict[str, list[Any]], split: str,
               limit: int | None, workers: int) -> SweepResult:
    import torch

    from ..data.datamodule import DataModule
    from ..structures import to_device
    from ..postprocess.slicing import SlicedInference
    from .sweep_sliced import is_slicing_key, run_sliced_sweep

    model = task.model
    check_keys(grid, model.head)
    data = DataModule(task.recipe.section("data"), size_divisor=model.size_divisor)
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    from ..engine.inference_model import inference_task

    view = inference_task(task)  # the model detlab eval runs (BatchNorm folded)
    if any(is_slicing_key(k) for k in grid) or SlicedInference.from_recipe(task.recipe):
        result = run_sliced_sweep(task, grid, data, loader, device, limit, SweepResult())
        result.serial_reason = "sliced sweeps evaluate their settings in this process"
        return result

    head_state = {k: v.cpu() for k, v in model.head.state_dict().items()}
    features = model.neck if model.neck is not None else model.backbone
    combos = _combinations(task, grid, features, head_state)  # before the pass: fail early

    t0 = time.perf_counter()
    cached = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        outputs = view.model(batch.images.to(device))
        cached.append((to_device(outputs, "cpu"), batch))
    result = SweepResult()
    result.inference_s = time.perf_counter() - t0
    result.images = sum(len(batch.meta) for _, batch in cached)
    postprocess = _shared_decoding(model.head, [head for *_, head, _ in combos], cached, result)

    keys = list(grid)
    # Combinations that differ only in evaluator keys share the head's predictions: one job
    # per distinct head.
    groups: dict[str, list[int]] = {}
    for i, (_, recipe, _, _) in enumerate(combos):
        groups.setdefault(repr(recipe["model"]["head"]), []).append(i)
    jobs = list(groups.values())

    def job(j: int) -> list[tuple[int, dict[str, Any], str, bool, float, float]]:
        head = combos[jobs[j][0]][2]
        evaluators = [EVALUATORS.build(_fast_evaluator(combos[i][1]["evaluator"]),
                                       key="evaluator") for i in jobs[j]]
        t1 = time.perf_counter()
        with evaluated_only(head, evaluators):  # a sweep evaluates, never writes, them
            predictions = [postprocess(head, outputs, batch) for outputs, batch in cached]
        shared = time.perf_counter() - t1
        rows = []
        for i, evaluator in zip(jobs[j], evaluators):
            evaluator.reset()
            t1 = time.perf_counter()
            for preds, (_, batch) in zip(predictions, cached):
                evaluator.update(preds, batch)
            t2 = time.perf_counter()
            metrics = evaluator.compute()
            rows.append((i, metrics, evaluator.primary,
                         getattr(evaluator, "higher_is_better", True), shared + t2 - t1,
                         time.perf_counter() - t2))
            shared = 0.0
        return rows

    t0 = time.perf_counter()
    done, result.workers = run_jobs(job, len(jobs), workers)
    wall = time.perf_counter() - t0
    if result.workers == 1:
        result.serial_reason = ("the settings share one post-processing (one job)"
                                if len(jobs) == 1 else "worker processes need Linux fork and "
                                "no CUDA in this process")
    rows = sorted(row for group in done for row in group)
    post, evaluation = sum(r[4] for r in rows), sum(r[5] for r in rows)
    # workers overlap: split the wall time of all settings in the measured proportion
    scale = wall / max(post + evaluation, 1e-12) if result.workers > 1 else 1.0
    result.postprocess_s += post * scale
    result.evaluation_s += evaluation * scale
    higher = True
    for i, metrics, primary, higher, _, _ in rows:
        values, _, _, ignored = combos[i]
        result.append({"settings": dict(zip(keys, values)), "metrics": metrics,
                       "ignored": ignored})
        result.primary = primary
    sort_rows(result, result.primary, higher)
    return result


def _shared_decoding(head: Any, heads: list[Any], cached: list[tuple[Any, Any]],
                     result: SweepResult) -> Any:
    """Decode the cached raw outputs once for all combinations when the heads split their
    post-processing (``decode_outputs`` then ``postprocess_decoded``, e.g. YOLOHead's DFL
    softmax and box decoding): a sweep varies only post-processor knobs, which decoding does
    not read. ``cached`` then holds the decoded outputs (smaller than the raw ones) and the
    time goes to ``result.decode_s`` and ``postprocess_s``, once. Returns the
    ``(head, outputs, batch) -> predictions`` function the combinations run."""
    def raw(h: Any, outputs: Any, batch: Any) -> Any:
        return h.postprocess(outputs, batch, stage="test")

    if not all(callable(getattr(h, "decode_outputs", None)) and callable(
            getattr(h, "postprocess_decoded", None)) for h in [head, *heads]):
        return raw
    t0 = time.perf_counter()
    cached[:] = [(head.decode_outputs(outputs), batch) for outputs, batch in cached]
    result.decode_s = time.perf_counter() - t0
    result.postprocess_s += result.decode_s

    def decoded(h: Any, outputs: Any, batch: Any) -> Any:
        return h.postprocess_decoded(*outputs, batch, stage="test")

    return decoded


def sort_rows(rows: list[dict[str, Any]], primary: str, higher_is_better: bool = True) -> None:
    """Sort sweep rows in place, best ``metrics[primary]`` first; rows whose primary metric
    is undefined (NaN, e.g. COCO AP without ground truth) or missing go last."""

    def key(row: dict[str, Any]) -> tuple[bool, float]:
        value = float(row["metrics"].get(primary, float("nan")))
        if value != value:
            return (not higher_is_better, 0.0)
        return (higher_is_better, value)

    rows.sort(key=key, reverse=higher_is_better)


def _metric_columns(result: SweepResult) -> tuple[list[str], list[str]]:
    """(every scalar metric, primary first; per-class ``<metric>/<name>`` metrics)."""
    seen: dict[str, None] = {}
    for row in result:
        seen.update(dict.fromkeys(row["metrics"]))
    names = [result.primary] + [k for k in seen if k != result.primary]
    return [k for k in names if "/" not in k], [k for k in names if "/" in k]


def format_table(result: SweepResult) -> str:
    """The sweep as aligned text tables, best row first: every scalar metric, then the
    per-class metrics (if any). A ``*`` marks a value the row's settings ignore."""
    if not result:
        return "(no combinations)"
    keys = list(result[0]["settings"])
    scalar, per_class = _metric_columns(result)
    reasons: dict[str, str] = {}
    settings = []
    for r in result:
        cells = []
        for k in keys:
            mark = "*" if k in r.get("ignored", {}) else ""
            cells.append(repr(r["settings"][k]) + mark)
            if mark:
                reasons[k] = r["ignored"][k]
        settings.append(cells)
    tables = [_table(keys, settings, result, scalar)]
    if per_class:
        tables.append(_table(keys, settings, result, per_class))
    notes = [f"* {k}: ignored ({why})" for k, why in reasons.items()]
    return "\n\n".join(tables) + "".join("\n" + note for note in notes)


def _table(keys: list[str], settings: list[list[str]], result: SweepResult,
           metric_keys: list[str]) -> str:
    header = keys + metric_keys
    rows = [cells + [_cell(r["metrics"].get(m, float("nan"))) for m in metric_keys]
            for cells, r in zip(settings, result)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    value = float(value)
    return "n/a" if value != value else f"{value:.4f}"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run ``detlab sweep``."""
    from ..engine.callbacks import format_metrics
    from ..engine.checkpoint import load_task

    from ..postprocess.slicing import inference_section
    from .ensemble_args import leading_checkpoints, tta_from_args
    from .sweep_ensemble import is_ensemble_key, run_ensemble_sweep

    more, items = leading_checkpoints(args.items)  # `sweep A.ckpt B.ckpt ensemble.x=...`
    grid = parse_sweep(items)
    paths = [args.checkpoint, *more]
    tasks = [load_task(p, trust=args.trust_recipe, recipe=args.recipe) for p in paths]
    tta = tta_from_args(args)
    recipe_tta = inference_section(tasks[0].recipe).get("tta")
    if len(tasks) > 1 or tta or recipe_tta or any(is_ensemble_key(k) for k in grid):
        result = run_ensemble_sweep(tasks, paths, grid, split=args.split, limit=args.limit,
                                    tta=tta)
    else:
        result = run_sweep(tasks[0], grid, split=args.split, limit=args.limit,
                           workers=args.workers or available_cores())
    print(format_table(result))
    if args.workers > 1 and result.workers == 1:
        reason = result.serial_reason or "ensemble and TTA sweeps evaluate in this process"
        print(f"note: --workers {args.workers} not used: {reason}")
    n = len(result)
    passes = result.network_passes
    post, evaluation = result.postprocess_s / max(n, 1), result.evaluation_s / max(n, 1)
    per_combo = post + evaluation
    once = "once" if passes == 1 else (
        f"{passes}x (one per model)" if len(tasks) > 1
        else f"{passes}x (one per tile size/overlap)")
    share = per_combo / max(result.inference_s / passes, 1e-9)
    print(
        f"\n{n} combination(s) on {result.images or '?'} images: inference {once} "
        f"{result.inference_s:.2f} s; per combination post-processing {post:.2f} s + "
        f"evaluation {evaluation:.2f} s = {per_combo:.2f} s ({100 * share:.0f} % of one "
        "inference pass" + (f"; settings in {result.workers} processes)"
                            if result.workers > 1 else ")")
    )
    best = result[0]
    print("best: " + "  ".join(f"{k}={v!r}" for k, v in best["settings"].items())
          + "  →  " + format_metrics(best["metrics"], result.primary))
    if args.json:
        rows = [{"settings": r["settings"], "metrics": r["metrics"],
                 "ignored": r.get("ignored", {})} for r in result]
        with open(args.json, "w") as f:
            json.dump({"primary": result.primary, "inference_s": result.inference_s,
                       "postprocess_s": result.postprocess_s,
                       "evaluation_s": result.evaluation_s, "decode_s": result.decode_s,
                       "workers": result.workers, "rows": rows}, f, indent=1,
                      default=str)
    return 0


def add_command(sub: Any) -> None:
    """Add ``detlab sweep`` to the CLI."""
    p = sub.add_parser(
        "sweep", help="try post-processing settings on one inference pass",
        description="Run CKPT once over the validation set, then re-run post-processing and "
        "evaluation for every combination of key=v1,v2,… and print a table of every metric "
        "sorted by the primary one. Example: detlab sweep CKPT "
        "model.head.postprocessor.test.iou_threshold=0.5,0.6,0.7",
    )
    p.add_argument("checkpoint")
    p.add_argument("items", nargs="+", metavar="KEY=V1,V2,…",
                   help="more *.ckpt first (an ensemble: sweep ensemble.<knob>=…), then the "
                   "key=v1,v2,… items")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--limit", type=int, default=None, help="use only the first N batches")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write every row (settings, all metrics, ignored knobs) as JSON")
    p.add_argument("--workers", type=_workers, default=0, metavar="N",
                   help="processes that evaluate the settings (forked, Linux only; default 0: "
                   "one per available core). The network pass is not affected")
    add_trust_arguments(p)
    p.add_argument("--tta", action="store_true", help="test-time augmentation (as in eval)")
    p.add_argument("--tta-flips", default=None, metavar="F1,F2")
    p.add_argument("--tta-scales", default=None, metavar="S1,S2")
    p.set_defaults(func=cmd_sweep)


def _workers(raw: str) -> int:
    """``--workers`` value: an int >= 0 (argparse turns the error into a usage line)."""
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {raw!r}")
    return value


def rebuild_head(recipe: dict[str, Any], features: Any, head_state: dict[str, Any]) -> Any:
    """The head of ``recipe["model"]["head"]`` (with swept post-processing keys) built on
    ``features`` (the neck, else the backbone: its ``channels``/``strides``), loaded with the
    trained ``head_state`` and in eval mode."""
    head = HEADS.build(recipe["model"]["head"], key="model.head",
                       in_channels=list(features.channels), strides=list(features.strides))
    head.load_state_dict(head_state)
    head.eval()
    return head
