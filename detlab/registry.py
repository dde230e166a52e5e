"""Name → class registries and the builder that turns recipe dicts into objects.

A component in a recipe is ``dict(type=..., **kwargs)``. ``type`` may be

* a registered name (``"FocalTverskyLoss"``),
* the class itself (``type=FocalTverskyLoss``, so an IDE can jump to it), or
* a dotted import path (``"my_project.heads.MyHead"``), so a user's own class needs no edit to
  detlab and no registration. A dotted path must name a class or a Python function
  (``def``) defined in that path's top-level package, outside the standard library:
  ``"os.system"``, ``"builtins.eval"``, ``"subprocess.Popen"`` or a name a module merely
  re-exports from elsewhere are refused, so a recipe value can name a component, not an
  arbitrary callable. (Whether a checkpoint's dotted paths are imported at all is decided
  by :mod:`detlab.engine.checkpoint`: only when trusted.)

Registration is by decorator; the name defaults to the class name and a taken name is refused.
Unknown names raise :class:`~detlab.errors.ConfigError` listing the closest registered names.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ConfigError, DetlabError
from .registry_index import REGISTRY_NAMES, component_modules, source_index

__all__ = [
    "Registry",
    "REGISTRIES",
    "BACKBONES",
    "NECKS",
    "HEADS",
    "MODELS",
    "LOSSES",
    "ASSIGNERS",
    "POSTPROCESSORS",
    "DATASETS",
    "TRANSFORMS",
    "SAMPLERS",
    "BOX_SAMPLERS",
    "BOX_HEADS",
    "EVALUATORS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "discover",
    "closest",
    "check_dotted_target",
    "accepted_arguments",
]

_discovered = False


def discover() -> None:
    """Import every detlab module that registers components (idempotent): the ones
    :func:`~detlab.registry_index.component_modules` finds in the source, not the whole package.

    Modules whose optional dependency is missing (e.g. ``pyclipper`` for text heads) are
    skipped; using one of their components then raises an error that names the package.
    """
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module_name in component_modules():
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # optional extra not installed
            if err.name and err.name.split(".")[0] == "detlab":
                raise


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``candidates`` that look most like ``name``."""
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    found = [lowered[h] for h in hits]
    for c in candidates:  # substring matches ("Tversky" → "FocalTverskyLoss")
        if len(found) >= n:
            break
        if name.lower() in c.lower() and c not in found:
            found.append(c)
    return found


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """A named table of classes (or factory functions) of one kind.

    Args:
        kind: human-readable kind used in messages, e.g. ``"loss"``.
        base: if given, only subclasses of it may be registered (checked at ``register``).
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, Any] = {}
        self._source_name: str | None = None  # "LOSSES" for detlab's own (source_index)

    def _load(self, name: str) -> None:
        """Make sure ``name`` is registered if any detlab module registers it: import the one
        module the source index names, else (a name the index does not know) every one."""
        if name in self._items:
            return
        module = source_index().get(self._source_name or "", {}).get(name)
        if module is not None:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:  # optional extra not installed
                if err.name and err.name.split(".")[0] == "detlab":
                    raise
        if name not in self._items:
            discover()

    # -- registration -------------------------------------------------------------------------
    def register(self, obj: Any = None, *, name: str | None = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``). Usable as a decorator,
        with or without arguments: ``@LOSSES.register`` or ``@LOSSES.register(name="x")``."""

        def _do(target: Any) -> Any:
            key = name or target.__name__
            if self.base is not None and not (
                inspect.isclass(target) and issubclass(target, self.base)
            ):
                raise ConfigError(
                    f"cannot register {target!r} as a {self.kind}: it must be a subclass of "
                    f"{self.base.__module__}.{self.base.__qualname__}"
                )
            if key in self._items and not _same_definition(self._items[key], target):
                other = self._items[key]
                raise ConfigError(
                    f"{self.kind} name {key!r} is already taken by "
                    f"{other.__module__}.{other.__qualname__}; register "
                    f"{target.__module__}.{target.__qualname__} under another name"
                )
            self._items[key] = target
            return target

        if obj is None:
            return _do
        return _do(obj)

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered names, sorted."""
        discover()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, class) pairs, sorted by name."""
        for key in self.names():
            yield key, self._items[key]

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` is registered under, or ``None``. Looks only at what is registered
        so far (no :func:`discover`): an object that exists was imported, so it registered."""
        for key, value in self._items.items():
            if value is obj:
                return key
        return None

    def describe(self) -> list[tuple[str, str]]:
        """(name, first docstring line) for every registered entry."""
        return [(k, _first_doc_line(v)) for k, v in self.items()]

    def __contains__(self, name: str) -> bool:
        if isinstance(name, str):
            self._load(name)
        return name in self._items

    def get(self, type_: Any) -> Any:
        """Resolve a registered name, a dotted import path or a class to the class."""
        if not isinstance(type_, str):
            if callable(type_):
                return type_
            raise ConfigError(
                f"'type' of a {self.kind} must be a name, a dotted path or a class, got {type_!r}"
            )
        self._load(type_)
        if type_ in self._items:
            return self._items[type_]
        if "." in type_:
            return _import_dotted(type_, self.kind)
        hint = closest(type_, list(self._items))
        msg = f"unknown {self.kind} type {type_!r}."
        if hint:
            msg += f" Did you mean: {', '.join(hint)}?"
        msg += f" Registered: {', '.join(sorted(self._items)) or '(none)'}."
        msg += " A dotted import path (package.module.Class) also works."
        raise ConfigError(msg)

    def build(self, cfg: Any, *, key: str = "", **defaults: Any) -> Any:
        """Build an object from ``cfg``.

        Args:
            cfg: ``dict(type=..., **kwargs)``; an object that is not a dict is returned as is
                (so a caller may pass an already-built component).
            key: where ``cfg`` sits in the recipe (``"model.head.loss"``), used in messages.
            **defaults: keyword arguments used when ``cfg`` does not set them (e.g. the
                ``in_channels`` a head receives from its neck).
        """
        if not isinstance(cfg, Mapping):
            return cfg
        where = f" at {key!r}" if key else ""
        if "type" not in cfg:
            raise ConfigError(
                f"{self.kind} config{where} has no 'type' key (got keys: {sorted(cfg)})"
            )
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        target = self.get(cfg["type"])
        kwargs = _merge_defaults(target, kwargs, defaults)
        _check_renamed(target, kwargs, key or self.kind)
        _check_kwargs(target, kwargs, self.kind, where)
        try:
            return target(**kwargs)
        except DetlabError as err:
            # Keep the type (a DataError stays one) and add where in the recipe it happened.
            name = getattr(target, "__name__", repr(target))
            if not where or key in str(err):
                raise
            raise type(err)(f"cannot build {self.kind} {name}{where}: {err}") from err
        except (TypeError, ValueError) as err:
            name = getattr(target, "__name__", repr(target))
            raise ConfigError(f"cannot build {self.kind} {name}{where}: {err}") from err

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._items)} entries)"


def _same_definition(a: Any, b: Any) -> bool:
    # Re-executing a module (a recipe file loaded twice) re-creates its classes; that is the
    # same definition, not a clash.
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", object())
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", object())
    )


def _import_dotted(path: str, kind: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:
        # Refused before importing: no component lives in the standard library, and its
        # callables (os.system, subprocess.Popen, builtins.eval) are what an attack names.
        raise ConfigError(
            f"{kind} type {path!r}: dotted paths into the standard library ({top!r}) are not "
            "allowed; a dotted path must name a class or function of your own package"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"unknown {kind} type {path!r}: it is not registered and module {module_name!r} "
            f"cannot be imported ({err})"
        ) from err
    try:
        target = getattr(module, attr)
    except AttributeError as err:
        raise ConfigError(f"{kind} type {path!r}: module {module_name!r} has no {attr!r}") from err
    check_dotted_target(path, target, kind)
    return target


def check_dotted_target(path: str, target: Any, kind: str = "component") -> None:
    """Refuse what a dotted ``type`` path may not resolve to: anything but a class or a Python
    function, or one defined outside the path's top-level package (re-exported from another
    package, e.g. ``mypkg.system`` after ``from os import system``).

    Raises:
        ConfigError: naming the path and what it resolved to.
    """
    if not (inspect.isclass(target) or inspect.isfunction(target)):
        raise ConfigError(
            f"{kind} type {path!r} resolves to {type(target).__name__} {target!r}; a dotted "
            "path must name a class or a function defined with def"
        )
    defined_in = getattr(target, "__module__", None) or ""
    if defined_in.split(".")[0] != path.split(".")[0]:
        raise ConfigError(
            f"{kind} type {path!r} is defined in module {defined_in!r}, not in package "
            f"{path.split('.')[0]!r}; name it where it is defined"
        )


def accepted_arguments(target: Any) -> tuple[set[str], bool]:
    """The names ``target`` (a class or function) accepts as keyword arguments, and whether it
    takes ``**kwargs`` (also ``True`` when it has no readable signature)."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return set(), True
    names, var_kw = set(), False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, var_kw


def _merge_defaults(target: Any, kwargs: dict, defaults: dict) -> dict:
    accepted, var_kw = accepted_arguments(target)
    merged = dict(kwargs)
    for k, v in defaults.items():
        if k not in merged and (var_kw or k in accepted):
            merged[k] = v
    return merged


def _check_renamed(target: Any, kwargs: dict, key: str) -> None:
    # A component lists arguments it no longer takes in ``renamed_args`` (old name -> new
    # key relative to its own): a recipe using one is told the new key, not "unknown".
    renamed = getattr(target, "renamed_args", None) or {}
    accepted, _ = accepted_arguments(target)
    for old in kwargs:
        if old in renamed and old not in accepted:
            new = renamed[old]  # relative to ``key`` unless it names a recipe section
            new = new if new.split(".")[0] in ("model", "data", "train", "evaluator") \
                else f"{key}.{new}"
            raise ConfigError(f"{key}.{old} was renamed {new} (a checkpoint saved before the "
                              "rename loads with --recipe NEW_RECIPE.py)")


def _check_kwargs(target: Any, kwargs: dict, kind: str, where: str) -> None:
    accepted, var_kw = accepted_arguments(target)
    if var_kw:
        return
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        name = getattr(target, "__name__", repr(target))
        parts = []
        for k in unknown:
            hint = closest(k, sorted(accepted), n=1)
            parts.append(f"{k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        raise ConfigError(
            f"{kind} {name}{where} got unknown argument(s) {', '.join(parts)}; "
            f"it accepts: {', '.join(sorted(accepted)) or '(none)'}"
        )


def build_list(registry: Registry, cfgs: Any, key: str = "") -> list[Any]:
    """Build each entry of a list of configs with ``registry``; ``None`` gives ``[]``."""
    if cfgs is None:
        return []
    return [registry.build(c, key=f"{key}.{i}") for i, c in enumerate(cfgs)]


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")  # base class set in detlab.models.heads.base
MODELS = Registry("model")
LOSSES = Registry("loss")
ASSIGNERS = Registry("assigner")
POSTPROCESSORS = Registry("postprocessor")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
SAMPLERS = Registry("sampler")
# Two-stage detector parts: RoI/anchor sampling and the RoI box head of FasterRCNNHead.
BOX_SAMPLERS = Registry("box sampler")
BOX_HEADS = Registry("box head")
EVALUATORS = Registry("evaluator")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")

REGISTRIES: dict[str, Registry] = {
    "backbones": BACKBONES,
    "necks": NECKS,
    "heads": HEADS,
    "models": MODELS,
    "losses": LOSSES,
    "assigners": ASSIGNERS,
    "postprocessors": POSTPROCESSORS,
    "datasets": DATASETS,
    "transforms": TRANSFORMS,
    "samplers": SAMPLERS,
    "box_samplers": BOX_SAMPLERS,
    "box_heads": BOX_HEADS,
    "evaluators": EVALUATORS,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
}
for _var in REGISTRY_NAMES:  # each registry finds its names in the source index under this
    globals()[_var]._source_name = _var
