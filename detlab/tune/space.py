"""The search space of ``detlab tune``: distributions over dotted recipe keys.

In a recipe (``from detlab.tune import uniform, log_uniform, int_range, choice, grid``)::

    tune = dict(
        space={
            "model.head.loss.terms.0.alpha": uniform(0.3, 0.7),
            "train.optimizer.lr": log_uniform(1e-5, 5e-4),
            "data.batch_size": int_range(4, 16, step=4),
            "model.backbone.name": choice("resnet10t", "resnet18"),
        },
        objective="val/primary", direction="max", at="best",   # optional, these are defaults
    )

or on the command line: ``--param 'train.optimizer.lr=log_uniform(1e-5,5e-4)'`` (the same
five forms as text). ``grid(*values)`` is a ``choice`` that the grid sampler enumerates
(``--sampler grid`` needs every parameter to be a ``choice``/``grid``/``int_range``).

The helpers return plain dicts (``{"dist": "uniform", "low": 0.3, "high": 0.7}``), so a recipe
with a ``tune`` section prints with ``detlab show`` and its JSON is the same as the file. Every
key is checked against the loaded recipe like an override (unknown key → the closest key).
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Any

from ..checks import is_int, is_number
from ..errors import ConfigError
from ..recipe import apply_overrides, parse_value
from ..registry import closest

__all__ = [
    "uniform", "log_uniform", "int_range", "choice", "grid", "Param", "parse_distribution",
    "parse_param", "space_from_recipe", "check_space", "format_value", "TUNE_KEYS",
]

#: options of a recipe's ``tune`` section (command-line flags override them)
TUNE_KEYS = ("space", "objective", "direction", "at", "sampler", "pruner", "trials", "epochs",
             "fraction", "seed")
KINDS = ("uniform", "log_uniform", "int_range", "choice", "grid")


def uniform(low: float, high: float) -> dict[str, Any]:
    """Floats uniform in ``[low, high]``."""
    return {"dist": "uniform", "low": low, "high": high}


def log_uniform(low: float, high: float) -> dict[str, Any]:
    """Floats log-uniform in ``[low, high]`` (``0 < low < high``), e.g. learning rates."""
    return {"dist": "log_uniform", "low": low, "high": high}


def int_range(low: int, high: int, step: int = 1) -> dict[str, Any]:
    """Integers ``low, low+step, …, high`` (both ends included)."""
    return {"dist": "int_range", "low": low, "high": high, "step": step}


def choice(*values: Any) -> dict[str, Any]:
    """One of ``values`` (numbers, strings, booleans, lists)."""
    return {"dist": "choice", "values": list(values)}


def grid(*values: Any) -> dict[str, Any]:
    """One of ``values``, every one tried by ``--sampler grid``."""
    return {"dist": "grid", "values": list(values)}


@dataclass(frozen=True)
class Param:
    """One searched key: ``key`` (dotted recipe key), ``kind`` (one of :data:`KINDS`),
    ``low``/``high``/``step`` for ranges, ``values`` for ``choice``/``grid``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    values: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value from an Optuna ``trial``."""
        if self.kind == "uniform":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.kind == "log_uniform":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.kind == "int_range":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step or 1)
        # Optuna stores choices of simple types only: lists go through their text form
        options = [v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)
                   for v in self.values]
        picked = trial.suggest_categorical(self.key, options)
        return self.values[options.index(picked)]

    def grid_values(self) -> list[Any]:
        """The values the grid sampler enumerates; ``ConfigError`` for continuous ranges."""
        if self.kind in ("choice", "grid"):
            return [v if isinstance(v, (int, float, str, bool)) else repr(v) for v in self.values]
        if self.kind == "int_range":
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        raise ConfigError(f"--sampler grid: {self.key} is {self.kind}({self.low}, {self.high}); "
                          "a grid needs choice/grid/int_range values")

    def sample(self) -> Any:
        """A valid value (the low end / first choice), to type-check the key."""
        return self.values[0] if self.values else (
            int(self.low) if self.kind == "int_range" else float(self.low))


def _make(key: str, spec: dict[str, Any]) -> Param:
    kind = spec.get("dist")
    where = f"tune space {key!r}"
    if kind not in KINDS:
        hint = closest(str(kind), list(KINDS), 1)
        raise ConfigError(f"{where}: unknown distribution {kind!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected one of {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        values = spec.get("values")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: {kind}(...) needs at least one value")
        return Param(key, kind, values=tuple(values))
    low, high = spec.get("low"), spec.get("high")
    if not (is_number(low) and is_number(high)) or not low < high:
        raise ConfigError(f"{where}: {kind}({low!r}, {high!r}) needs two numbers low < high")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform({low!r}, {high!r}) needs low > 0")
    step = spec.get("step", 1)
    if kind == "int_range":
        if not all(is_int(v) for v in (low, high, step)) or step < 1:
            raise ConfigError(f"{where}: int_range({low!r}, {high!r}, step={step!r}) needs "
                              "integers and step >= 1")
        return Param(key, kind, low=low, high=high, step=step)
    return Param(key, kind, low=float(low), high=float(high))


_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


def parse_distribution(key: str, text: str) -> Param:
    """``"log_uniform(1e-5, 5e-4)"`` (or ``int_range(2, 8, step=2)``, ``choice('a', 'b')``)
    → a :class:`Param` for ``key``."""
    match = _CALL.match(text)
    if not match:
        raise ConfigError(f"tune space {key!r}: {text!r} is not a distribution; write e.g. "
                          "uniform(0.3, 0.7), log_uniform(1e-5, 5e-4), int_range(2, 8), "
                          "choice('a', 'b') or grid(0.3, 0.5, 0.7)")
    name, args_text = match.groups()
    if name not in KINDS:
        hint = closest(name, list(KINDS), 1)
        raise ConfigError(f"tune space {key!r}: unknown distribution {name!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; expected one of {', '.join(KINDS)}")
    try:
        call = ast.parse(f"f({args_text})", mode="eval").body
        args = [ast.literal_eval(a) for a in call.args]  # type: ignore[attr-defined]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}  # type: ignore
    except (SyntaxError, ValueError) as err:
        raise ConfigError(f"tune space {key!r}: cannot read the arguments of {text!r} "
                          f"(literals only): {err}") from None
    builder = {"uniform": uniform, "log_uniform": log_uniform, "int_range": int_range,
               "choice": choice, "grid": grid}[name]
    try:
        spec = builder(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"tune space {key!r}: {text}: {err}") from None
    return _make(key, spec)


def parse_param(text: str) -> Param:
    """``"train.optimizer.lr=log_uniform(1e-5,5e-4)"`` → a :class:`Param`."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r}: expected KEY=DISTRIBUTION, e.g. "
                          "'train.optimizer.lr=log_uniform(1e-5,5e-4)'")
    key, dist = text.split("=", 1)
    return parse_distribution(key.strip(), dist)


