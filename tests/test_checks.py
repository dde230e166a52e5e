"""The shared argument checks: accepted values come back, refused ones name owner and arg."""

import pytest

from detlab.checks import check_bool, check_choice, check_float, check_int, check_int_list
from detlab.errors import ConfigError


def test_check_float_ranges_and_messages():
    assert check_float("A", "x", 1) == 1.0 and isinstance(check_float("A", "x", 1), float)
    assert check_float("A", "x", 0.0, low=0.0) == 0.0
    with pytest.raises(ConfigError, match=r"A: x must be a number > 0, got 0"):
        check_float("A", "x", 0, low=0, low_open=True)
    with pytest.raises(ConfigError, match=r"< 1, got 1"):
        check_float("A", "x", 1, high=1, high_open=True)
    for bad in (True, "1", float("nan"), float("inf"), None):
        with pytest.raises(ConfigError, match="A: x must be a number"):
            check_float("A", "x", bad)


def test_check_int_bool_choice_list():
    assert check_int("B", "n", 3, low=1) == 3
    for bad in (True, 2.0, 0):
        with pytest.raises(ConfigError, match=r"B: n must be an int >= 1"):
            check_int("B", "n", bad, low=1)
    assert check_bool("B", "f", False) is False
    with pytest.raises(ConfigError, match="True or False, got 1"):
        check_bool("B", "f", 1)
    assert check_choice("B", "c", True, (True, False)) is True
    with pytest.raises(ConfigError, match=r"one of \[0, 1\], got True"):
        check_choice("B", "c", True, (0, 1))
    # and the other way round: 1 == True, yet 1 is not the choice True
    with pytest.raises(ConfigError, match=r"one of \[None, True, False\], got 1"):
        check_choice("B", "c", 1, (None, True, False))
    assert check_choice("B", "c", 1, (1, "x")) == 1 and check_choice("B", "c", None, (None,)) is None
    assert check_int_list("B", "l", (1, 2), low=1) == [1, 2]
    with pytest.raises(ConfigError, match="list of 2 ints >= 1"):
        check_int_list("B", "l", [1, 0], low=1, length=2)
    with pytest.raises(ConfigError, match="list of ints"):
        check_int_list("B", "l", "12")


def test_huge_int_is_not_a_number():
    from detlab.checks import is_number

    assert not is_number(10**400)
    with pytest.raises(ConfigError, match="must be a number"):
        check_float("A", "x", 10**400)


def test_check_section_strips_type_and_names_unknown_keys():
    from detlab.checks import check_section

    assert check_section("inference.tta", {"type": "x", "flips": ["h"]}, ["flips"]) == {
        "flips": ["h"]}
    with pytest.raises(ConfigError, match=r"inference.tta=3: expected a dict"):
        check_section("inference.tta", 3, ["flips"])
    with pytest.raises(ConfigError, match=r"inference.tta: unknown key\(s\) \['flip'\]; "
                                          r"expected \['flips', 'scales'\]"):
        check_section("inference.tta", {"flip": 1}, ["scales", "flips"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['type'\]"):
        check_section("inference", {"type": 1}, ["tta"], ignore=())
