"""Typed dotted overrides of a recipe: ``dotted.key=value`` strings applied to its dicts.

Values are Python literals (``3``, ``0.5``, ``[1, 2]``, ``(2, 3)``, ``None``/``null``,
``true``/``True``) or bare strings. A key that does not exist is an error naming the closest
existing key; ``+dotted.key=value`` adds a new key. A bare name given to a component dict
(``model.head.box_loss=WIoULoss``) replaces its ``type`` and keeps the arguments the new class
accepts; the ones it does not accept are dropped with a logged warning that names them.
"""

from __future__ import annotations

import ast
import inspect
import logging

from typing import Any

from .checks import is_int
from .errors import ConfigError
from .registry import REGISTRIES, accepted_arguments, closest

__all__ = ["apply_overrides", "parse_override", "parse_value"]

# The recipe layer's logger: a dropped argument is a recipe matter.
log = logging.getLogger("detlab.recipe")

# "None"/"null" mean None; lower-case "none" stays a string because components use it as an
# option value (gate="none", norm="none"). true/false in any case are booleans.
_LITERALS = {"None": None, "null": None, "true": True, "false": False, "True": True,
             "False": False, "TRUE": True, "FALSE": False}


def parse_override(text: str) -> tuple[str, Any, bool]:
    """Split ``"a.b=1"`` into ``("a.b", 1, False)``; a leading ``+`` marks a new key."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key=value (e.g. train.max_epochs=3)"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    add = key.startswith("+")
    key = key.lstrip("+")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part")
    return key, parse_value(raw.strip()), add


def parse_value(raw: str) -> Any:
    """A Python literal if ``raw`` is one (``None``/``null``/``true``/``false`` too), else the
    string (so ``none`` is the string ``"none"``)."""
    if raw in _LITERALS:
        return _LITERALS[raw]
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, (list, tuple)) else []
    )
    for k, v in items:
        path = f"{prefix}.{k}" if prefix else str(k)
        keys.append(path)
        keys.extend(_all_keys(v, path))
    return keys


def _check_type(key: str, old: Any, new: Any) -> Any:
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise ConfigError(f"override {key}={new!r}: expected a boolean (true/false)")
        return new
    if is_int(old) or isinstance(old, float):
        if not (is_int(new) or isinstance(new, float)):  # inf allowed: 1e999 is a literal
            kind = "an integer" if isinstance(old, int) else "a number"
            raise ConfigError(f"override {key}={new!r}: expected {kind} (current value {old!r})")
        if isinstance(old, int) and isinstance(new, float) and not new.is_integer():
            raise ConfigError(f"override {key}={new!r}: expected an integer (current value {old!r})")
        return type(old)(new) if isinstance(old, float) else new
    if isinstance(old, (list, tuple)) and not isinstance(new, (list, tuple)):
        raise ConfigError(f"override {key}={new!r}: expected a list (current value {old!r})")
    if isinstance(old, dict) and not isinstance(new, dict):
        if isinstance(new, str):  # replacing a component by name
            return _replace_type(key, old, new)
        raise ConfigError(f"override {key}={new!r}: expected a dict (current value {old!r})")
    return new


def _component_class(type_: Any) -> Any:
    """The class a component ``type`` names (registered name, dotted path or the class), or
    ``None`` when it names nothing importable."""
    if type_ is None:
        return None
    if inspect.isclass(type_) or callable(type_):
        return type_
    for registry in REGISTRIES.values():
        if type_ in registry:
            return registry.get(type_)
    if "." in str(type_):
        try:
            return REGISTRIES["models"].get(type_)  # any registry resolves dotted paths
        except ConfigError:
            return None
    return None


def _is_component_argument(node: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is a constructor argument of the component ``node["type"]`` names
    (so ``model.head.threshold=0.3`` works when the recipe relies on the default)."""
    cls = _component_class(node.get("type"))
    if cls is None:
        return False
    accepted, _ = accepted_arguments(cls)
    return name in accepted


def _replace_type(key: str, old: dict[str, Any], new: str) -> dict[str, Any]:
    """``old`` with its ``type`` replaced by ``new``, keeping the arguments the new class
    accepts (all of them when it takes ``**kwargs``); the others are dropped, with a warning."""
    cls = _component_class(new)
    args = {k: v for k, v in old.items() if k != "type"}
    if cls is None:
        kept, why = {}, f"type {new!r} is not a registered name or an importable class"
    else:
        accepted, var_kw = accepted_arguments(cls)
        kept = {k: v for k, v in args.items() if var_kw or k in accepted}
        why = f"{getattr(cls, '__name__', new)} does not accept them"
    dropped = {k: v for k, v in args.items() if k not in kept}
    if dropped:
        log.warning(
            "override %s=%s: dropped %s (%s); kept %s",
            key, new, ", ".join(f"{k}={v!r}" for k, v in dropped.items()), why,
            ", ".join(f"{k}={v!r}" for k, v in kept.items()) or "no arguments",
        )
    return {"type": new, **kept}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides in place (see module docstring); returns ``data``."""
    for text in overrides:
        key, value, add = parse_override(text)
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            prefix = ".".join(parts[: depth + 1])
            if isinstance(node, (list, tuple)):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise ConfigError(
                        f"override {text!r}: {prefix!r} is not a valid index (list of length "
                        f"{len(node)})"
                    )
                if isinstance(node, tuple):  # make the tuple editable in its parent
                    raise ConfigError(f"override {text!r}: cannot edit inside tuple at {prefix!r}")
                idx = int(part)
                if last:
                    node[idx] = _check_type(key, node[idx], value)
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[:depth])!r} is {node!r}, not a dict"
                )
            if part not in node:
                if last and _is_component_argument(node, part):
                    node[part] = value
                    break
                if add and last:
                    node[part] = value
                    break
                if add:
                    node[part] = {}
                    node = node[part]
                    continue
                hint = closest(key, _all_keys(data), n=1)
                raise ConfigError(
                    f"override {text!r}: no key {prefix!r} in the recipe"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (use +{key}=... to add a new key)"
                )
            if last:
                node[part] = _check_type(key, node[part], value)
            else:
                node = node[part]
    return data


