"""``detlab export CKPT --format onnx --out F``: the deployable model, checked against the
checkpoint (:mod:`detlab.export`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_command", "cmd_export"]


def cmd_export(args: argparse.Namespace) -> int:
    """Export, print the parity report; exit 1 when parity fails (the file is still written,
    for inspection)."""
    from ..export.checkpoint import export_checkpoint

    path, report = export_checkpoint(
        args.checkpoint, args.out, fmt=args.format, dynamic_batch=args.dynamic_batch,
        with_postprocess=args.with_postprocess, opset=args.opset,
        img_size=tuple(args.img_size) if args.img_size else None, overrides=args.overrides,
        trust=args.trust_recipe, recipe=args.recipe)
    print(f"wrote {path}")
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def add_command(subparsers: Any) -> None:
    """Add ``detlab export`` to the CLI's subparsers."""
    from ..export.onnx import DEFAULT_OPSET
    from .cli_args import add_trust_arguments, allow_intermixed

    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX and check it against onnxruntime",
        description="Export a checkpoint's network (and with --with-postprocess its test-stage "
        "post-processing) to ONNX, with the input geometry, normalization, class names and "
        "head family stored as metadata, then compare onnxruntime's outputs with the "
        "checkpoint's on a batch of the recipe's val split (exit 1 if they differ). Needs "
        "pip install 'detlab[export]'.")
    p.add_argument("checkpoint", help="a .ckpt written by detlab train")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="recipe overrides (e.g. model.head.postprocessor.test.score_threshold"
                   "=0.25 for the exported post-processing)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"],
                   help="export format: onnx (default), or torchscript (a traced module; "
                   "detlab predict runs only .onnx files)")
    p.add_argument("--out", required=True, metavar="F", help="the file to write (.onnx, .pt)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch size (not for Faster R-CNN)")
    p.add_argument("--with-postprocess", action="store_true",
                   help="include decode + NMS (YOLO), the full two-stage graph (Faster R-CNN), "
                   "the probability map (DB) or sigmoid + threshold (segmentation)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 16)")
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="fixed input size (default: the val batch's padded size)")
    add_trust_arguments(p)
    allow_intermixed(p)  # overrides may follow the options
    p.set_defaults(func=cmd_export)
