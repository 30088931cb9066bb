"""The one resolve-and-validate step: presets fill in, bad values stop before any compute."""

import pytest

from normlib.params import Param, ParameterError, ParamSpec, parse_cli_value

SPEC = ParamSpec(
    params=(
        Param("depth", "int", "depth", minimum=2),
        Param("lr", "float", "learning rate", minimum=0.0),
        Param("norms", "str_list", "normalizers", choices=("bn", "gn", "ln")),
        Param("group_size", "optional_int", "group size", minimum=1),
        Param("widths", "int_list", "widths", minimum=1),
        Param("flip", "bool", "flip"),
    ),
    presets={
        "book": {"depth": 8, "lr": 0.1, "norms": ["bn"], "group_size": None, "widths": [8, 16], "flip": False},
        "paper": {"depth": 56, "lr": 0.1, "norms": ["bn", "gn"], "group_size": 4, "widths": [32, 64], "flip": True},
    },
)


def test_presets_fill_in_and_overrides_apply():
    assert SPEC.resolve()["depth"] == 8
    paper = SPEC.resolve("paper")
    assert paper["preset"] == "paper" and paper["group_size"] == 4 and paper["flip"] is True
    config = SPEC.resolve("book", depth=20, norms="bn,ln", widths=["4", 8])
    assert config["depth"] == 20 and config["norms"] == ["bn", "ln"] and config["widths"] == [4, 8]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"depht": 3}, r"unknown parameter 'depht'; allowed: preset, depth, lr"),
        ({"depth": 1}, r"parameter 'depth': invalid value 1.*>= 2"),
        ({"depth": 2.5}, r"parameter 'depth'.*an integer"),
        ({"depth": True}, r"parameter 'depth'"),
        ({"lr": "fast"}, r"parameter 'lr'.*a number"),
        ({"norms": ["bn", "xx"]}, r"parameter 'norms'.*'xx'.*bn, gn, ln"),
        ({"norms": []}, r"parameter 'norms'.*non-empty"),
        ({"norms": ["bn", "bn"]}, r"parameter 'norms'.*duplicate"),
        ({"group_size": 0}, r"parameter 'group_size'"),
        ({"flip": "yes"}, r"parameter 'flip'.*True or False"),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_allowed(overrides, match):
    with pytest.raises(ParameterError, match=match):
        SPEC.resolve("book", **overrides)


def test_unknown_preset():
    with pytest.raises(ParameterError, match=r"parameter 'preset'.*book, paper"):
        SPEC.resolve("huge")


def test_spec_checks_its_presets():
    with pytest.raises(ValueError, match="missing"):
        ParamSpec(params=SPEC.params, presets={"book": {}, "paper": {}})


def test_parse_cli_value():
    assert parse_cli_value("20") == 20
    assert parse_cli_value("0.1") == 0.1
    assert parse_cli_value("[32, 64]") == [32, 64]
    assert parse_cli_value("None") is None
    assert parse_cli_value("bn") == "bn"
    assert parse_cli_value("bn,gn") == "bn,gn"
    assert parse_cli_value("1,16") == [1, 16]  # a bare comma list of numbers is a list, not a tuple


def test_describe_lists_every_parameter():
    rows = SPEC.describe()
    assert [r["name"] for r in rows] == SPEC.names
    assert rows[0]["book"] == 8 and rows[0]["paper"] == 56


def test_derived_seeds_are_independent_of_other_seeds():
    from normlib.runtime import derive_seed

    pieces = {(seed, part): derive_seed(seed, part) for seed in range(20) for part in range(20)}
    assert len(set(pieces.values())) == len(pieces)  # no piece of one seed collides with another seed's
    assert derive_seed(0, 1) != derive_seed(1, 0) and derive_seed(3, 4) == derive_seed(3, 4)
    assert all(0 <= v < 2**31 for v in pieces.values())


def _following_spec(width_default=8):
    from normlib.experiments.checks import divisors_of_width, group_sizes_following_width

    params = (Param("width", "int", "channels", minimum=1), Param("group_sizes", "int_list", "sizes", minimum=1))
    preset = {"width": width_default, "group_sizes": group_sizes_following_width([1, 2, 8], 8)}
    return ParamSpec(params=params, presets={"book": preset, "paper": preset}, checks=(divisors_of_width,))


def test_a_following_value_adapts_to_what_it_follows_unless_set():
    spec = _following_spec()
    assert spec.resolve("book")["group_sizes"] == [1, 2, 8]
    assert spec.resolve("book", width=4)["group_sizes"] == [1, 2, 4]  # 8 no longer divides: LayerNorm's is 4
    assert spec.resolve("book", width=6)["group_sizes"] == [1, 2, 6]
    assert spec.resolve("book", width=16)["group_sizes"] == [1, 2, 8, 16]
    assert spec.resolve("book", width=4, group_sizes=[4])["group_sizes"] == [4]  # a value set by the user wins
    with pytest.raises(ParameterError, match="'group_sizes': 8 does not divide the width 4"):
        spec.resolve("book", width=4, group_sizes=[8])


def test_a_following_value_must_agree_with_its_own_preset():
    with pytest.raises(ValueError, match="group_sizes follows other parameters"):
        _following_spec(width_default=4)
