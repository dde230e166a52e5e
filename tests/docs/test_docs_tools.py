"""The docs tooling: the docstring check, the generated CLI and API pages, the Sphinx-role
rewriting. The checks run on toy packages and parsers whose answers are known, and the
docstring check also on detlab itself (a public symbol without a docstring fails here too)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load(ROOT / "tools" / "check_docstrings.py", "check_docstrings_under_test")
hooks = _load(ROOT / "docs" / "hooks.py", "docs_hooks_under_test")


def _write_package(root: Path, name: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


TOY = {
    "__init__.py": (
        '"""Toy package."""\nfrom .core import Base, documented\n__all__ = ["Base", "documented"]\n'
    ),
    "core.py": '''
        """Core."""
        import dataclasses

        class Base:
            """Base."""
            def hook(self):
                """Documented contract."""
            def plain(self):
                pass

        class Child(Base):
            """Child."""
            def hook(self):  # inherits Base.hook's docstring: fine
                return 1
            @property
            def size(self):
                return 1
            def _private(self):
                pass

        def documented(a, b):
            """Sum.

            Args:
                a, b: the terms.
                c: gone.
            """

        def undocumented():
            pass

        def _helper():
            pass

        @dataclasses.dataclass
        class Record:
            x: int
        ''',
    "empty.py": "X = 1\n",
    "_private.py": "def hidden():\n    pass\n",
}


@pytest.fixture
def toypkg(tmp_path, monkeypatch):
    _write_package(tmp_path, "toypkg", TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toypkg"
    for name in [n for n in sys.modules if n == "toypkg" or n.startswith("toypkg.")]:
        del sys.modules[name]


def test_check_docstrings_lists_exactly_the_undocumented_public_symbols(toypkg):
    found = {line.split("  ", 1)[1] for line in check.missing_docstrings(toypkg)}
    assert found == {
        "toypkg.core.Base.plain",
        "toypkg.core.Child.size",
        "toypkg.core.undocumented",
        "toypkg.core.Record",  # the dataclass's generated "Record(x: int)" is not a docstring
        "toypkg.empty (module)",
        "toypkg.core.documented: Args names no parameter: 'c'",
    }
    assert check.main([toypkg]) == 1


@pytest.mark.parametrize(
    "doc, names",
    [
        ("Args:\n    a: x.\n    b (int): y,\n        continued: not a name.\n", ["a", "b"]),
        ("Sum.\n\nArgs:\n    mean, std: pair.\n    **kwargs: rest.\n\nReturns:\n    x: y.\n",
         ["mean", "std", "kwargs"]),
        ("No sections here: a: b.", []),
    ],
)
def test_documented_args(doc, names):
    assert check.documented_args(doc) == names


def test_every_public_detlab_symbol_has_a_docstring():
    assert check.missing_docstrings("detlab") == []


def test_cli_page_lists_every_command_argument_and_default():
    parser = argparse.ArgumentParser(prog="tool", description="A tool.")
    parser.add_argument("--verbose", action="store_true", help="talk more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run it", description="Run THING.")
    run.add_argument("thing", help="what | to run")
    run.add_argument("extra", nargs="*")
    run.add_argument("--mode", choices=("a", "b"), default="a", help="how")
    run.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT")
    sub.add_parser("stop", help="stop it")
    page = hooks.cli_markdown(parser)
    assert "| `--verbose` | talk more |" in page
    assert "| [`tool run`](#tool-run) | run it |" in page
    assert "## `tool run` {#tool-run}" in page and "## `tool stop` {#tool-stop}" in page
    assert "| `thing` | what \\| to run |" in page
    assert "| `extra …` |  |" in page
    assert "| `--mode {a,b}` | how; one of: `a`, `b`; default: `a` |" in page
    assert "| `--resume [CKPT]` | given without a value: `latest` |" in page
    assert "tool run [-h] [--mode {a,b}] [--resume [CKPT]] thing [extra ...]" in page


def test_cli_page_of_detlab_has_every_subcommand():
    from detlab.cli import build_parser

    parser = build_parser()
    page = hooks.cli_markdown(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        assert f"## `detlab {name}` {{#detlab-{name}}}" in page


def test_api_pages_cover_every_public_module_and_skip_empty_packages(tmp_path):
    _write_package(tmp_path, "pkg", {
        "__init__.py": "", "registry.py": "", "zeta.py": "", "_hidden.py": "",
        "models/__init__.py": "", "models/model.py": "", "models/heads/__init__.py": "",
        "models/heads/unet.py": "", "models/heads/_base.py": "", "empty/__init__.py": "",
        "_private/__init__.py": "", "_private/x.py": "",
    })
    pages = hooks.api_pages(tmp_path, "pkg")
    assert [(title, path) for title, path, _ in pages] == [
        ("Overview", "api/index.md"),
        ("pkg.registry", "api/registry.md"),
        ("pkg.zeta", "api/zeta.md"),
        ("pkg.models", "api/models.md"),
        ("pkg.models.heads", "api/models/heads.md"),
    ]
    text = dict((p, t) for _, p, t in pages)
    assert "::: pkg.models.heads.unet" in text["api/models/heads.md"]
    assert "_base" not in text["api/models/heads.md"]
    assert hooks._api_modules(tmp_path, "pkg") == {
        "pkg.registry", "pkg.zeta", "pkg.models.model", "pkg.models.heads.unet",
    }


def test_sphinx_roles_become_links_code_or_warnings(tmp_path, monkeypatch, caplog):
    griffe = pytest.importorskip("griffe")
    roles = _load(ROOT / "docs" / "griffe_roles.py", "griffe_roles_under_test")
    _write_package(tmp_path, "rolepkg", {
        "__init__.py": '"""Pkg."""\n',
        "a.py": '''
            """Module a."""
            from .b import Other

            class Thing:
                """See :class:`Other`, :meth:`run`, :class:`~rolepkg.b.Other`,
                :class:`torch.nn.Module` and :func:`missing`."""

                def run(self):
                    """Run."""
            ''',
        "b.py": '"""Module b."""\nclass Other:\n    """Other."""\n',
    })
    monkeypatch.setattr(roles, "PACKAGE", "rolepkg")
    pkg = griffe.load("rolepkg", search_paths=[str(tmp_path)])
    thing = pkg["a.Thing"]
    with caplog.at_level(logging.WARNING):
        text = roles.rewrite(thing, thing.docstring.value)
    assert '<autoref identifier="rolepkg.b.Other" optional><code>Other</code></autoref>' in text
    assert '<autoref identifier="rolepkg.a.Thing.run" optional><code>run</code></autoref>' in text
    assert text.count('identifier="rolepkg.b.Other"') == 2  # ~ shows the last part only
    assert "<code>torch.nn.Module</code>" in text and "autoref identifier=\"torch" not in text
    assert "cannot resolve cross-reference :func:`missing`" in caplog.text
