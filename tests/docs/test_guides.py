"""Runs every code block of the guides (``docs/guides/*.md``) and of ``docs/recipes.md``, so the
documentation cannot drift from the code.

Each page runs in its own fresh folder holding a copy of ``recipes/`` (a user's working
folder at the root of a checkout), block by block, in page order:

* ``python title="name.py"``: written to ``name.py`` (and compiled, so a syntax error fails here);
* ``python`` without a title: executed in one namespace per page, like a Python session started
  in that folder (the folder is on ``sys.path``);
* ``bash``: every line is a ``detlab ...`` command, optionally prefixed by ``PYTHONPATH=.``. It
  runs in-process through :func:`detlab.cli.main` but as if in a new process: registries are
  reset to the built-in components, recipe modules and the folder's own modules are unloaded,
  and the folder is on ``sys.path`` only with ``PYTHONPATH=.`` (detlab itself adds the recipe's
  folder when it loads a recipe). ``detlab train`` gets :data:`TINY`
  appended (each override only where the recipe has the key and the command does not set it).
  The command must exit with status 0;
* ``console``: ``$ detlab ...`` lines, each followed by lines that must appear in its output;
  a command may fail only when an expected line starts with ``error:``;
* ``text``: output samples, not run. Any other language fails the test.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docs_blocks import Block, Command, bash_commands, console_session, read_blocks

from detlab.cli import main
from detlab.errors import ConfigError
from detlab.recipe import apply_overrides, load, parse_override
from detlab.registry import REGISTRIES, discover

ROOT = Path(__file__).resolve().parents[2]
# Pages whose commands need data a test cannot have: their `detlab` commands are only parsed
# and, when they name a recipe, loaded with their overrides (test_data_pages_commands_parse).
DRY_RUN = {"guides/fracture_ct.md": "needs real CT studies (data.root=/data/Task)"}
PAGES = [
    p for p in sorted((ROOT / "docs" / "guides").glob("*.md")) + [ROOT / "docs" / "recipes.md"]
    if str(p.relative_to(ROOT / "docs")) not in DRY_RUN
]
LANGUAGES = {"python", "bash", "console", "text"}
# Tiny settings: a training run takes seconds. Appended to every `detlab train` command.
TINY = [
    "train.max_epochs=1", "data.train.num_samples=8", "data.val.num_samples=4",
    "data.train.image_size=64", "data.val.image_size=64", "data.batch_size=4",
    "data.val_batch_size=4", "data.num_workers=0", "train.progress_bar=false",
]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT / "docs"))


def _param(page: Path) -> object:
    slow = "detlab train" in page.read_text(encoding="utf-8")
    return pytest.param(page, id=_page_id(page), marks=[pytest.mark.slow] if slow else [])


# -- emulating a fresh `detlab` process ----------------------------------------------------------
def _registry_state() -> dict[str, dict]:
    return {kind: dict(reg._items) for kind, reg in REGISTRIES.items()}


def _set_registry_state(state: dict[str, dict]) -> None:
    for kind, reg in REGISTRIES.items():
        reg._items.clear()
        reg._items.update(state[kind])


def _user_modules(folder: Path) -> dict[str, object]:
    """Recipe modules and modules loaded from ``folder``."""
    found = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        inside = bool(file) and Path(file).resolve().is_relative_to(folder)
        if name.startswith("detlab_recipe_") or inside:
            found[name] = module
    return found


def _without_folder(paths: list[str], folder: Path) -> list[str]:
    return [p for p in paths if Path(p or ".").resolve() != folder]


@contextlib.contextmanager
def _fresh_process(folder: Path, builtins: dict[str, dict], pythonpath: bool) -> Iterator[None]:
    session_registries, session_path = _registry_state(), list(sys.path)
    session_modules = _user_modules(folder)
    for name in session_modules:
        del sys.modules[name]
    _set_registry_state(builtins)
    sys.path[:] = ([str(folder)] if pythonpath else []) + _without_folder(sys.path, folder)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for name in _user_modules(folder):
            del sys.modules[name]
        sys.modules.update(session_modules)
        _set_registry_state(session_registries)
        sys.path[:] = session_path


def _with_tiny(argv: list[str]) -> list[str]:
    """``argv`` of ``detlab train`` plus the TINY overrides its recipe accepts."""
    recipe_path = argv[1]
    given = [a for a in argv[2:] if "=" in a and not a.startswith("-")]
    set_keys = {parse_override(a)[0] for a in given}
    recipe = load(recipe_path, given)
    extra = []
    for override in TINY:
        if parse_override(override)[0] in set_keys:
            continue
        try:
            apply_overrides(copy.deepcopy(dict(recipe)), [override])
        except ConfigError:
            continue  # this recipe has no such key (e.g. a dataset without num_samples)
        extra.append(override)
    return argv + extra


def _run(command: Command, folder: Path, builtins: dict[str, dict]) -> tuple[int, str]:
    unsupported = set(command.env) - {"PYTHONPATH"}
    assert not unsupported and command.env.get("PYTHONPATH", ".") == ".", (
        f"only a PYTHONPATH=. prefix is supported: {command.text}"
    )
    out = io.StringIO()
    with _fresh_process(folder, builtins, "PYTHONPATH" in command.env):
        argv = command.argv
        if argv[:1] == ["train"]:
            argv = _with_tiny(argv)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(argv)
    return rc, out.getvalue()


# -- the test ------------------------------------------------------------------------------------
def _where(page: Path, block: Block) -> str:
    return f"{_page_id(page)}, block at line {block.line}"


@pytest.mark.parametrize("page", [_param(p) for p in PAGES])
def test_every_code_block_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = read_blocks(page)
    assert blocks, f"{_page_id(page)} has no code blocks"
    folder = tmp_path.resolve()
    shutil.copytree(ROOT / "recipes", folder / "recipes")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    discover()
    builtins = _registry_state()
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for block in blocks:
            where = _where(page, block)
            assert block.lang in LANGUAGES, f"{where}: unknown block language {block.lang!r}"
            importlib.invalidate_caches()
            if block.lang == "python" and block.title:
                compile(block.body, block.title, "exec")
                (folder / block.title).write_text(block.body, encoding="utf-8")
            elif block.lang == "python":
                exec(compile(block.body, where, "exec"), namespace)
            elif block.lang == "bash":
                commands = bash_commands(block.body)
                assert commands, f"{where}: a bash block without a detlab command"
                for command in commands:
                    rc, output = _run(command, folder, builtins)
                    assert rc == 0, f"{where}: `{command.text}` exited {rc}:\n{output[-3000:]}"
            elif block.lang == "console":
                for command, expected in console_session(block.body):
                    rc, output = _run(command, folder, builtins)
                    may_fail = any(line.startswith("error:") for line in expected)
                    assert rc == 0 or (may_fail and rc == 2), (
                        f"{where}: `{command.text}` exited {rc}:\n{output[-3000:]}"
                    )
                    for line in expected:
                        assert line.strip() in output, (
                            f"{where}: `{command.text}` did not print {line!r}; it printed:\n"
                            f"{output[-3000:]}"
                        )
    finally:
        for name in _user_modules(folder):
            del sys.modules[name]
        _set_registry_state(builtins)


def test_tiny_overrides_skip_keys_a_recipe_lacks(tmp_path: Path) -> None:
    recipe = tmp_path / "r.py"
    recipe.write_text(
        "train = dict(max_epochs=5)\n"
        "data = dict(train=dict(type='ImageFiles', paths=['x']), batch_size=2)\n"
    )
    argv = _with_tiny(["train", str(recipe), "data.batch_size=3"])
    assert "train.max_epochs=1" in argv and "data.num_workers=0" in argv
    assert "data.batch_size=4" not in argv  # the command sets it
    assert not any(a.startswith("data.train.num_samples") for a in argv)  # ImageFiles has none


@pytest.mark.parametrize("name", sorted(DRY_RUN))
def test_data_pages_commands_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands of a page that needs real data are valid: known subcommand and options, and
    a recipe they name loads with their overrides (so every override key exists)."""
    from detlab.cli import build_parser

    page = ROOT / "docs" / name
    monkeypatch.chdir(ROOT)
    parser = build_parser()
    commands = [c for b in read_blocks(page) if b.lang == "bash" for c in bash_commands(b.body)]
    assert commands, f"{name} has no detlab commands"
    for command in commands:
        try:
            args = parser.parse_args(command.argv)
        except SystemExit as err:
            pytest.fail(f"{name}: `{command.text}` does not parse (exit {err.code})")
        recipe = getattr(args, "recipe", None)
        if recipe and Path(recipe).is_file():
            load(recipe, list(getattr(args, "overrides", None) or []))
