"""Variants in one line (``parent``), component type overrides that keep their arguments, the
registry's public name lookup and its cheap discovery."""

import ast
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detlab.errors import ConfigError
from detlab.losses.iou import CIoULoss, WIoULoss
from detlab.recipe import load, to_jsonable
from detlab.registry import LOSSES, REGISTRIES, Registry

ROOT = Path(__file__).resolve().parents[1]

BASE = """
model = dict(type="Model", head=dict(
    type="X",
    box_loss=dict(type="InnerIoULoss", weight=7.5, ratio=0.8, eps=1e-6),
    cls_loss=dict(type="SigmoidBCELoss", weight=0.5),
))
data = dict(batch_size=8)
train = dict(max_epochs=15)
evaluator = dict(type="E", iou=0.5)
"""


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.py"
    path.write_text(BASE)
    return path


# -- string override of a component dict ------------------------------------------------------
def test_type_override_keeps_the_arguments_the_new_class_accepts(base, caplog):
    with caplog.at_level(logging.WARNING, logger="detlab.recipe"):
        recipe = load(base, ["model.head.box_loss=WIoULoss"])
    box = recipe["model"]["head"]["box_loss"]
    # WIoULoss(alpha, delta, momentum, weight, reduction, eps, name): ratio is InnerIoULoss's
    assert box == {"type": "WIoULoss", "weight": 7.5, "eps": 1e-6}
    loss = LOSSES.build(box)
    assert isinstance(loss, WIoULoss) and loss.weight == 7.5 and loss.eps == 1e-6
    lines = [r.getMessage() for r in caplog.records if r.name == "detlab.recipe"]
    assert len(lines) == 1
    assert "model.head.box_loss=WIoULoss" in lines[0]
    assert "dropped ratio=0.8" in lines[0] and "WIoULoss does not accept" in lines[0]
    assert "weight=7.5" in lines[0]  # what was kept is said too


def test_type_override_with_nothing_to_drop_is_silent(base, caplog):
    with caplog.at_level(logging.WARNING, logger="detlab.recipe"):
        recipe = load(base, ["model.head.cls_loss=CIoULoss"])
    assert recipe["model"]["head"]["cls_loss"] == {"type": "CIoULoss", "weight": 0.5}
    assert not [r for r in caplog.records if r.name == "detlab.recipe"]


def test_type_override_to_an_unknown_name_says_everything_was_dropped(base, caplog):
    with caplog.at_level(logging.WARNING, logger="detlab.recipe"):
        recipe = load(base, ["model.head.cls_loss=NoSuchLoss"])
    assert recipe["model"]["head"]["cls_loss"] == {"type": "NoSuchLoss"}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "detlab.recipe"]
    assert "dropped weight=0.5" in line and "'NoSuchLoss' is not a registered name" in line
    with pytest.raises(ConfigError, match="unknown loss type 'NoSuchLoss'"):
        LOSSES.build(recipe["model"]["head"]["cls_loss"])


def test_type_override_keeps_everything_for_a_class_taking_kwargs(tmp_path):
    (tmp_path / "kw_parts.py").write_text(textwrap.dedent("""
        class Anything:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
    """))
    path = tmp_path / "r.py"
    path.write_text(BASE)
    recipe = load(path, ["model.head.box_loss=kw_parts.Anything"])
    assert recipe["model"]["head"]["box_loss"] == {
        "type": "kw_parts.Anything", "weight": 7.5, "ratio": 0.8, "eps": 1e-6,
    }


# -- parent() -----------------------------------------------------------------------------------
def test_parent_gives_the_four_sections_in_one_line(base, tmp_path):
    variant = tmp_path / "sub" / "variant.py"
    variant.parent.mkdir()
    variant.write_text(textwrap.dedent("""
        from detlab.recipe import parent
        model, data, train, evaluator = parent("../base.py")
        train["max_epochs"] = 30
        model["head"]["box_loss"]["weight"] = 1.0
    """))
    recipe = load(variant)
    assert recipe["train"]["max_epochs"] == 30
    assert recipe["model"]["head"]["box_loss"]["weight"] == 1.0
    assert recipe["evaluator"] == {"type": "E", "iou": 0.5}
    assert recipe["data"]["batch_size"] == 8
    parent_recipe = load(base)
    assert parent_recipe["train"]["max_epochs"] == 15  # deep copies: the parent is untouched
    assert parent_recipe["model"]["head"]["box_loss"]["weight"] == 7.5
    assert len(recipe.files) == 2  # both texts kept for provenance


