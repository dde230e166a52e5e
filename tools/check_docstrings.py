"""List the public detlab symbols that have no docstring; exit status 1 if there are any.

Public means:

* every module of the package whose dotted name has no part starting with ``_``;
* in it, the names listed in ``__all__`` (without ``__all__``: every name not starting with
  ``_``) that are classes or functions; a name re-exported through ``__all__`` is checked where
  it is defined, even in a private module;
* the methods and properties a public class defines itself whose names do not start with
  ``_``. An override without a docstring passes when it overrides a documented method of a
  detlab base class (the contract is written there, e.g. ``OverlapLoss.per_class``); overrides
  of torch or Lightning hooks need their own docstring, saying what detlab does in them, except
  the few whose meaning never changes (:data:`PROTOCOL_METHODS`, e.g. ``extra_repr``).

It also lists docstrings whose ``Args:`` section names something that is not a parameter (a
renamed or removed argument): griffe cannot check that itself because detlab groups related
arguments in one entry (``mean, std: ...``), which griffe reads as a single unknown name.

Run ``python tools/check_docstrings.py [package]``; ``make docs`` runs it through the MkDocs
hook in ``docs/hooks.py``, and ``tests/docs/test_check_docstrings.py`` runs it in the suite.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["public_modules", "missing_docstrings", "documented_args", "unknown_args", "main"]

# Overrides whose meaning is fixed by torch/Python; a docstring would only repeat it.
PROTOCOL_METHODS = frozenset({"extra_repr"})
_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ARG_ENTRY = re.compile(r"^([*\w][*\w, ]*?)\s*(\([^)]*\))?:(\s|$)")


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split(".")[1:])


def public_modules(package: str = "detlab") -> list[str]:
    """Dotted names of the package and every public module and subpackage in it, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if not _is_private(info.name):
            names.append(info.name)
    return sorted(names)


def _has_doc(obj: Any) -> bool:
    doc = getattr(obj, "__doc__", None)
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        # dataclasses invent "Name(field: type, ...)" when the class has no docstring
        if dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
            return False
    return bool(doc and doc.strip())


def _where(obj: Any) -> str:
    target = obj.fget if isinstance(obj, property) else obj
    target = getattr(target, "__func__", target)
    try:
        path = Path(inspect.getsourcefile(target) or "?")
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return "?"
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return f"{path}:{line}"


def _public_objects(module: ModuleType) -> Iterator[Any]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            # without __all__ only what the module defines itself (not its imports)
            if hasattr(module, "__all__") or obj.__module__ == module.__name__:
                yield obj


def _documented_in_base(cls: type, name: str, package: str) -> bool:
    return any(
        name in vars(base)
        and base.__module__.split(".")[0] == package
        and _has_doc(_unwrap(vars(base)[name]))
        for base in cls.__mro__[1:]
    )


def _unwrap(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    return member


def _methods(cls: type) -> Iterator[tuple[str, Any]]:
    for name, member in vars(cls).items():
        if name.startswith("_") or name in PROTOCOL_METHODS:
            continue
        member = _unwrap(member)
        if inspect.isfunction(member) or isinstance(member, property):
            yield name, member


def documented_args(doc: str | None) -> list[str]:
    """Names documented in the Google-style ``Args:`` section of ``doc`` (grouped entries such
    as ``mean, std: ...`` give both names; leading ``*`` are dropped)."""
    names: list[str] = []
    header_indent, entry_indent = None, None
    for line in (doc or "").expandtabs().splitlines():
        indent = len(line) - len(line.lstrip())
        if header_indent is None:
            if _ARGS_HEADER.match(line.strip()):
                header_indent = indent
            continue
        if not line.strip():
            continue
        if indent <= header_indent:  # the next section or paragraph
            header_indent = indent if _ARGS_HEADER.match(line.strip()) else None
            entry_indent = None
            continue
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent and (match := _ARG_ENTRY.match(line.strip())):
            names += [n.strip().lstrip("*") for n in match.group(1).split(",") if n.strip()]
    return names


def unknown_args(obj: Any) -> list[str]:
    """Names in ``obj``'s ``Args:`` section that its signature (a class: ``__init__``) lacks."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    return [n for n in documented_args(obj.__doc__) if n not in params]


def _check_args(obj: Any, where: str, label: str, problems: list[str]) -> None:
    bad = unknown_args(obj)
    if bad:
        problems.append(
            f"{where}  {label}: Args names no parameter: {', '.join(map(repr, bad))}"
        )


def missing_docstrings(package: str = "detlab") -> list[str]:
    """``"path:line  dotted.name"`` for every public symbol of ``package`` without a docstring
    (modules, classes, functions, methods, properties), for every ``Args:`` entry naming no
    parameter, and for modules that fail to import."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for module_name in public_modules(package):
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            problems.append(f"{module_name}  (cannot import: {err})")
            continue
        if not _has_doc(module):
            problems.append(f"{_module_file(module)}:1  {module_name} (module)")
        for obj in _public_objects(module):
            if obj.__module__.split(".")[0] != package:
                continue
            key = (obj.__module__, obj.__qualname__)
            if key in seen:
                continue
            seen.add(key)
            label = f"{obj.__module__}.{obj.__qualname__}"
            if not _has_doc(obj):
                problems.append(f"{_where(obj)}  {label}")
            _check_args(obj, _where(obj), label, problems)
            if not inspect.isclass(obj):
                continue
            for name, member in _methods(obj):
                if inspect.isfunction(member):
                    _check_args(member, _where(member), f"{label}.{name}", problems)
                if _has_doc(member) or _documented_in_base(obj, name, package):
                    continue
                problems.append(f"{_where(member)}  {label}.{name}")
    return sorted(problems)


def _module_file(module: ModuleType) -> str:
    path = Path(module.__file__ or "?")
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Print the missing docstrings of the package named in ``argv`` (default ``detlab``);
    return 1 if there are any, else 0."""
    args = sys.argv[1:] if argv is None else argv
    package = args[0] if args else "detlab"
    problems = missing_docstrings(package)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} public symbol(s) of {package} without a docstring")
        return 1
    print(f"every public symbol of {package} has a docstring")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
