"""Per-epoch schedules of numeric recipe knobs (loss-term weights and other numbers of the model).

Anywhere under ``model`` a number may be replaced by a schedule dict::

    weight=dict(schedule="linear_ramp", start_epoch=6, start=0.1, step=0.05, max=0.5, before=0.0)

Kinds (``epoch`` counts from 0, as Lightning's ``current_epoch``):

* ``linear_ramp``: ``before`` (default 0.0) for ``epoch < start_epoch``, then
  ``start + step * (epoch - start_epoch)`` clipped to ``[min, max]`` (both optional). The
  digits team's λ = min(0.1 + 0.05·(epoch − 6), 0.5) from epoch 6 is the line above.
* ``steps``: ``values={0: 1.0, 5: 0.5, 10: 0.1}``: the value of the largest epoch key
  ``<= epoch`` (a key 0 is required).
* ``constant``: ``value`` at every epoch (a schedule a tune can turn into a ramp).

:func:`resolve_schedules` (called by :func:`detlab.engine.trainer.fit`) replaces each schedule
by its value at epoch 0 (so every component builds as usual, and ``detlab eval`` of the
checkpoint needs no schedule code), keeps the specs in a top-level ``schedules`` section of
the recipe (stored in ``recipe.json`` and the checkpoint, compared on ``--resume``) and returns
a :class:`ScheduleCallback` that sets each value on the built model at the start of every
training epoch and logs it as ``schedule/<key>``. Because a value depends on the epoch number
alone, a resumed run gets the same values as an uninterrupted one. Schedule fields are recipe
keys like any other: ``model.head.loss.terms.1.weight.max=0.3`` overrides one, and a
``detlab tune`` search space can name them.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
from torch import nn

from ..checks import is_int, is_number
from ..errors import ConfigError
from ..recipe import Recipe

__all__ = ["schedule_value", "find_schedules", "resolve_schedules", "ScheduleCallback"]

_FIELDS = {
    "linear_ramp": ({"start", "step"}, {"start_epoch", "min", "max", "before"}),
    "steps": ({"values"}, set()),
    "constant": ({"value"}, set()),
}


def check_schedule(key: str, spec: dict[str, Any]) -> None:
    """Raise ``ConfigError`` naming ``key`` if ``spec`` is not a valid schedule dict."""
    kind = spec.get("schedule")
    if kind not in _FIELDS:
        raise ConfigError(f"schedule {key}: unknown kind {kind!r}; expected one of "
                          f"{sorted(_FIELDS)}")
    required, optional = _FIELDS[kind]
    fields = set(spec) - {"schedule"}
    missing, unknown = required - fields, fields - required - optional
    if missing or unknown:
        raise ConfigError(
            f"schedule {key} ({kind}): " + (f"missing {sorted(missing)} " if missing else "")
            + (f"unknown {sorted(unknown)} " if unknown else "")
            + f"(fields: {sorted(required)} required, {sorted(optional)} optional)")
    if kind == "steps":
        values = spec["values"]
        if not isinstance(values, dict) or 0 not in {int(k) for k in values if _int_like(k)}:
            raise ConfigError(f"schedule {key} (steps): values must be a dict {{epoch: value}} "
                              f"with a key 0, got {values!r}")
        for k, v in values.items():
            if not _int_like(k):
                raise ConfigError(f"schedule {key} (steps): epoch {k!r} is not an integer")
            _check_value(key, f"values[{k}]", v)
        return
    for name in fields:
        if name == "start_epoch":
            if not _int_like(spec[name]) or int(spec[name]) < 0:
                raise ConfigError(f"schedule {key}: start_epoch={spec[name]!r}: expected an "
                                  "integer >= 0")
        else:
            _check_value(key, name, spec[name])
    if spec.get("min") is not None and spec.get("max") is not None and spec["min"] > spec["max"]:
        raise ConfigError(f"schedule {key}: min={spec['min']} > max={spec['max']}")


def _check_value(key: str, name: str, value: Any) -> None:
    if not is_number(value):
        raise ConfigError(f"schedule {key}: {name}={value!r} is not a finite number")


def _int_like(value: Any) -> bool:
    if is_int(value):
        return True
    return isinstance(value, str) and value.lstrip("-").isdigit()  # JSON turns keys into str


def schedule_value(spec: dict[str, Any], epoch: int) -> float:
    """The value of schedule ``spec`` (a checked schedule dict) at ``epoch`` (0-based)."""
    kind = spec["schedule"]
    if kind == "constant":
        return float(spec["value"])
    if kind == "steps":
        keys = sorted((int(k), v) for k, v in spec["values"].items())
        return float([v for k, v in keys if k <= epoch][-1]) if epoch >= 0 else float(keys[0][1])
    start_epoch = int(spec.get("start_epoch", 0))
    if epoch < start_epoch:
        return float(spec.get("before", 0.0))
    value = float(spec["start"]) + float(spec["step"]) * (epoch - start_epoch)
    if spec.get("max") is not None:
        value = min(value, float(spec["max"]))
    if spec.get("min") is not None:
        value = max(value, float(spec["min"]))
    return value


def find_schedules(data: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """``{dotted key: schedule dict}`` for every dict with a ``schedule`` key in ``data``."""
    found: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict):
        if "schedule" in data and "type" not in data:
            return {prefix: data}
        items: Any = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return found
    for k, v in items:
        found.update(find_schedules(v, f"{prefix}.{k}" if prefix else str(k)))
    return found


def _set_key(data: Any, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    last = parts[-1]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


def resolve_schedules(recipe: Recipe) -> tuple[Recipe, ScheduleCallback | None]:
    """The recipe with every schedule replaced by its epoch-0 value and the specs under
    ``schedules``, and the callback that applies them (``(recipe, None)`` when there is none).
    A recipe resolved before (its ``schedules`` section present) is returned as it is, with the
    callback of its stored specs."""
    found = {k: v for k, v in find_schedules(recipe).items() if k != "schedules"
             and not k.startswith("schedules.")}
    stored = recipe.get("schedules") if isinstance(recipe.get("schedules"), dict) else None
    if not found:
        return recipe, (ScheduleCallback(stored) if stored else None)
    for key, spec in found.items():
        if not key.startswith("model."):
            raise ConfigError(f"schedule {key}: schedules apply to numbers under 'model' "
                              "(loss weights and other knobs of the built model)")
        check_schedule(key, spec)
    data = copy.deepcopy(dict(recipe))
    for key, spec in found.items():
        _set_key(data, key, schedule_value(spec, 0))
    data["schedules"] = {key: dict(spec) for key, spec in found.items()}
    resolved = Recipe(data, path=recipe.path, name=recipe.name,
                      files=getattr(recipe, "files", None),
                      overrides=getattr(recipe, "overrides", None))
    return resolved, ScheduleCallback(data["schedules"])


def _attribute(model: Any, key: str) -> tuple[Any, str]:
    """The object and attribute name that recipe ``key`` (``model.head.loss.terms.0.weight``)
    set when the model was built. Recipe names map to attributes of the same name, with the
    heads' ``loss`` → ``loss_fn`` alias and list indices into module lists."""
    parts = key.split(".")[1:]
    obj = model
    for part in parts[:-1]:
        if part.isdigit() and hasattr(obj, "__getitem__"):
            obj = obj[int(part)]
            continue
        for name in (part, f"{part}_fn"):
            found = getattr(obj, name, None)
            # a head's ``loss`` is its loss method; the built loss is ``loss_fn``
            if found is not None and (isinstance(found, nn.Module) or not callable(found)):
                obj = found
                break
        else:
            raise ConfigError(f"schedule {key}: the built model has no {part!r} at "
                              f"{type(obj).__name__} (schedules follow attribute names)")
    last = parts[-1]
    if isinstance(getattr(obj, last, None), bool) or not isinstance(getattr(obj, last, None),
                                                                    (int, float)):
        raise ConfigError(f"schedule {key}: {type(obj).__name__} has no numeric attribute "
                          f"{last!r} to schedule")
    return obj, last


class ScheduleCallback(pl.Callback):
    """Sets each scheduled value on the model at the start of every training epoch and logs it
    as ``schedule/<key>`` (one value per epoch in ``metrics.csv``)."""

    def __init__(self, schedules: dict[str, dict[str, Any]]) -> None:
        self.schedules = {k: dict(v) for k, v in schedules.items()}
        for key, spec in self.schedules.items():
            check_schedule(key, spec)

    def values(self, epoch: int) -> dict[str, float]:
        """``{key: value}`` at ``epoch``."""
        return {k: schedule_value(s, epoch) for k, s in self.schedules.items()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check every key names a numeric attribute of the built model (before epoch 0)."""
        for key in self.schedules:
            _attribute(pl_module.model, key)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply and log the values of ``trainer.current_epoch``."""
        for key, value in self.values(int(trainer.current_epoch)).items():
            obj, name = _attribute(pl_module.model, key)
            setattr(obj, name, value)
            pl_module.log(f"schedule/{key}", value, on_step=False, on_epoch=True)
