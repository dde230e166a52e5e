"""Recipes: loading, parents, typed overrides, JSON round trip, errors."""

import json
import textwrap

import pytest

from detlab.errors import ConfigError
from detlab.recipe import apply_overrides, from_source, load, parse_value

BASE = """
model = dict(type="Model", head=dict(type="X", loss=dict(terms=[dict(type="A", alpha=0.3)])),
             backbone=dict(type="B", out_indices=(0, 1)))
data = dict(batch_size=8, sampler=None, flag=True, name="spine")
train = dict(max_epochs=15, lr=1e-4)
_private = dict(hidden=1)
helper_number = 3
"""


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.py"
    path.write_text(BASE)
    return path


def test_load_keeps_public_dict_sections(base):
    recipe = load(base)
    assert set(recipe) == {"model", "data", "train"}
    assert recipe.name == "base"
    assert recipe.files and next(iter(recipe.files.values()))["text"] == BASE


@pytest.mark.parametrize(
    "override, key_path, expected",
    [
        ("train.max_epochs=3", ("train", "max_epochs"), 3),
        ("train.lr=0.5", ("train", "lr"), 0.5),
        ("train.lr=1", ("train", "lr"), 1.0),
        ("model.head.loss.terms.0.alpha=0.5", ("model", "head", "loss", "terms", 0, "alpha"), 0.5),
        ("data.sampler=dict(type='S')", ("data", "sampler"), "dict(type='S')"),
        ("data.sampler={'type': 'S'}", ("data", "sampler"), {"type": "S"}),
        ("data.flag=false", ("data", "flag"), False),
        ("data.name=None", ("data", "name"), None),
        ("data.name=vertebra", ("data", "name"), "vertebra"),
        ("model.backbone.out_indices=[1, 2, 3]", ("model", "backbone", "out_indices"), [1, 2, 3]),
        ("+train.new_key=7", ("train", "new_key"), 7),
    ],
)
def test_typed_overrides(base, override, key_path, expected):
    recipe = load(base, [override])
    node = recipe
    for k in key_path:
        node = node[k]
    assert node == expected
    assert type(node) is type(expected)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_epoch=3", "did you mean 'train.max_epochs'"),
        ("model.head.loss.terms.1.alpha=1", "not a valid index"),
        ("train.max_epochs=abc", "expected an integer"),
        ("train.max_epochs=2.5", "expected an integer"),
        ("data.flag=3", "expected a boolean"),
        ("model.backbone.out_indices=3", "expected a list"),
        ("train.max_epochs", "key=value"),
    ],
)
def test_bad_overrides(base, override, message):
    with pytest.raises(ConfigError, match=message):
        load(base, [override])


def test_missing_file_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(type='X'\n")
    with pytest.raises(ConfigError, match=r"syntax error in recipe .*bad.py, line"):
        load(bad)
    boom = tmp_path / "boom.py"
    boom.write_text("x = 1\nmodel = dict(a=1 / 0)\n")
    with pytest.raises(ConfigError, match=r"boom.py, line 2: ZeroDivisionError"):
        load(boom)


def test_variant_loads_parent_and_edits(base, tmp_path):
    variant = tmp_path / "sub" / "variant.py"
    variant.parent.mkdir()
    variant.write_text(textwrap.dedent("""
        from detlab.recipe import load_parent
        _base = load_parent("../base.py")
        model, data, train = _base["model"], _base["data"], _base["train"]
        train["max_epochs"] = 30
    """))
    recipe = load(variant, ["data.batch_size=2"])
    assert recipe["train"]["max_epochs"] == 30
    assert recipe["data"]["batch_size"] == 2
    assert load(base)["train"]["max_epochs"] == 15  # parent untouched
    assert len(recipe.files) == 2  # both files' texts are kept for provenance


def test_class_defined_in_recipe_round_trips_through_provenance(tmp_path):
    path = tmp_path / "own.py"
    path.write_text(textwrap.dedent("""
        class MyLoss:
            def __init__(self, w=1.0):
                self.w = w
        model = dict(loss=dict(type=MyLoss, w=2.0))
    """))
    recipe = load(path)
    prov = json.loads(json.dumps(recipe.provenance()))
    resolved = json.loads(prov["resolved"])
    type_path = resolved["model"]["loss"]["type"]
    assert type_path.endswith(".MyLoss")
    import sys

    sys.modules.pop(type_path.rsplit(".", 1)[0])  # as in a fresh process
    path.unlink()  # the checkpoint alone must suffice
    from detlab.registry import LOSSES

    untrusted = from_source(prov)  # the default executes nothing stored in the provenance
    assert type_path.rsplit(".", 1)[0] not in sys.modules
    with pytest.raises(ConfigError, match="cannot be imported"):
        LOSSES.build(untrusted["model"]["loss"])
    rebuilt = from_source(prov, trust=True)
    obj = LOSSES.build(rebuilt["model"]["loss"])
    assert type(obj).__name__ == "MyLoss" and obj.w == 2.0


def test_provenance_paths_are_absolute(tmp_path, monkeypatch):
    (tmp_path / "my_mod.py").write_text("class Part:\n    pass\n")
    (tmp_path / "r.py").write_text("model = dict(part=dict(type='my_mod.Part'))\n")
    monkeypatch.chdir(tmp_path)
    recipe = load("r.py")
    from detlab.registry import MODELS

    MODELS.build(recipe["model"]["part"])  # imports my_mod, as building the model does
    prov = recipe.provenance()
    assert prov["path"] == str(tmp_path / "r.py") and prov["folder"] == str(tmp_path)
    assert prov["modules"] == {"my_mod": str(tmp_path / "my_mod.py")}


def test_parse_value_literals():
    assert parse_value("(2, 3)") == (2, 3)
    assert parse_value("null") is None
    assert parse_value("True") is True
    assert parse_value("1e-4") == 1e-4
    assert parse_value("resnet18") == "resnet18"


def test_apply_overrides_add_nested():
    data = {"a": {}}
    apply_overrides(data, ["+a.b.c=1"])
    assert data == {"a": {"b": {"c": 1}}}


def test_train_and_data_defaults_are_filled_and_overridable(base):
    recipe = load(base, ["train.precision=16-mixed", "data.num_workers=0"])
    assert recipe["train"]["precision"] == "16-mixed"
    assert recipe["train"]["max_epochs"] == 15  # the recipe's value wins over the default
    assert recipe["data"]["num_workers"] == 0 and recipe["data"]["val_batch_size"] is None


def test_override_of_constructor_argument_not_written_in_recipe(tmp_path):
    path = tmp_path / "r.py"
    path.write_text("model = dict(loss=dict(type='FocalTverskyLoss', alpha=0.3))\n")
    recipe = load(path, ["model.loss.gamma=0.5"])
    assert recipe["model"]["loss"]["gamma"] == 0.5
    with pytest.raises(ConfigError, match="no key 'model.loss.gama'"):
        load(path, ["model.loss.gama=0.5"])


def test_lowercase_none_is_a_string_and_recipe_folder_is_importable(tmp_path):
    (tmp_path / "my_parts.py").write_text("class Part:\n    def __init__(self, k=1):\n        self.k = k\n")
    path = tmp_path / "r.py"
    path.write_text("model = dict(part=dict(type='my_parts.Part'), gate='additive', name='x')\n")
    recipe = load(path, ["model.gate=none", "model.name=None"])
    assert recipe["model"]["gate"] == "none" and recipe["model"]["name"] is None
    from detlab.registry import MODELS

    assert MODELS.build({"type": "my_parts.Part", "k": 3}).k == 3  # importable beside the recipe