def _from_value(key: str, value: Any) -> Param:
    if isinstance(value, str):
        return parse_distribution(key, value)
    if isinstance(value, dict):
        return _make(key, value)
    raise ConfigError(f"tune space {key!r}: {value!r} is not a distribution (use uniform(...), "
                      "log_uniform(...), int_range(...), choice(...) or grid(...))")


def tune_section(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``tune`` section (``{}`` when absent), its keys checked."""
    section = recipe.get("tune") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"recipe 'tune' must be a dict, got {type(section).__name__}")
    for k in section:
        if k not in TUNE_KEYS:
            hint = closest(str(k), list(TUNE_KEYS), 1)
            raise ConfigError(f"unknown key {k!r} in recipe 'tune'"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; known keys: {', '.join(TUNE_KEYS)} (search space under "
                              "'space')")
    return section


def space_from_recipe(recipe: dict[str, Any], params: list[str] | None = None) -> list[Param]:
    """The recipe's ``tune.space`` plus ``--param`` texts (which replace a recipe entry of the
    same key), checked against the recipe (:func:`check_space`)."""
    space = tune_section(recipe).get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError("recipe 'tune.space' must be a dict {dotted key: distribution}")
    found = {str(k): _from_value(str(k), v) for k, v in space.items()}
    for text in params or []:
        param = parse_param(text)
        found[param.key] = param
    if not found:
        raise ConfigError("empty search space: add a tune=dict(space={...}) section to the "
                          "recipe or --param KEY=DISTRIBUTION")
    result = list(found.values())
    check_space(recipe, result)
    return result


def format_value(value: Any) -> str:
    """``value`` as override text that :func:`detlab.recipe.parse_value` reads back."""
    if isinstance(value, str):
        return value if parse_value(value) == value and " " not in value else repr(value)
    if isinstance(value, float):
        return repr(float(f"{value:.6g}")) if value != 0 else "0.0"
    return repr(value).replace(" ", "")


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``{key: value}`` → ``["key=value", …]``."""
    return [f"{k}={format_value(v)}" for k, v in values.items()]


def check_space(recipe: dict[str, Any], params: list[Param]) -> None:
    """Apply each parameter's sample value to a copy of ``recipe`` as an override: an unknown
    key raises the override's error (with the closest key), a value of the wrong type too."""
    data = {k: v for k, v in copy.deepcopy(dict(recipe)).items() if k != "tune"}
    for param in params:
        if param.key.split(".")[0] == "tune":
            raise ConfigError(f"tune space {param.key!r}: the tune section itself is not tunable")
        for value in (param.values or (param.sample(),)):
            try:
                apply_overrides(data, [f"{param.key}={format_value(value)}"])
            except ConfigError as err:
                raise ConfigError(f"tune space {param.key!r}: {err}") from None
