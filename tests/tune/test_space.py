"""Search-space parsing and its errors; the tune section in a recipe (show, train keys)."""

import json

import pytest

from detlab.cli import main
from detlab.errors import ConfigError
from detlab.recipe import load, parse_value
from detlab.tune.space import format_value, parse_param, space_from_recipe

from tune_utils import RECIPE, TINY, write_recipe


def test_parse_each_distribution():
    p = parse_param("train.optimizer.lr=log_uniform(1e-5, 5e-4)")
    assert (p.key, p.kind, p.low, p.high) == ("train.optimizer.lr", "log_uniform", 1e-5, 5e-4)
    p = parse_param("data.batch_size=int_range(2, 8, step=2)")
    assert (p.kind, p.low, p.high, p.step) == ("int_range", 2, 8, 2)
    assert p.grid_values() == [2, 4, 6, 8]
    p = parse_param("model.backbone.name=choice('resnet10t', 'resnet18')")
    assert p.values == ("resnet10t", "resnet18")
    p = parse_param("model.head.loss.terms.0.alpha=grid(0.3, 0.5, 0.7)")
    assert (p.kind, p.grid_values()) == ("grid", [0.3, 0.5, 0.7])
    with pytest.raises(ConfigError, match="a grid needs choice/grid/int_range"):
        parse_param("x=uniform(0, 1)").grid_values()


@pytest.mark.parametrize("text, message", [
    ("a.b=loguniform(1e-5, 1e-3)", "unknown distribution 'loguniform' \\(did you mean "
                                   "'log_uniform'\\?\\)"),
    ("a.b=uniform(0.7, 0.3)", "needs two numbers low < high"),
    ("a.b=log_uniform(0, 1)", "needs low > 0"),
    ("a.b=int_range(1.5, 4)", "needs integers"),
    ("a.b=choice()", "needs at least one value"),
    ("a.b=uniform(0.1, x)", "literals only"),
    ("a.b=0.5", "is not a distribution"),
    ("a.b", "expected KEY=DISTRIBUTION"),
])
def test_bad_distribution_is_a_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_param(text)


def test_unknown_key_names_the_closest_key():
    recipe = load(RECIPE)
    with pytest.raises(ConfigError, match="did you mean 'model.head.loss.terms.0.alpha'"):
        space_from_recipe(recipe, ["model.head.loss.terms.0.alpah=uniform(0.3, 0.7)"])
    with pytest.raises(ConfigError, match="expected a number"):
        space_from_recipe(recipe, ["model.head.loss.terms.0.alpha=choice(0.3, 'big')"])
    with pytest.raises(ConfigError, match="empty search space"):
        space_from_recipe(recipe, [])


def test_recipe_tune_section(tmp_path, capsys):
    path = write_recipe(tmp_path, (
        "tune = dict(space={'model.head.loss.terms.0.alpha': uniform(0.3, 0.7),\n"
        "                   'model.head.loss.terms.0.gamma': 'grid(0.5, 0.75, 1.0)'},\n"
        "            objective='train/loss', trials=3)\n"))
    recipe = load(path)
    params = space_from_recipe(recipe, ["model.head.loss.terms.0.gamma=choice(0.5, 1.0)"])
    assert [(p.key, p.kind) for p in params] == [
        ("model.head.loss.terms.0.alpha", "uniform"), ("model.head.loss.terms.0.gamma", "choice")]
    assert main(["show", str(path)]) == 0  # the section is plain JSON
    shown = json.loads(capsys.readouterr().out)
    assert shown["tune"]["space"]["model.head.loss.terms.0.alpha"] == {
        "dist": "uniform", "low": 0.3, "high": 0.7}
    # training ignores the section (it is kept in the run's recipe.json)
    assert main(["train", str(path), *TINY, "--work-dir", str(tmp_path / "runs")]) == 0
    run = json.loads((tmp_path / "runs/tiny_tune/version_0/recipe.json").read_text())
    assert run["tune"]["trials"] == 3
    bad = write_recipe(tmp_path, "tune = dict(trails=3, space={})\n", "bad.py")
    with pytest.raises(ConfigError, match="unknown key 'trails' in recipe 'tune' \\(did you "
                                          "mean 'trials'\\?\\)"):
        space_from_recipe(load(bad))


@pytest.mark.parametrize("value", [0.000123456789, 3, "resnet18", "none", True, [16, 8], 0.0])
def test_format_value_reads_back(value):
    back = parse_value(format_value(value))
    assert back == pytest.approx(value, rel=1e-5) if isinstance(value, float) else back == value
