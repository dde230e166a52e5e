"""Class names stated once: ``data.classes`` fills every other place that needs them.

A recipe (or the command line: ``"data.classes=['helmet_on']"``) sets ``data["classes"]`` to the
class names in label order. :func:`apply_classes`, called by :func:`detlab.recipe.load` after
the overrides, then fills, where the recipe leaves them unset (absent or ``None``):

* ``data.{train,val,test,predict}.classes`` of datasets that take ``classes``
  (``CocoDetection``, ``VocDetection``), ``class_names`` of those that take that
  (``YoloDetection``, unless it reads a ``names_file``); wrapped datasets
  (``MosaicDataset(dataset=...)``) are filled inside;
* ``model.head.num_classes`` (heads that take it) = ``len(data.classes)``;
* ``evaluator.class_names`` (evaluators that take it) = ``data.classes``.

A place the recipe does set must agree: another value is a :class:`ConfigError` naming both
places and both values. A dataset with fixed names (the synthetic ones'
``class_names`` class attribute) must have exactly ``data.classes``.

Why ``data.classes`` and not a top-level ``classes = [...]`` in the recipe file: a recipe is its
dict sections (``model``, ``data``, ``train``, ``evaluator``), the only things overrides reach,
``detlab show`` prints and checkpoints store; a top-level list would be none of these.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .registry import DATASETS, EVALUATORS, HEADS, Registry

__all__ = ["apply_classes", "check_class_names"]

_SPLITS = ("train", "val", "test", "predict")


def check_class_names(value: Any, key: str = "data.classes") -> list[str]:
    """``value`` as a list of distinct, non-empty names, else a :class:`ConfigError`."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{key}={value!r}: expected a non-empty list of class names, "
                          "e.g. \"data.classes=['helmet_on', 'helmet_off']\"")
    names = [str(v) for v in value]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{key}={list(value)!r}: class names must be non-empty and distinct")
    return names


def _component(node: Any, registry: Registry) -> Any:
    """The class a ``dict(type=...)`` node builds, or None when it cannot be resolved."""
    if not isinstance(node, dict) or node.get("type") is None:
        return None
    type_ = node["type"]
    if inspect.isclass(type_):
        return type_
    try:
        return registry.get(type_)
    except ConfigError:
        return None


def _takes(cls: Any, arg: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return arg in params


def _fill(node: dict, arg: str, value: Any, key: str, names: list[str]) -> None:
    current = node.get(arg)
    if current is None:
        node[arg] = value
        return
    same = (list(map(str, current)) == names if isinstance(value, list)
            and isinstance(current, (list, tuple)) else current == value)
    if not same:
        raise ConfigError(
            f"{key}={current!r} disagrees with data.classes={names!r} (which gives "
            f"{key.rsplit('.', 1)[-1]}={value!r}); set the classes once, in data.classes, and "
            f"remove {key}"
        )


def _fill_dataset(node: Any, key: str, names: list[str]) -> None:
    cls = _component(node, DATASETS)
    if cls is None:
        return
    if isinstance(node.get("dataset"), dict):  # a wrapper (MosaicDataset, LesionPatches …)
        _fill_dataset(node["dataset"], f"{key}.dataset", names)
    if _takes(cls, "classes"):
        _fill(node, "classes", list(names), f"{key}.classes", names)
    elif _takes(cls, "class_names"):
        if node.get("names_file") is None:
            _fill(node, "class_names", list(names), f"{key}.class_names", names)
    else:
        fixed = getattr(cls, "class_names", None)
        if isinstance(fixed, (list, tuple)) and fixed and list(fixed) != names:
            raise ConfigError(
                f"data.classes={names!r} disagrees with {key} ({cls.__name__}), whose classes "
                f"are fixed: {list(fixed)!r}"
            )


def apply_classes(recipe: dict[str, Any]) -> dict[str, Any]:
    """Fill the places that need the class names from ``recipe["data"]["classes"]`` (module
    docstring), in place; a recipe without ``data.classes`` is returned unchanged."""
    data = recipe.get("data")
    if not isinstance(data, dict) or data.get("classes") is None:
        return recipe
    names = check_class_names(data["classes"])
    data["classes"] = names
    for split in _SPLITS:
        _fill_dataset(data.get(split), f"data.{split}", names)
    model = recipe.get("model")
    head = model.get("head") if isinstance(model, dict) else None
    cls = _component(head, HEADS)
    if cls is not None and _takes(cls, "num_classes"):
        _fill(head, "num_classes", len(names), "model.head.num_classes", names)
    evaluator = recipe.get("evaluator")
    cls = _component(evaluator, EVALUATORS)
    if cls is not None and _takes(cls, "class_names"):
        _fill(evaluator, "class_names", list(names), "evaluator.class_names", names)
    return recipe
