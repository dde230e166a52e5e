"""Command-line pieces of ensembles and TTA for ``detlab eval`` / ``predict`` / ``sweep``:
``A.ckpt B.ckpt ... [--weights 2,1] [--ensemble wbf|nms|soft_nms] [--tta]`` (argparse only, no
torch import; the merging is :mod:`detlab.engine.ensemble`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError

__all__ = ["add_ensemble_arguments", "leading_checkpoints", "parse_floats", "tta_from_args"]

CHECKPOINT_SUFFIX = ".ckpt"


def add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights``, ``--ensemble``, ``--tta``, ``--tta-flips`` and ``--tta-scales``."""
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="one weight per checkpoint of an ensemble (default 1 each)")
    parser.add_argument("--ensemble", default=None, choices=("wbf", "nms", "soft_nms"),
                        help="how box heads merge the members' detections (default: the "
                        "recipe's inference.ensemble.method, else wbf); text and segmentation "
                        "heads average probability maps")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: flips none,h at scale 1.0 unless "
                        "--tta-flips / --tta-scales say otherwise (or the recipe's "
                        "inference.tta)")
    parser.add_argument("--tta-flips", default=None, metavar="F1,F2",
                        help="TTA flips among none,h,v (implies --tta)")
    parser.add_argument("--tta-scales", default=None, metavar="S1,S2",
                        help="TTA input scales, e.g. 0.83,1,1.25 (implies --tta)")


def leading_checkpoints(items: list[str]) -> tuple[list[str], list[str]]:
    """Split positional ``items`` into the leading ``*.ckpt`` paths (more ensemble members)
    and the rest (overrides, inputs): every leading item ending in ``.ckpt`` is a model, the
    first one that does not ends the models."""
    models = []
    for i, item in enumerate(items):
        if item.endswith(CHECKPOINT_SUFFIX) and "=" not in item:
            models.append(item)
        else:
            return models, items[i:]
    return models, []


def parse_floats(text: str | None, option: str) -> list[float] | None:
    """``"2,1,1"`` -> ``[2.0, 1.0, 1.0]`` (``None`` stays ``None``).

    Raises:
        ConfigError: an item that is not a number.
    """
    if text is None:
        return None
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers, e.g. 2,1")


def tta_from_args(args: Any) -> dict[str, Any] | None:
    """``--tta`` / ``--tta-flips`` / ``--tta-scales`` as an ``inference.tta`` dict, or
    ``None`` when none was given (the recipe's ``inference.tta`` then applies)."""
    flips = getattr(args, "tta_flips", None)
    scales = parse_floats(getattr(args, "tta_scales", None), "--tta-scales")
    if not (getattr(args, "tta", False) or flips or scales):
        return None
    return {"flips": tuple(flips.split(",")) if flips else ("none", "h"),
            "scales": tuple(scales) if scales else (1.0,)}
