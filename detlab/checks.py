"""Argument checks shared by every component: one vocabulary, one message format.

Every function returns the checked value (converted where stated) or raises
:class:`~detlab.errors.ConfigError` with ``"<owner>: <arg> must be …, got <value>"``, so a recipe
mistake names the component and the argument. ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

__all__ = [
    "check_bool", "check_choice", "check_float", "check_int", "check_int_list", "check_section",
    "is_number", "is_int",
]


def is_number(value: Any) -> bool:
    """True for a finite ``int``/``float`` that is not a ``bool``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400) is no usable setting
        return False


def is_int(value: Any) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "" if low is None else ("> " if low_open else ">= ") + f"{low:g}"
    hi = "" if high is None else ("< " if high_open else "<= ") + f"{high:g}"
    return " and ".join(s for s in (lo, hi) if s)


def _in_range(value: float, low: float | None, high: float | None, low_open: bool,
              high_open: bool) -> bool:
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def check_float(
    owner: str,
    arg: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a ``float`` after checking it is a finite number in the range (``low``/
    ``high`` excluded when ``low_open``/``high_open``)."""
    if not is_number(value) or not _in_range(value, low, high, low_open, high_open):
        rng = _range_text(low, high, low_open, high_open) or "finite"
        raise ConfigError(f"{owner}: {arg} must be a number {rng}, got {value!r}")
    return float(value)


def check_int(
    owner: str, arg: str, value: Any, *, low: int | None = None, high: int | None = None
) -> int:
    """``value`` after checking it is an ``int`` (not ``bool``) in ``[low, high]``."""
    if not is_int(value) or not _in_range(value, low, high, False, False):
        rng = _range_text(low, high, False, False)
        raise ConfigError(f"{owner}: {arg} must be an int{' ' + rng if rng else ''}, got {value!r}")
    return value


def check_bool(owner: str, arg: str, value: Any) -> bool:
    """``value`` after checking it is a ``bool`` (``0``/``1`` are refused: say True/False)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {arg} must be True or False, got {value!r}")
    return value


def check_choice(owner: str, arg: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` after checking it is one of ``choices``."""
    choices = tuple(choices)
    # True == 1 and 1.0: a bool only matches a bool choice, a number only a non-bool one
    found = any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)
    if not found:
        raise ConfigError(f"{owner}: {arg} must be one of {list(choices)}, got {value!r}")
    return value


def check_int_list(
    owner: str, arg: str, value: Any, *, low: int | None = None, length: int | None = None,
    allow_empty: bool = False,
) -> list[int]:
    """``value`` as a list of ints (each ``>= low``), of ``length`` items when given."""
    ok = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    ok = ok and all(is_int(v) and (low is None or v >= low) for v in value)
    ok = ok and (allow_empty or len(value) > 0) and (length is None or len(value) == length)
    if not ok:
        what = "a list" + (f" of {length}" if length is not None else "")
        what += " ints" if length is not None else " of ints"
        what += (f" >= {low}" if low is not None else "")
        raise ConfigError(f"{owner}: {arg} must be {what}, got {value!r}")
    return list(value)


def check_section(key: str, value: Any, allowed: Iterable[str], expected: str = "a dict",
                  ignore: Iterable[str] = ("type",)) -> dict[str, Any]:
    """``value`` (a recipe section such as ``inference.tta``) as a plain dict without the
    ``ignore`` keys, after checking it is a mapping whose keys are among ``allowed``.

    Raises:
        ConfigError: ``"<key>=<value>: expected <expected>"`` for a non-mapping;
            ``"<key>: unknown key(s) [...]; expected [...]"`` for keys outside ``allowed``.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}={value!r}: expected {expected}")
    skip, known = set(ignore), sorted(set(allowed))
    out = {k: v for k, v in value.items() if k not in skip}
    unknown = sorted(set(out) - set(known))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; expected {known}")
    return out
