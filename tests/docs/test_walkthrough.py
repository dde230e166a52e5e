"""Pages that quote the code stay in step with it: each walk-through covers every line of its
recipe, and the recipes reference lists every ``train``/``data`` key with its default."""

import re
from pathlib import Path

import pytest

from detlab.defaults import DATA_DEFAULTS, TRAIN_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SNIPPET = re.compile(r'^```python linenums="(\d+)"\n--8<-- "([^":]+):(\d+):(\d+)"\n```', re.M)


# (walk-through page under docs/, the recipe it quotes from start to end)
WALKTHROUGHS = [
    ("segmentation.md", "recipes/fracture_unet.py"),
    ("detection-yolo.md", "recipes/helmet_yolo_p2.py"),
    ("detection-faster-rcnn.md", "recipes/digits_faster_rcnn.py"),
    ("text-detection.md", "recipes/receipt_dbnet.py"),
]


@pytest.mark.parametrize("page_name, recipe", WALKTHROUGHS)
def test_walkthrough_covers_the_recipe_line_by_line(page_name, recipe):
    page = (DOCS / page_name).read_text(encoding="utf-8")
    pieces = [(int(n), path, int(a), int(b)) for n, path, a, b in SNIPPET.findall(page)]
    assert pieces, "no snippet blocks found"
    assert {p[1] for p in pieces} == {recipe}
    recipe_lines = (ROOT / recipe).read_text().splitlines()
    expected_start = 1
    for linenums, _, start, end in pieces:
        assert linenums == start, f"linenums={linenums} shown for lines {start}-{end}"
        assert start == expected_start, f"lines {expected_start}-{start - 1} are not shown"
        assert end >= start
        expected_start = end + 1
    assert expected_start - 1 == len(recipe_lines), (
        f"the walk-through stops at line {expected_start - 1} of {len(recipe_lines)}: "
        f"update docs/{page_name} after editing {recipe}"
    )


def _table(section: str) -> dict[str, str]:
    """``{key: default cell}`` of the table under the ``## `section` `` heading."""
    page = (DOCS / "recipes.md").read_text(encoding="utf-8")
    body = page.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w]+)` \| `([^|]+)` \|", body, re.M)
    return dict(rows)


@pytest.mark.parametrize("section, defaults", [("train", TRAIN_DEFAULTS), ("data", DATA_DEFAULTS)])
def test_recipes_reference_lists_every_key_with_its_default(section, defaults):
    table = _table(section)
    assert set(table) == set(defaults), (
        f"docs/recipes.md `{section}` table: missing {sorted(set(defaults) - set(table))}, "
        f"unknown {sorted(set(table) - set(defaults))}"
    )
    for key, cell in table.items():
        assert eval(cell, {"dict": dict}) == defaults[key], f"{section}.{key}: docs say {cell}"
