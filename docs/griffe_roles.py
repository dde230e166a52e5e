"""Griffe extension: turn Sphinx roles in detlab docstrings into mkdocs-autorefs links.

detlab docstrings cross-reference with roles such as ``:class:`~detlab.losses.base.Loss``` or
``:meth:`per_class```. Without this extension they would render as literal text. Each role
target is resolved in the scope of the object whose docstring holds it (imports, members,
parents), like Sphinx does:

* a target inside detlab becomes an *optional* autorefs link (a link when the object has an
  API entry, plain code when it is hidden, e.g. an undocumented attribute);
* a target outside detlab (``torch.Tensor``) becomes plain code;
* a target that cannot be resolved at all is a broken reference: a warning, so the strict
  build (``make docs``) fails.

``~`` shows only the last component, as in Sphinx. Registered in ``mkdocs.yml`` under the
mkdocstrings python handler's ``extensions``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Alias, Extension, Module, Object, logger

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const):`(?P<tilde>~?)"
    r"(?P<target>[A-Za-z_][\w.]*)(?P<call>\(\))?`"
)
PACKAGE = "detlab"


def resolve(obj: Object, target: str) -> str | None:
    """Full dotted path of ``target`` as seen from ``obj``'s scope, or None."""
    if target == PACKAGE or target.startswith(PACKAGE + "."):
        return target
    first, _, rest = target.partition(".")
    scope: Object | None = obj
    while scope is not None:
        try:
            found = scope.resolve(first)
        except Exception:  # griffe raises NameResolutionError, or others on odd scopes
            found = None
        if found:
            return f"{found}.{rest}" if rest else found
        scope = scope.parent
    return None


def rewrite(obj: Object, text: str) -> str:
    """``text`` with every role replaced by an optional autoref or a code span."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        title = (target.rsplit(".", 1)[-1] if match["tilde"] else target) + (match["call"] or "")
        code = f"<code>{html.escape(title)}</code>"
        path = resolve(obj, target)
        if path is None:
            if "." in target and not target.startswith(PACKAGE + "."):
                return code  # another package's object (torch.nn.Module, ...)
            where = f"{obj.relative_filepath}:{obj.docstring.lineno}" if obj.docstring else obj.path
            logger.warning(f"{where}: cannot resolve cross-reference {match[0]} in {obj.path}")
            return code
        if not path.startswith(PACKAGE + ".") and path != PACKAGE:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


def _walk(obj: Object) -> Any:
    yield obj
    for member in obj.members.values():
        if isinstance(member, Alias):
            continue
        yield from _walk(member)


class SphinxRoles(Extension):
    """Rewrite the roles of every docstring of a loaded detlab package (see module docstring)."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Rewrite every docstring in ``pkg`` once the whole package is loaded."""
        if pkg.name != PACKAGE:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
