"""The ``detlab`` command line: train, eval, predict, show, list.

Errors a user can cause (recipe, overrides, paths, checkpoints) print one ``error:`` line and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .errors import ConfigError, DetlabError

__all__ = ["main", "build_parser", "command_names"]

EXIT_USER_ERROR = 2


def _split_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from input paths (a path that exists wins)."""
    inputs, overrides = [], []
    for item in items:
        if "=" in item and not Path(item).exists():
            overrides.append(item)
        else:
            inputs.append(item)
    return inputs, overrides


# -- commands -----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .engine.trainer import fit
    from .recipe import load

    resume = args.resume
    if resume not in (None, "latest") and "=" in resume and not Path(resume).exists():
        # `--resume train.max_epochs=3`: the override is not a checkpoint path
        args.overrides, resume = [*args.overrides, resume], "latest"
    recipe = load(args.recipe, args.overrides)
    run_dir, task, trainer = fit(recipe, resume=resume, work_dir=args.work_dir)
    if trainer.is_global_zero:
        ckpt_cb = trainer.checkpoint_callback
        print(f"\nrun directory: {run_dir}")
        if ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
            score = ckpt_cb.best_model_score
            primary = task.evaluator.primary if task.evaluator else "loss"
            print(f"best checkpoint: {ckpt_cb.best_model_path} "
                  f"({primary}={float(score):.4f})" if score is not None else "")
        if task.last_metrics:
            from .engine.callbacks import format_metrics

            primary = task.evaluator.primary if task.evaluator else None
            print("final validation: " + format_metrics(task.last_metrics, primary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.callbacks import format_metrics
    from .engine.inference import evaluate
    from .engine.trainer import load_task

    from .commands.ensemble_args import leading_checkpoints, parse_floats, tta_from_args

    more, args.overrides = leading_checkpoints(args.overrides)  # `eval A.ckpt B.ckpt ...`
    paths = [args.checkpoint, *more]
    tasks = [load_task(p, args.overrides, trust=args.trust_recipe, recipe=args.recipe)
             for p in paths]
    task = tasks[0]
    weights, tta = parse_floats(args.weights, "--weights"), tta_from_args(args)
    if len(tasks) > 1 or tta is not None or weights is not None or args.ensemble is not None:
        from .engine.ensemble import evaluate_members, resolve_settings

        settings, tta_settings = resolve_settings(task.recipe, weights=weights,
                                                  method=args.ensemble, tta=tta)
        metrics = evaluate_members(tasks, paths, args.split, settings, tta_settings)
    else:
        metrics = evaluate(task, args.split)
    print(format_metrics(metrics, task.evaluator.primary))
    report = getattr(task.evaluator, "format_histogram", None)
    if callable(report) and not args.quiet:
        print(report())
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def _category_ids(dataset: Any) -> list[int] | None:
    """The COCO category id of each label (``CocoDetection.category_ids``), or None."""
    for _ in range(8):
        if dataset is None:
            return None
        ids = getattr(dataset, "category_ids", None)
        if ids is not None:
            return [int(v) for v in ids]
        dataset = getattr(dataset, "dataset", None)
    return None


def _val_category_ids(data: Any) -> list[int] | None:
    """data.val's COCO category ids for predictions on files (None: label + 1, said so when
    data.val cannot be read)."""
    if data.cfg.get("val") is None:
        return None
    try:
        return _category_ids(data.dataset("val"))
    except DetlabError as err:
        import logging

        logging.getLogger("detlab.predict").warning(
            "data.val cannot be read (%s): results.json uses category_id = label + 1 "
            "(see categories.json)", err)
        return None


def cmd_predict(args: argparse.Namespace) -> int:
    if str(args.checkpoint).endswith(".onnx"):  # an exported model: onnxruntime
        from .export.runtime import predict_command
        return predict_command(args)
    import torch

    from .commands.predict_volume import check_not_dicom_file, is_volume_path, predict_volumes
    from .engine.inference import data_module, default_device, file_loader, is_box_head, predictions
    from .engine.outputs import categories
    from .engine.trainer import load_task

    from .commands.ensemble_args import leading_checkpoints, parse_floats, tta_from_args

    more, items = leading_checkpoints(args.items)  # `predict A.ckpt B.ckpt ... IMAGES`
    inputs, overrides = _split_inputs(items)
    if not inputs and args.split is None:
        raise ConfigError("detlab predict: give at least one input file or folder, or --split")
    for p in inputs:
        check_not_dicom_file(p)
    paths = [args.checkpoint, *more]
    tasks = [load_task(p, overrides, trust=args.trust_recipe, recipe=args.recipe)
             for p in paths]
    task = tasks[0]
    weights, tta = parse_floats(args.weights, "--weights"), tta_from_args(args)
    members = None
    if len(tasks) > 1 or tta is not None or weights is not None or args.ensemble is not None:
        from .engine.ensemble import resolve_settings

        members = resolve_settings(task.recipe, weights=weights, method=args.ensemble, tta=tta)
    if args.save_probs and is_box_head(task):
        raise ConfigError(
            f"--save-probs: this checkpoint's head ({type(task.model.head).__name__}) predicts "
            "boxes, which have no probability map to save; drop --save-probs (the scores are "
            "in the JSON files)")
    device = default_device()
    for t in tasks:
        t.to(device)
    out_dir = Path(args.out)
    volumes = [p for p in inputs if is_volume_path(p)]  # .nii/.nii.gz files, DICOM folders
    if volumes and len(tasks) > 1:
        raise ConfigError("detlab predict: CT volumes are predicted by one checkpoint; "
                          "an ensemble takes image files and folders")
    if volumes:
        with torch.inference_mode():
            predict_volumes(task, volumes, out_dir)
        print(f"wrote predictions for {len(volumes)} volume(s) to {out_dir}")
        inputs = [p for p in inputs if p not in volumes]
        if not inputs and args.split is None:
            return 0
    datas = [data_module(t) for t in tasks]
    data = datas[0]
    loaders = []
    if inputs:
        loaders.append(([file_loader(d, inputs) for d in datas], _val_category_ids(data)))
    if args.split is not None:
        loaders.append(([d.val_dataloader() if args.split == "val" else d.test_dataloader()
                         for d in datas], _category_ids(data.dataset(args.split))))
    names = (task.recipe.get("evaluator") or {}).get("class_names")
    count = 0
    coco: list[dict[str, Any]] = []
    cat_ids: list[int] | None = None
    for member_loaders, ids in loaders:
        cat_ids = ids if ids is not None else cat_ids
        if members is None:
            stream = predictions(task, member_loaders[0], device, data=data)
        else:
            from .engine.ensemble import ensemble_predictions

            stream = ensemble_predictions(tasks, member_loaders, device, paths, *members)
        with torch.inference_mode():
            for preds, batch in stream:
                for pred, meta in zip(preds, batch.meta):
                    coco.extend(_write_one(args, task, pred, meta, names, ids))
                    count += 1
    if coco or is_box_head(task):
        (out_dir / "results.json").write_text(json.dumps(coco))
        num_classes = int(getattr(task.model.head, "num_classes", 0) or 0)
        (out_dir / "categories.json").write_text(
            json.dumps(categories(num_classes, names, cat_ids), indent=1))
    print(f"wrote predictions for {count} image(s) to {out_dir}")
    return 0


def _write_one(args: argparse.Namespace, task: Any, pred: Any, meta: dict[str, Any],
               names: list[str] | None, ids: list[int] | None) -> list[dict[str, Any]]:
    """Write one image's files for ``detlab predict``; returns its COCO result rows."""
    from .engine.outputs import coco_results, write_prediction, write_yolo_txt

    head = type(task.model.head).__name__
    out_dir = Path(args.out)
    if pred.boxes is not None and args.save_probs:
        raise ConfigError(f"--save-probs: this checkpoint's head ({head}) predicts boxes, "
                          "which have no probability map to save; drop --save-probs")
    if args.yolo_txt and pred.boxes is None:
        raise ConfigError(f"--yolo-txt writes boxes, but this checkpoint's head ({head}) "
                          "predicts none")
    write_prediction(pred, meta, out_dir, names, save_probs=args.save_probs,
                     overlay_threshold=args.overlay_threshold)
    if args.yolo_txt:
        write_yolo_txt(pred, meta, out_dir)
    return coco_results(pred, meta, names, ids)


def cmd_show(args: argparse.Namespace) -> int:
    from .recipe import load

    recipe = load(args.recipe, args.overrides)
    print(recipe.to_json())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import REGISTRIES, closest, discover

    discover()
    kinds = list(REGISTRIES)
    if args.kind:
        if args.kind not in REGISTRIES:
            hint = closest(args.kind, kinds, 1)
            raise ConfigError(
                f"unknown kind {args.kind!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (kinds: {', '.join(kinds)})"
            )
        kinds = [args.kind]
    for kind in kinds:
        rows = REGISTRIES[kind].describe()
        print(f"{kind}:")
        if not rows:
            print("  (none)")
        width = max((len(n) for n, _ in rows), default=0)
        for name, doc in rows:
            print(f"  {name.ljust(width)}  {doc}")
    return 0


# Modules that add commands of their own: each defines ``add_command(subparsers)`` which adds a
# subparser whose default ``func(args) -> int`` runs the command. One line per module.
COMMAND_MODULES: tuple[str, ...] = (
    "detlab.commands.sweep",
    "detlab.commands.show_data",
    "detlab.commands.anchors_cmd",
    "detlab.commands.check_data",
    "detlab.commands.analyze",
    "detlab.commands.tune",
    "detlab.commands.lr_find",
    "detlab.commands.export",
)


def _command_stubs(module_name: str) -> list[tuple[str, str]]:
    """``(name, help)`` of each subcommand ``module_name``'s ``add_command`` adds, read from
    its source with ``ast`` (the module is not imported: importing the command modules
    imports torch, which ``detlab --help`` must not wait for). Only literal
    ``add_parser("name", help="...")`` calls count; ``tests/test_cli_startup.py`` checks
    that they match what the module really registers."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"command module {module_name!r} not found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_parser" and node.args
                and isinstance(node.args[0], ast.Constant)):
            helps = [k.value for k in node.keywords if k.arg == "help"]
            text = helps[0].value if helps and isinstance(helps[0], ast.Constant) else None
            out.append((str(node.args[0].value), text))
    return out


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommand names of a parser from :func:`build_parser`."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


# -- parser -------------------------------------------------------------------------------------
def build_parser(full: bool | str = True) -> argparse.ArgumentParser:
    """The argument parser of the ``detlab`` command (also used to generate the CLI docs).

    Args:
        full: ``True``: every subcommand with all its arguments (imports every command module);
            a command name: only that command's module is imported, the others are listed
            with their help line (what :func:`main` builds, so ``detlab X --help`` imports no
            other command); ``False``: no command module imported (``detlab --help``).
    """
    from . import __version__
    from .commands.cli_args import add_trust_arguments, allow_intermixed
    from .commands.ensemble_args import add_ensemble_arguments

    parser = argparse.ArgumentParser(
        prog="detlab",
        description="Train, evaluate and run detlab models from Python recipe files.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    parser.add_argument("--version", action="version", version=f"detlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a recipe",
                       description="Train RECIPE; overrides are dotted key=value pairs.")
    p.add_argument("recipe", help="recipe file, e.g. recipes/fracture_unet.py")
    p.add_argument("overrides", nargs="*", help="e.g. train.max_epochs=3 data.batch_size=4")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="resume the latest run of this recipe, or from CKPT")
    p.add_argument("--work-dir", default=None, help="root of run directories (default: runs/)")
    allow_intermixed(p)  # overrides may follow the options
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its recipe's data",
                       description="Evaluate CKPT (the checkpoint carries its recipe); "
                       "several leading *.ckpt: their ensemble, on the first one's data.")
    p.add_argument("checkpoint", help="a .ckpt written by detlab train")
    p.add_argument("overrides", nargs="*", help="more *.ckpt (an ensemble), then overrides "
                   "for every checkpoint, e.g. model.head.threshold=0.3")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="data split to evaluate (data.test falls back to data.val)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--quiet", action="store_true", help="metrics line only")
    add_trust_arguments(p)
    add_ensemble_arguments(p)
    allow_intermixed(p)  # overrides may follow the options
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="run a checkpoint on images or CT volumes",
                       description="Predict on INPUT files/folders (images, or CT volumes: "
                       ".nii/.nii.gz files and DICOM series folders); write results to --out.")
    p.add_argument("checkpoint", help="a .ckpt written by detlab train")
    p.add_argument("items", nargs="*", metavar="INPUT", help="more *.ckpt first (an "
                   "ensemble), then input files or folders (key=value items are overrides); "
                   "image files get each model's data.val preprocessing")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=("val", "test"), default=None,
                   help="also predict a split of the recipe (COCO data: results.json with the "
                   "dataset's own image and category ids)")
    p.add_argument("--overlay-threshold", type=float, default=0.25, metavar="SCORE",
                   help="boxes drawn on the overlays score at least this (the JSON files "
                   "keep every box; default 0.25)")
    p.add_argument("--yolo-txt", action="store_true",
                   help="also write labels/<stem>.txt: 'class cx cy w h score', normalized")
    p.add_argument("--save-probs", action="store_true", help="also save probability maps "
                   "(segmentation: <stem>_probs.npy; text: the DB map; not for box heads)")
    add_trust_arguments(p)
    add_ensemble_arguments(p)
    allow_intermixed(p)  # overrides may follow the options
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("show", help="print the resolved recipe",
                       description="Print RECIPE after overrides, as JSON.")
    p.add_argument("recipe", help="recipe file")
    p.add_argument("overrides", nargs="*", help="e.g. data.batch_size=4")
    allow_intermixed(p)  # overrides may follow the options
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("list", help="list registered components",
                       description="List registered components with their first docstring line.")
    p.add_argument("kind", nargs="?", default=None,
                   help="heads, losses, backbones, … (default: all)")
    p.set_defaults(func=cmd_list)

    import importlib

    for module_name in COMMAND_MODULES:
        stubs = _command_stubs(module_name)
        if full is True or any(name == full for name, _ in stubs):
            importlib.import_module(module_name).add_command(sub)
        else:  # listed with its help; its arguments are added when it is the one asked for
            for name, text in stubs:
                sub.add_parser(name, help=text, add_help=False)
    return parser


def _requested_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first item that is not a top-level option)."""
    for item in argv:
        if item == "--":
            return None
        if not item.startswith("-"):
            return item
    return None


def _setup_logging() -> None:
    """Show detlab's own warnings (bad cases skipped, a collapsed model) as
    ``WARNING detlab.diagnostics: …`` on stderr, unless the application configured logging."""
    import logging

    logger = logging.getLogger("detlab")
    if logger.handlers or logging.getLogger().hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``detlab`` console script; returns the exit status."""
    _setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = _requested_command(argv)
    parser = build_parser(full=requested or False)
    names = command_names(parser)
    if requested is not None and requested not in names:
        from .registry import closest

        hint = closest(requested, names, 1)
        parser.error(f"unknown command {requested!r}"
                     + (f"; did you mean {hint[0]!r}?" if hint else "")
                     + f" (commands: {', '.join(names)})")
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("DETLAB_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except DetlabError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `detlab show … | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
