"""Argument-parsing helpers shared by the ``detlab`` subcommands."""

from __future__ import annotations

import argparse
import functools
from typing import Any

__all__ = ["allow_intermixed"]


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
