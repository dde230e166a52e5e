"""Every override that a recipe's docstring or the docs advertise builds: the recipe loads with
it, the task (model, losses, evaluator) is built, and a data override gives a training batch.

Overrides are collected from ``detlab ...`` command lines (recipe docstrings, fenced blocks and
inline code of docs/*.md, docs/guides/*.md and README.md; a ``console`` command whose expected
output is an ``error:`` is a documented failure and skipped) and from the prose of recipe
docstrings and of the pages in :data:`PROSE_PAGES` (``'key=value'`` tokens). A ``detlab
eval/sweep/analyze/predict runs/<name>/...`` command belongs to ``recipes/<name>.py``; sweep
values (``a=1,2,3``) are tried one by one. Overrides naming files (a ``/`` in the value) and
those of ``detlab show`` are only loaded; pretrained backbones are built without weights
(no download in a test). Before this test,
``'model.neck.levels=(3,4,5)'`` (recipes/helmet_yolo_p2.py) failed: PAN kept four
out_channels for three levels.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest

from detlab.errors import ConfigError
from detlab.recipe import apply_overrides, load, parse_override

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "docs"))
from docs_blocks import console_session, read_blocks  # noqa: E402

RECIPES = ROOT / "recipes"
PAGES = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs" / "guides").glob("*.md")) \
    + [ROOT / "README.md"]
# Pages whose prose advertises overrides of one recipe without a command line around them.
PROSE_PAGES = {"docs/detection-yolo.md": "helmet_yolo_p2.py",
               "docs/guides/tiny_objects.md": "helmet_yolo_p2.py"}
TOKEN = re.compile(r"(?<![\w.])(['\"]?)([a-z_]+(?:\.[A-Za-z_0-9]+)+=)")
COMMAND = re.compile(r"detlab (?:train|show|check-data|eval|sweep|predict|analyze) [^`\n]+")
PLACEHOLDERS = {"...", "DIR", "x"}
TINY = ["data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
        "data.train.img_size=64", "data.val.image_size=64", "data.val.img_size=64",
        "data.batch_size=2", "data.num_workers=0"]


def _recipe_of(argv: list[str]) -> str | None:
    if len(argv) < 2:
        return None
    target = argv[1]
    if argv[0] in ("train", "show", "check-data"):
        name = Path(target).name
    else:
        m = re.search(r"runs/([\w-]+)/", target)
        name = f"{m[1]}.py" if m else ""
    return name if (RECIPES / name).is_file() else None


def _command_overrides(line: str) -> tuple[str | None, list[list[str]], bool]:
    """Recipe, override sets (one per sweep value) of one command line, and whether the
    command builds the recipe (``detlab show`` only loads and prints it)."""
    try:
        words = shlex.split(line.replace("\\\n", " "), comments=True)
    except ValueError:
        return None, [], False
    if not words or words[0] != "detlab":
        return None, [], False
    argv = words[1:]
    recipe = _recipe_of(argv)
    # ensemble.<knob>: merge settings of a sweep over several checkpoints, checked by the
    # ensemble sweep itself (tests/engine/test_ensemble.py), not recipe keys
    overrides = [a for a in argv[2:] if "=" in a and not a.startswith("-")
                 and not a.startswith("ensemble.")]
    if argv[0] != "sweep":
        return recipe, [overrides], argv[0] != "show"
    sets = []
    for o in overrides:
        key, _, values = o.partition("=")
        sets += [[f"{key}={v}"] for v in values.split(",")]
    return recipe, sets, True


def _tokens(text: str) -> list[str]:
    """``key=value`` tokens of prose: a quoted one up to its closing quote, else up to a space
    or backtick, without trailing punctuation; Python code (``dict(...``) is no override."""
    out = []
    for m in TOKEN.finditer(text):
        rest = text[m.end():]
        if m[1]:
            value = rest.split(m[1], 1)[0]
        else:
            value = re.split(r"[\s`]", rest, maxsplit=1)[0].rstrip(".,;:")
            while value.endswith(")") and value.count(")") > value.count("("):
                value = value[:-1]
        if value and "dict(" not in value and value.count("(") == value.count(")"):
            out.append(m[2] + value)
    return out


def _lines(text: str) -> list[str]:
    return [m[0] for m in COMMAND.finditer(text.replace("\\\n", " "))]


def collect() -> dict[tuple[str, tuple[str, ...]], tuple[str, bool]]:
    """``{(recipe file name, overrides): (where, build)}`` of every advertised override set;
    ``build``: the recipe is built with them (False: only loaded, ``detlab show``)."""
    found: dict[tuple[str, tuple[str, ...]], tuple[str, bool]] = {}

    def add(recipe: str | None, sets: list[list[str]], build: bool, where: str) -> None:
        for s in sets:
            s = [o for o in s if o.partition("=")[2] not in PLACEHOLDERS]
            if recipe and s:
                key = (recipe, tuple(s))
                found[key] = (found.get(key, (where, False))[0],
                              build or found.get(key, ("", False))[1])

    for path in sorted(RECIPES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for line in _lines(doc):
            add(*_command_overrides(line), f"recipes/{path.name} docstring")
        prose = COMMAND.sub("", doc.replace("\\\n", " "))
        add(path.name, [[t] for t in _tokens(prose)], True, f"recipes/{path.name} docstring")
    for page in PAGES:
        rel = str(page.relative_to(ROOT))
        text = page.read_text(encoding="utf-8")
        failing = {c.text for b in read_blocks(page) if b.lang == "console"
                   for c, expected in console_session(b.body)
                   if any(e.startswith("error:") for e in expected)}
        for line in _lines(text):
            if not any(line in f or f in line for f in failing):
                add(*_command_overrides(line), rel)
        if rel in PROSE_PAGES:
            prose = COMMAND.sub("", text)
            add(PROSE_PAGES[rel], [[t] for t in _tokens(prose)], True, rel)
    return found


CASES = collect()


def test_the_helmet_recipes_advertised_overrides_are_collected():
    helmet = {o for (r, s) in CASES if r == "helmet_yolo_p2.py" for o in s}
    assert {"model.neck.levels=(3,4,5)", "model.head.assigner=ATSSAssigner",
            "data.sampler=None", "model.head.postprocessor.iou_threshold=0.5"} <= helmet


def _tiny(recipe: dict, overrides: tuple[str, ...]) -> list[str]:
    keys = {parse_override(o)[0] for o in overrides}
    extra = []
    for o in TINY:
        if parse_override(o)[0] in keys:
            continue
        try:
            apply_overrides(dict(recipe), [o])
        except ConfigError:
            continue
        extra.append(o)
    return extra


@pytest.mark.parametrize("recipe,overrides", sorted(CASES), ids=[
    f"{r}:{' '.join(s)}" for r, s in sorted(CASES)])
def test_advertised_override_builds(recipe, overrides, monkeypatch):
    import torch

    from detlab.data.datamodule import DataModule
    from detlab.engine.task import DetlabTask

    monkeypatch.chdir(ROOT)
    where, build = CASES[(recipe, overrides)]
    try:
        loaded = load(RECIPES / recipe, list(overrides))
    except ConfigError as err:
        pytest.fail(f"{where}: `{' '.join(overrides)}` does not load on {recipe}: {err}")
    if not build or any("/" in o.partition("=")[2] for o in overrides):
        return  # `detlab show`, or files a test does not have (data.root=/data/Task)
    offline = []
    if (loaded.get("model") or {}).get("backbone", {}).get("pretrained") is True:
        offline = ["model.backbone.pretrained=False"]  # no download in a test
        loaded = load(RECIPES / recipe, list(overrides) + offline)
    DetlabTask(loaded)  # model, head, losses, assigner, evaluator
    train_cfg = loaded.section("data").get("train") or {}
    needs_files = any(k in train_cfg and train_cfg[k] is None
                      for k in ("ann_file", "img_dir", "root"))  # the user's paths, unset
    if any(o.startswith("data.") for o in overrides) and not needs_files:
        torch.manual_seed(0)
        tiny = load(RECIPES / recipe, list(overrides) + offline + _tiny(loaded, overrides))
        batch = next(iter(DataModule(tiny.section("data")).train_dataloader()))
        assert batch.images.ndim == 4