def test_parent_with_named_sections_and_its_errors(base, tmp_path):
    some = tmp_path / "some.py"
    some.write_text('from detlab.recipe import parent\nmodel, train = parent("base.py", "model", '
                    '"train")\n')
    assert set(load(some)) >= {"model", "train"} and "evaluator" not in load(some)

    missing = tmp_path / "missing.py"
    missing.write_text('from detlab.recipe import parent\nmodel, data, train, evaluator = '
                       'parent("nope.py")\n')
    with pytest.raises(ConfigError, match=r"parent: parent recipe not found: .*nope\.py "
                                          r"\(named in .*missing\.py"):
        load(missing)

    (tmp_path / "small.py").write_text("model = dict(type='M')\ntrain = dict(max_epochs=1)\n")
    lacking = tmp_path / "lacking.py"
    lacking.write_text('from detlab.recipe import parent\nmodel, data, train, evaluator = '
                       'parent("small.py")\n')
    with pytest.raises(ConfigError, match=r"small\.py has no section\(s\) 'data', 'evaluator' "
                                          r"\(it has: model, train\)"):
        load(lacking)


def test_shipped_variants_use_parent_and_resolve():
    variants = [p for p in (ROOT / "recipes").glob("*.py") if "parent(" in p.read_text()]
    assert len(variants) >= 6
    for path in variants:
        assert "_base" not in path.read_text(), path
    cctv = load(ROOT / "recipes" / "helmet_yolo.py")
    assert cctv["model"]["backbone"]["out_indices"] == (2, 3, 4)
    assert cctv["model"]["head"]["box_loss"] == load(ROOT / "recipes" / "helmet_yolo_p2.py")[
        "model"]["head"]["box_loss"]


# -- registry: public lookup by object, cheap discovery -----------------------------------------
def test_name_of_and_class_ref_use_the_public_accessor():
    assert LOSSES.name_of(CIoULoss) == "CIoULoss"
    assert LOSSES.name_of(object) is None
    reg = Registry("thing")
    assert reg.name_of(CIoULoss) is None
    assert to_jsonable({"type": CIoULoss}) == {"type": "CIoULoss"}


_COUNT = """
import json, sys
import detlab.registry as r
from detlab.registry_index import source_index
before = len(sys.modules)
r.LOSSES.get("SmoothL1Loss")
one = {"timm": "timm" in sys.modules, "heads": "detlab.models.heads.yolo" in sys.modules}
r.discover()
print(json.dumps({
    "one": one, "before": before, "after": len(sys.modules),
    "lightning": sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning")),
    "monai": sorted(m for m in sys.modules if m.split(".")[0] == "monai"),
    "commands": sorted(m for m in sys.modules if m.startswith("detlab.commands")),
    "names": {k: v.names() for k, v in r.REGISTRIES.items()},
    "index": {var: sorted(names) for var, names in source_index().items()},
}))
"""


def _decorated_names() -> dict[str, set[str]]:
    """Oracle read from the source: every ``@<REG>.register`` (no name=) class or function."""
    kinds = {key.upper(): key for key in REGISTRIES}
    found: dict[str, set[str]] = {}
    for file in (ROOT / "detlab").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                continue
            for dec in node.decorator_list:
                call = dec.func if isinstance(dec, ast.Call) else dec
                if (isinstance(call, ast.Attribute) and call.attr == "register"
                        and isinstance(call.value, ast.Name) and call.value.id in kinds
                        and not (isinstance(dec, ast.Call) and dec.keywords)):
                    found.setdefault(kinds[call.value.id], set()).add(node.name)
    return found


def test_discovery_imports_only_component_modules_and_one_name_one_module():
    out = subprocess.run([sys.executable, "-c", _COUNT], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    info = json.loads(out.stdout)
    # a name found through the source index imports its module, not every component
    assert info["one"] == {"timm": False, "heads": False}
    assert info["lightning"] == [] and info["monai"] == [] and info["commands"] == []
    for kind, names in _decorated_names().items():
        assert names <= set(info["names"][kind]), (kind, names - set(info["names"][kind]))
    assert {"AdamW", "SGD", "Adam"} <= set(info["names"]["optimizers"])
    assert len(info["names"]["losses"]) >= 17 and len(info["names"]["datasets"]) >= 17
    # the index knows every registered name, so a lookup never needs the full import
    for key, names in info["names"].items():
        assert info["index"].get(key.upper(), []) == names, key


def test_unknown_name_error_still_lists_every_registered_name():
    with pytest.raises(ConfigError) as err:
        LOSSES.get("CIoULos")
    msg = str(err.value)
    assert "Did you mean: CIoULoss" in msg
    assert all(name in msg for name in ("WIoULoss", "DBLoss", "FocalTverskyLoss"))


def test_the_source_index_knows_every_registry():
    import detlab.registry as registry
    from detlab.registry_index import REGISTRY_NAMES

    defined = {name for name, obj in vars(registry).items()
               if isinstance(obj, registry.Registry)}
    assert defined == set(REGISTRY_NAMES)
