"""MkDocs hooks (registered in ``mkdocs.yml``): generated pages and the docstring check.

* ``on_config``: fills the "API reference" nav section with one page per public detlab module
  group (top-level modules, then each package with its modules), found by walking the source
  tree, so a module merged later gets its page without editing ``mkdocs.yml``.
* ``on_pre_build``: fails the build if a public symbol has no docstring
  (``tools/check_docstrings.py``).
* ``on_files``: adds the generated pages: ``reference/cli.md`` from
  ``detlab.cli.build_parser()``, ``reference/components.md`` from the registries, and the
  ``api/*.md`` pages (``::: module`` directives rendered by mkdocstrings).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "detlab"
API_SECTION = "API reference"

# Nav order; modules and packages not listed here follow alphabetically.
TOP_LEVEL_ORDER = ["registry", "recipe", "overrides", "structures", "errors", "cli"]
PACKAGE_ORDER = [
    "models", "models.backbones", "models.necks", "models.heads", "losses", "assigners", "ops",
    "postprocess", "evaluation", "data", "data.datasets", "engine",
]

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_tool(name: str) -> Any:
    """Import ``tools/<name>.py`` (tools/ is not a package)."""
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"detlab_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- API pages ----------------------------------------------------------------------------------
def _public(path: Path) -> bool:
    return not any(part.startswith("_") for part in path.with_suffix("").parts)


def api_pages(root: Path = ROOT, package: str = PACKAGE) -> list[tuple[str, str, str]]:
    """``(nav title, page path, markdown)`` of every API page, in nav order.

    One page per public top-level module (``api/registry.md``: ``::: detlab.registry``) and one
    per package that has public modules (``api/models/backbones.md``: the package docstring,
    then ``::: detlab.models.backbones.timm`` …). Empty packages get no page.
    """
    src = root / package
    top = sorted(p.stem for p in src.glob("*.py") if _public(p.relative_to(src)))
    packages = sorted(
        ".".join(p.parent.relative_to(src).parts)
        for p in src.rglob("__init__.py")
        if p.parent != src and _public(p.parent.relative_to(src))
    )

    def order(names: list[str], preferred: list[str]) -> list[str]:
        return [n for n in preferred if n in names] + [n for n in names if n not in preferred]

    pages = [("Overview", "api/index.md", _api_index(package))]
    for name in order(top, TOP_LEVEL_ORDER):
        dotted = f"{package}.{name}"
        pages.append((dotted, f"api/{name}.md", f"# `{dotted}`\n\n::: {dotted}\n"))
    for name in order(packages, PACKAGE_ORDER):
        folder = src.joinpath(*name.split("."))
        modules = sorted(
            p.stem for p in folder.glob("*.py") if p.stem != "__init__" and _public(Path(p.name))
        )
        if not modules:
            continue
        dotted = f"{package}.{name}"
        parts = [
            f"# `{dotted}`\n",
            f"::: {dotted}\n    options:\n      members: false\n      show_root_heading: false\n",
        ]
        for module in modules:
            parts.append(f"::: {dotted}.{module}\n")
        pages.append((dotted, f"api/{name.replace('.', '/')}.md", "\n".join(parts)))
    return pages


def _api_index(package: str) -> str:
    return (
        "# API reference\n\n"
        f"Generated from the docstrings of every public `{package}` module (mkdocstrings). A "
        "public symbol without a docstring fails `make docs` (`tools/check_docstrings.py`).\n\n"
        f"::: {package}\n    options:\n      members: false\n      show_root_heading: false\n"
    )


# -- CLI page -----------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _action_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = formatter._format_action_invocation(action)
        else:
            name = formatter._metavar_formatter(action, action.dest)(1)[0]
            if action.nargs in ("*", "+"):
                name += " …"
            elif action.nargs == "?":
                name = f"[{name}]"
        notes = [action.help or ""]
        if action.choices is not None:
            notes.append("one of: " + ", ".join(f"`{c}`" for c in action.choices))
        if action.required and action.option_strings:
            notes.append("required")
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0:
            notes.append(f"default: `{action.default}`")
        if action.const is not None and action.nargs == "?":
            notes.append(f"given without a value: `{action.const}`")
        rows.append(f"| `{_cell(name)}` | {_cell('; '.join(n for n in notes if n))} |")
    return rows


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().replace("usage:", "", 1).split())


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """Markdown reference of ``parser``: usage, options and one section per subcommand."""
    out = [
        "# CLI reference\n",
        "<!-- Generated at build time from detlab.cli.build_parser() by docs/hooks.py. -->\n",
        f"{parser.description}\n",
        f"```text\n{_usage(parser)}\n```\n",
    ]
    rows = _action_rows(parser)
    if rows:
        out += ["| Option | Description |", "| --- | --- |", *rows, ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    out.append("| Command | What it does |\n| --- | --- |")
    out += [f"| [`{parser.prog} {n}`](#{parser.prog}-{n}) | {_cell(helps.get(n, ''))} |"
            for n in sub.choices]
    out.append("")
    for name, child in sub.choices.items():
        out += [
            f"## `{parser.prog} {name}` {{#{parser.prog}-{name}}}\n",
            f"{child.description or helps.get(name, '')}\n",
            f"```text\n{_usage(child)}\n```\n",
            "| Argument | Description |", "| --- | --- |", *_action_rows(child), "",
        ]
    return "\n".join(out)


# -- components page ----------------------------------------------------------------------------
def components_markdown(api_modules: set[str]) -> str:
    """Every registered component by registry, linked to its API entry when it has one."""
    from detlab.registry import REGISTRIES, discover

    discover()
    out = [
        "# Registered components\n",
        "<!-- Generated at build time from detlab.registry by docs/hooks.py. -->\n",
        "What `detlab list` prints: the names a recipe can use as `type=`. Any class can also be "
        "given as the class itself or as a dotted import path "
        "(see [Recipes](../recipes.md#components)).\n",
    ]
    for kind, registry in REGISTRIES.items():
        out.append(f"## {kind}\n")
        rows = list(registry.items())
        if not rows:
            out.append("(none yet)\n")
            continue
        out += ["| Name | Class | Summary |", "| --- | --- | --- |"]
        for name, obj in rows:
            module = getattr(obj, "__module__", "")
            qualname = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
            dotted = f"{module}.{qualname}"
            ref = f"[`{dotted}`][{dotted}]" if module in api_modules else f"`{dotted}`"
            summary = (obj.__doc__ or "").strip().split("\n\n")[0]
            out.append(f"| `{name}` | {ref} | {_cell(summary)} |")
        out.append("")
    return "\n".join(out)


def _api_modules(root: Path = ROOT, package: str = PACKAGE) -> set[str]:
    src = root / package
    return {
        ".".join((package, *p.relative_to(src).with_suffix("").parts))
        for p in src.rglob("*.py")
        if p.stem != "__init__" and _public(p.relative_to(src))
    }


# -- hooks --------------------------------------------------------------------------------------
def on_config(config: Any) -> Any:
    """Point the "API reference" nav section at the generated API pages."""
    for i, entry in enumerate(config["nav"] or []):
        if isinstance(entry, dict) and API_SECTION in entry:
            config["nav"][i] = {API_SECTION: [{t: p} for t, p, _ in api_pages()]}
            break
    else:
        raise ValueError(f"mkdocs.yml nav has no {API_SECTION!r} entry for the generated pages")
    return config


def on_pre_build(config: Any) -> None:
    """Fail the build when a public detlab symbol has no docstring."""
    from mkdocs.exceptions import PluginError

    problems = _load_tool("check_docstrings").missing_docstrings(PACKAGE)
    if problems:
        raise PluginError(
            f"{len(problems)} public symbol(s) without a docstring "
            "(tools/check_docstrings.py):\n  " + "\n  ".join(problems)
        )


def on_files(files: Any, config: Any) -> Any:
    """Add the generated CLI, components and API pages."""
    from mkdocs.structure.files import File

    from detlab.cli import build_parser

    generated = {
        "reference/cli.md": cli_markdown(build_parser()),
        "reference/components.md": components_markdown(_api_modules()),
    }
    generated.update({path: text for _, path, text in api_pages()})
    for path, text in generated.items():
        files.append(File.generated(config, path, content=text))
    return files
