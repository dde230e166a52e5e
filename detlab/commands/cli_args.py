"""Argument-parsing helpers shared by the ``detlab`` subcommands."""

from __future__ import annotations

import argparse
import functools
from typing import Any

__all__ = ["allow_intermixed", "add_trust_arguments"]


def allow_intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``parser`` take its positional overrides after options too
    (``detlab predict CKPT img.png --out preds/ data.num_workers=0``), as argparse's
    intermixed parsing does; the subcommand's parse is what the top-level parser calls."""
    cls_parse = functools.partial(type(parser).parse_known_args, parser)

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        parser.parse_known_args = cls_parse  # type: ignore[method-assign]  # used inside
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args  # type: ignore[method-assign]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    return parser


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-recipe`` and ``--recipe`` to a subcommand that loads a checkpoint (the
    trust rules: :mod:`detlab.engine.checkpoint`). Argparse only: no torch import."""
    parser.add_argument(
        "--trust-recipe", action="store_true",
        help="also import the dotted types and execute the recipe-file code stored in the "
        "checkpoint (only for checkpoints from a source you trust; default: registered "
        "types only, nothing from the checkpoint is executed)",
    )
    parser.add_argument(
        "--recipe", default=None, metavar="RECIPE.py",
        help="build the model from your own recipe file instead of the stored one; the "
        "checkpoint then only provides the weights, which must fit",
    )
