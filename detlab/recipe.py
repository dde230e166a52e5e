"""Python recipe files: loading, variants, typed dotted overrides, JSON round trip.

A recipe is a Python file whose public top-level dicts (``model``, ``data``, ``train``,
``evaluator`` …) describe a run. A variant loads its parent explicitly and edits it::

    from detlab.recipe import parent
    model, data, train, evaluator = parent("fracture_unet.py")   # relative to this file
    train["max_epochs"] = 30

(:func:`load_parent` returns every section of the parent as a dict.)

Overrides (:mod:`detlab.overrides`) are ``dotted.key=value`` strings; values are Python literals (``3``, ``0.5``,
``[1, 2]``, ``(2, 3)``, ``None``/``null``, ``true``/``True``) or bare strings. A key that does not
exist is an error naming the closest existing key; ``+dotted.key=value`` adds a new key. A
bare name given to a component dict (``model.head.box_loss=WIoULoss``) replaces its ``type`` and
keeps the arguments the new class accepts; the ones it does not accept are dropped with a
logged warning that names them.

The resolved recipe (classes written as registered names or ``module.Class`` paths) and the text
and sha256 of every recipe file involved are what runs and checkpoints store, so a checkpoint
alone rebuilds its model. Rebuilding from a checkpoint (:func:`from_source`) executes nothing
by default: the stored file texts are provenance, executed only with ``trust=True``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import json
import logging
import re
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .overrides import apply_overrides, parse_override, parse_value
from .registry import REGISTRIES

__all__ = [
    "Recipe",
    "load",
    "load_parent",
    "parent",
    "apply_overrides",
    "parse_override",
    "parse_value",
    "to_jsonable",
    "dumps",
    "from_source",
    "SECTIONS",
    "with_defaults",
    "component_types",
]

# Sections detlab itself reads; others are kept and passed along untouched.
SECTIONS = ("model", "data", "train", "evaluator")
_MODULE_PREFIX = "detlab_recipe_"
log = logging.getLogger("detlab.recipe")


class Recipe(dict):
    """A resolved recipe: a plain nested dict plus where it came from.

    Attributes:
        path: the recipe file (``None`` for recipes rebuilt from a checkpoint's JSON).
        name: the recipe's stem (``fracture_unet``), used for ``runs/<name>/``.
        files: ``{module_name: {"path": str, "text": str, "sha256": str}}`` for the recipe and
            every parent it loaded, so classes defined inside recipe files can be rebuilt.
        overrides: the override strings applied, in order.
    """

    def __init__(self, data: Mapping[str, Any], *, path: Path | None = None, name: str = "",
                 files: dict[str, dict[str, str]] | None = None,
                 overrides: list[str] | None = None) -> None:
        super().__init__(data)
        self.path = path
        self.name = name or (path.stem if path else "recipe")
        self.files = files or {}
        self.overrides = list(overrides or [])

    def section(self, key: str) -> dict[str, Any]:
        """A top-level section, or an error naming the recipe file and the sections it has."""
        if key not in self or self[key] is None:
            where = f" in {self.path}" if self.path else ""
            raise ConfigError(
                f"recipe{where} has no {key!r} section (it has: {', '.join(sorted(self)) or '-'})"
            )
        return self[key]

    def to_json(self) -> str:
        """The resolved recipe as JSON (classes as names or dotted paths)."""
        return dumps(self)

    def provenance(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this recipe without the files.

        Paths are absolute (``path``, ``folder``: the recipe's folder, ``modules``: the file of
        every user module a dotted ``type`` names), so a trusted checkpoint finds a user's
        ``my_heads.py`` again from any working directory.
        """
        data = to_jsonable(self)
        return {
            "name": self.name,
            "path": str(self.path.resolve()) if self.path else None,
            "folder": str(self.path.resolve().parent) if self.path else None,
            "resolved": json.dumps(data, indent=2),
            "files": self.files,
            "modules": _module_files(data),
            "overrides": self.overrides,
        }


# -- loading ------------------------------------------------------------------------------------
_loading_stack: list[tuple[Path, dict[str, dict[str, str]]]] = []


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    return f"{_MODULE_PREFIX}{stem}_{digest}"


def _exec_file(path: Path, files: dict[str, dict[str, str]]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    text = path.read_text(encoding="utf-8")
    name = _module_name(path)
    files[name] = {
        "path": str(path),
        "text": text,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as err:
        raise ConfigError(
            f"syntax error in recipe {path}, line {err.lineno}: {err.msg}"
            + (f"\n    {err.text.rstrip()}" if err.text else "")
        ) from err
    _loading_stack.append((path, files))
    try:
        exec(code, module.__dict__)
    except ConfigError:
        raise
    except Exception as err:
        tb = err.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f", line {line}" if line else ""
        raise ConfigError(
            f"error while executing recipe {path}{where}: {type(err).__name__}: {err}"
        ) from err
    finally:
        _loading_stack.pop()
    return module.__dict__


def _sections(namespace: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and isinstance(v, dict)
    }


def _importable(folder: Path) -> None:
    """Put the recipe's folder on ``sys.path`` so a user module beside the recipe
    (``type="my_heads.MyHead"``) imports the way it would from that folder."""
    entry = str(folder)
    if folder.is_dir() and entry not in sys.path:
        sys.path.append(entry)


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe file and apply dotted ``overrides``.

    Raises:
        ConfigError: file missing, syntax error, error while executing it, bad override.
    """
    path = Path(path).expanduser()
    _importable(path.resolve().parent)
    files: dict[str, dict[str, str]] = {}
    namespace = _exec_file(path.resolve() if path.exists() else path, files)
    data = with_defaults(copy.deepcopy(_sections(namespace)))
    apply_overrides(data, overrides or [])
    importlib.import_module("detlab.classes").apply_classes(data)  # data.classes fills the rest
    return Recipe(data, path=path, files=files, overrides=overrides)


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill missing keys of the ``train``/``data`` sections from :mod:`detlab.defaults`."""
    from .defaults import SECTION_DEFAULTS

    for section, defaults in SECTION_DEFAULTS.items():
        if section in data or section == "train":
            current = data.get(section) or {}
            data[section] = {**copy.deepcopy(defaults), **current}
    return data


def _parent_path(relative: str | Path, caller_depth: int) -> tuple[Path, Path | None,
                                                                   dict[str, dict[str, str]]]:
    """The parent file ``relative`` names (relative to the recipe being loaded, or to the file
    ``caller_depth`` frames up when called outside :func:`load`), the calling file, and the
    provenance table the parent's text goes into."""
    if not _loading_stack:
        caller = Path(inspect.stack()[caller_depth].filename)
        files: dict[str, dict[str, str]] = {}
    else:
        caller, files = _loading_stack[-1]
    target = Path(relative).expanduser()
    if not target.is_absolute():
        target = (caller.parent / target).resolve()
    return target, caller, files


def load_parent(relative: str | Path) -> dict[str, Any]:
    """Load a parent recipe from inside a recipe file, relative to that file.

    Returns a deep copy of the parent's sections (``{name: dict}``), to be edited in plain
    Python.

    Raises:
        ConfigError: the parent file does not exist (naming the resolved path and the caller).
    """
    target, caller, files = _parent_path(relative, 2)
    return _load_parent_file(target, caller, files, "load_parent")


def _load_parent_file(target: Path, caller: Path | None, files: dict[str, dict[str, str]],
                      who: str) -> dict[str, Any]:
    if not target.is_file():
        raise ConfigError(
            f"{who}: parent recipe not found: {target}"
            + (f" (named in {caller}, paths are relative to it)" if caller else "")
        )
    return copy.deepcopy(_sections(_exec_file(target, files)))


def parent(relative: str | Path, *keys: str) -> tuple[dict[str, Any], ...]:
    """The sections of a parent recipe, for a variant in one line::

        model, data, train, evaluator = parent("helmet_yolo_p2.py")
        model, train, evaluator = parent("fracture_unet.py", "model", "train", "evaluator")

    ``relative`` is relative to the calling recipe file; ``keys`` default to
    ``("model", "data", "train", "evaluator")``. Each section is a deep copy (editing it leaves
    the parent's file and other variants alone).

    Raises:
        ConfigError: the parent file is missing, or has no section named in ``keys`` (naming
            the file and the sections it has).
    """
    target, caller, files = _parent_path(relative, 2)
    sections = _load_parent_file(target, caller, files, "parent")
    wanted = keys or SECTIONS
    missing = [k for k in wanted if k not in sections]
    if missing:
        raise ConfigError(
            f"parent: recipe {target} has no section(s) {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(sorted(sections)) or '-'}); name the ones to take: "
            f"parent({str(relative)!r}, {', '.join(repr(k) for k in sections)})"
        )
    return tuple(sections[k] for k in wanted)


def component_types(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every string ``type`` of a component in ``data``: ``[(key, type), ...]``, e.g.
    ``("model.head.type", "my_heads.MyHead")``, depth first in recipe order."""
    found: list[tuple[str, str]] = []
    if isinstance(data, Mapping):
        if isinstance(data.get("type"), str):
            found.append((f"{prefix}.type" if prefix else "type", data["type"]))
        for k, v in data.items():
            found += component_types(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            found += component_types(v, f"{prefix}.{i}" if prefix else str(i))
    return found


def _registered(name: str) -> bool:
    return any(name in registry for registry in REGISTRIES.values())


def _module_files(data: Any) -> dict[str, str]:
    """``{module: file}`` for the user modules the dotted types of ``data`` name (already
    imported: the recipe was built), without importing anything."""
    found: dict[str, str] = {}
    for _, type_ in component_types(data):
        module_name = type_.rpartition(".")[0]
        if not module_name or module_name.startswith(_MODULE_PREFIX) or _registered(type_):
            continue
        file = getattr(sys.modules.get(module_name), "__file__", None)
        if file:
            found[module_name] = str(Path(file).resolve())
    return found


def _import_roots(provenance: Mapping[str, Any]) -> list[Path]:
    """Folders to put on ``sys.path`` so a trusted checkpoint's user modules import again: the
    recipe's folder, and for each stored module file the folder its top-level package is in."""
    roots: list[Path] = []
    folder = provenance.get("folder")
    if not folder and provenance.get("path"):
        folder = str(Path(provenance["path"]).resolve().parent)  # checkpoints before 'folder'
    if folder:
        roots.append(Path(folder))
    for module_name, file in (provenance.get("modules") or {}).items():
        root = Path(file).parent
        depth = module_name.count(".") + (Path(file).name == "__init__.py")
        for _ in range(depth):
            root = root.parent
        roots.append(root)
    return roots


def from_source(provenance: Mapping[str, Any], *, trust: bool = False) -> Recipe:
    """Rebuild a :class:`Recipe` from :meth:`Recipe.provenance` (e.g. a checkpoint's).

    By default only the resolved JSON is read: nothing is executed, imported or put on
    ``sys.path``. With ``trust=True`` (the provenance comes from a source you trust) the
    stored recipe files are executed as modules (without touching the disk), so classes defined
    inside a recipe resolve again, and the recipe's folder and user-module folders are put on
    ``sys.path``.
    """
    files = dict(provenance.get("files") or {})
    if trust:
        _trusted_setup(provenance, files)
    data = json.loads(provenance["resolved"])
    path = provenance.get("path")
    return Recipe(
        data, path=Path(path) if path else None, name=provenance.get("name", ""),
        files=files, overrides=provenance.get("overrides"),
    )


def _trusted_setup(provenance: Mapping[str, Any], files: dict[str, Any]) -> None:
    """Execute the stored recipe files and extend ``sys.path`` (only for trusted provenance)."""
    for root in _import_roots(provenance):
        _importable(root)
    for name, info in files.items():
        if name in sys.modules:
            continue
        if not name.startswith(_MODULE_PREFIX):
            # Recipe modules are named detlab_recipe_*; any other name would shadow a real
            # module (json, numpy, ...) for the rest of the process.
            raise ConfigError(
                f"stored recipe file entry {name!r} is not a recipe module "
                f"(names start with {_MODULE_PREFIX!r})"
            )
        module = types.ModuleType(name)
        module.__file__ = info.get("path") or name
        sys.modules[name] = module
        try:
            exec(compile(info["text"], module.__file__, "exec"), module.__dict__)
        except Exception:
            # A parent that cannot be found any more is fine: its sections are already
            # resolved into the JSON; only classes defined inside it would be missing.
            sys.modules.pop(name, None)


# -- JSON ---------------------------------------------------------------------------------------
def _class_ref(obj: Any) -> str:
    for registry in REGISTRIES.values():
        name = registry.name_of(obj)
        if name is not None:
            return name
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname:
        raise ConfigError(f"cannot store {obj!r} in a recipe: define it at module level")
    return f"{module}.{qualname}"


def to_jsonable(obj: Any) -> Any:
    """Nested dicts/lists with classes and functions replaced by their names."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return _class_ref(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise ConfigError(
        f"recipe value {obj!r} of type {type(obj).__name__} cannot be stored; use plain "
        "numbers, strings, lists, dicts and classes"
    )


def dumps(data: Mapping[str, Any], indent: int | None = 2) -> str:
    """The recipe as JSON text (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(data), indent=indent)


def find_module_path(module_name: str) -> str | None:
    """Where a module would be imported from (used by ``detlab show`` for user classes)."""
    spec = importlib.util.find_spec(module_name)
    return spec.origin if spec else None
