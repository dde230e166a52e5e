"""Where each registered component is defined, read from detlab's source without importing it.

:func:`component_modules` lists the modules that register components (a ``<REGISTRY>.register``
in their text), so :func:`detlab.registry.discover` imports those and not the rest of the
package (the training engine with Lightning, the commands). :func:`source_index` maps each
registry's names to their module from the decorators and calls it finds
(``@LOSSES.register``, ``@LOSSES.register(name="x")``, ``OPTIMIZERS.register(torch.optim.SGD,
name="SGD")``), so looking up one name imports one module. A name registered some other way is
still found: a lookup that misses the index falls back to :func:`~detlab.registry.discover`.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

__all__ = ["REGISTRY_NAMES", "DISCOVER_PACKAGES", "component_modules", "source_index"]

# The module-level names of the registries, as registering modules spell them.
REGISTRY_NAMES = (
    "BACKBONES", "NECKS", "HEADS", "MODELS", "LOSSES", "ASSIGNERS", "POSTPROCESSORS", "DATASETS",
    "TRANSFORMS", "SAMPLERS", "BOX_SAMPLERS", "BOX_HEADS", "EVALUATORS", "OPTIMIZERS",
    "SCHEDULERS",
)
# Packages whose modules may register components.
DISCOVER_PACKAGES = (
    "detlab.models",
    "detlab.losses",
    "detlab.assigners",
    "detlab.postprocess",
    "detlab.evaluation",
    "detlab.data",
    "detlab.engine",
)
_ROOT = Path(__file__).resolve().parent
_PATTERN = re.compile(rf"\b(?:{'|'.join(REGISTRY_NAMES)})\.register\b")


@functools.cache
def _component_files() -> tuple[tuple[str, Path], ...]:
    found = []
    for pkg_name in DISCOVER_PACKAGES:
        folder = _ROOT.joinpath(*pkg_name.split(".")[1:])
        for file in sorted(folder.rglob("*.py")):
            try:
                text = file.read_text(encoding="utf-8")
            except OSError:
                continue
            if _PATTERN.search(text):
                parts = file.relative_to(_ROOT.parent).with_suffix("").parts
                found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), file))
    return tuple(found)


def component_modules() -> list[str]:
    """Dotted names of the detlab modules that register components, in a stable order."""
    return [name for name, _ in _component_files()]


def _register_of(node: ast.expr) -> tuple[str | None, str | None]:
    """``(registry variable, explicit name)`` when ``node`` is ``REG.register`` or a call of it."""
    call = node if isinstance(node, ast.Call) else None
    func = call.func if call is not None else node
    if not (isinstance(func, ast.Attribute) and func.attr == "register"
            and isinstance(func.value, ast.Name) and func.value.id in REGISTRY_NAMES):
        return None, None
    name = None
    for kw in call.keywords if call is not None else ():
        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
            name = str(kw.value.value)
    return func.value.id, name


@functools.cache
def source_index() -> dict[str, dict[str, str]]:
    """``{registry variable: {registered name: module}}`` (e.g. ``index["LOSSES"]["CIoULoss"]
    == "detlab.losses.iou"``), read from the source once."""
    index: dict[str, dict[str, str]] = {}
    for module_name, file in _component_files():
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue  # importing it (discover) reports the problem
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                for dec in node.decorator_list:
                    var, name = _register_of(dec)
                    if var:
                        index.setdefault(var, {})[name or node.name] = module_name
            elif isinstance(node, ast.Call) and node.args:  # REG.register(obj, name=...)
                var, name = _register_of(node)
                target = node.args[0]
                name = name or (target.attr if isinstance(target, ast.Attribute)
                                else getattr(target, "id", None))
                if var and name:
                    index.setdefault(var, {})[name] = module_name
    return index
