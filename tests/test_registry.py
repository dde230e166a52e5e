"""Registry: registration, lookup by name / class / dotted path, errors with suggestions."""

import pytest
from torch import nn

from detlab.errors import ConfigError
from detlab.models.heads.base import Head
from detlab.registry import HEADS, LOSSES, Registry, closest


def make_registry():
    reg = Registry("widget")

    @reg.register
    class RoundWidget:
        """A round widget.

        More text."""

        def __init__(self, radius: float = 1.0):
            self.radius = radius

    @reg.register(name="square")
    class SquareWidget:
        def __init__(self, side: float, **extra):
            self.side, self.extra = side, extra

    return reg, RoundWidget, SquareWidget


def test_register_default_name_and_explicit_name():
    reg, Round, Square = make_registry()
    assert reg.get("RoundWidget") is Round
    assert reg.get("square") is Square
    assert ("RoundWidget", "A round widget.") in reg.describe()


def test_taken_name_is_refused():
    reg, _, _ = make_registry()

    class Other:
        pass

    with pytest.raises(ConfigError, match="already taken"):
        reg.register(Other, name="RoundWidget")


def test_unknown_name_lists_closest():
    reg, _, _ = make_registry()
    with pytest.raises(ConfigError) as err:
        reg.get("RoundWidgt")
    assert "Did you mean: RoundWidget" in str(err.value)


@pytest.mark.parametrize(
    "type_",
    ["RoundWidget", "tests.test_registry.ModuleLevelWidget"],
)
def test_build_by_name_and_dotted_path(type_):
    reg, Round, _ = make_registry()
    obj = reg.build({"type": type_, "radius": 3.0})
    assert obj.radius == 3.0


class ModuleLevelWidget:
    def __init__(self, radius: float = 0.0):
        self.radius = radius


def test_build_by_class_and_passthrough_of_objects():
    reg, Round, _ = make_registry()
    assert reg.build({"type": Round}).radius == 1.0
    existing = Round(5.0)
    assert reg.build(existing) is existing


def test_build_unknown_argument_suggests_name():
    reg, _, _ = make_registry()
    with pytest.raises(ConfigError) as err:
        reg.build({"type": "RoundWidget", "radus": 2.0}, key="model.widget")
    msg = str(err.value)
    assert "'radus'" in msg and "did you mean 'radius'" in msg and "model.widget" in msg


def test_build_missing_type_and_bad_dotted_path():
    reg, _, _ = make_registry()
    with pytest.raises(ConfigError, match="no 'type' key"):
        reg.build({"radius": 1.0})
    with pytest.raises(ConfigError, match="cannot be imported"):
        reg.build({"type": "no_such_pkg.Widget"})
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        reg.build({"type": "tests.test_registry.Nope"})


def test_defaults_only_fill_accepted_arguments():
    reg, _, _ = make_registry()
    obj = reg.build({"type": "RoundWidget"}, in_channels=[3])  # not accepted: dropped
    assert obj.radius == 1.0
    sq = reg.build({"type": "square", "side": 2}, in_channels=[3])  # **extra accepts it
    assert sq.extra == {"in_channels": [3]}


def test_heads_registry_refuses_non_head():
    class NotAHead(nn.Module):
        pass

    with pytest.raises(ConfigError, match="subclass of"):
        HEADS.register(NotAHead)

    class FineHead(Head):
        pass

    HEADS.register(FineHead, name="_TestFineHead")
    assert HEADS.get("_TestFineHead") is FineHead
    HEADS._items.pop("_TestFineHead")


def test_reregistering_same_definition_is_allowed():
    reg = Registry("thing")
    ns1, ns2 = {"__name__": "m"}, {"__name__": "m"}
    exec("class A: pass", ns1)
    exec("class A: pass", ns2)
    reg.register(ns1["A"])
    reg.register(ns2["A"])  # same module + qualname: a reloaded recipe, not a clash
    assert reg.get("A") is ns2["A"]


def test_closest_substring():
    assert closest("Tversky", ["FocalTverskyLoss", "DiceLoss", "TverskyLoss"])[0] == "TverskyLoss"


def test_losses_registry_is_discoverable():
    assert "FocalTverskyLoss" in LOSSES.names()


def module_level_function(radius: float = 2.0):
    return ModuleLevelWidget(radius)


@pytest.mark.parametrize(
    "type_, message",
    [
        ("os.system", "standard library"),
        ("builtins.eval", "standard library"),
        ("subprocess.Popen", "standard library"),
        ("os.remove", "standard library"),
        ("tests.test_registry.Head", "defined in module 'detlab.models.heads.base'"),
        ("tests.test_registry.pytest", "resolves to module"),
        ("tests.test_registry.closest", "defined in module 'detlab.registry'"),
    ],
)
def test_dotted_path_must_name_own_class_or_function(type_, message):
    reg = Registry("widget")
    with pytest.raises(ConfigError, match=message):
        reg.get(type_)


def test_dotted_path_to_module_level_function_builds():
    built = Registry("widget").build({"type": "tests.test_registry.module_level_function"})
    assert built.radius == 2.0
