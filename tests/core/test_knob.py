"""Config fields declared with ``knob``: types from the annotations, bounds, choices, non-empty and unique tuples."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest

from reprozoo.core.experiment import ConfigError, ExperimentConfig, knob


@dataclass
class Knobs(ExperimentConfig):
    datasets: tuple[str, ...] = ("A",)
    lr: float = knob(0.1, gt=0)
    momentum: float = knob(0.9, ge=0, lt=1)
    epochs: int = knob(3, ge=1, le=10)
    mode: str = knob("fast", choices=("fast", "slow"))
    archs: tuple[str, ...] = knob(("GCN",), choices=("GCN", "GAT"), nonempty=True, unique=True)
    grid: tuple[float, ...] = knob((0.05, 0.1), gt=0, le=1, unique=True)
    counts: tuple[int, ...] = knob((), ge=1)
    pair: tuple[int, int] = knob((1, 2), ge=0)
    cap: float | None = knob(None, gt=0, le=1)
    budget: int | None = None
    flag: bool = True
    name: str = "x"
    PRESETS: ClassVar[dict] = {"quick": {}}
    KNOWN_DATASETS: ClassVar[tuple] = ("A",)


def make(**changes) -> Knobs:
    return Knobs.from_preset("quick").replace(**changes)


def test_knob_keeps_the_default_and_records_the_bounds():
    cfg = Knobs()
    assert (cfg.lr, cfg.archs, cfg.cap) == (0.1, ("GCN",), None)
    fields = {f.name: f for f in dataclasses.fields(Knobs)}
    assert fields["momentum"].metadata["knob"] == {"ge": 0, "gt": None, "le": None, "lt": 1, "choices": None,
                                                   "nonempty": False, "unique": False}
    assert "knob" not in fields["flag"].metadata  # a plain field: type checked, no bounds
    make()  # the defaults pass


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr": 0.0}, "lr=0.0 should be > 0"),
    ({"lr": -1}, "lr=-1 should be > 0"),
    ({"momentum": -0.1}, "momentum=-0.1 should be >= 0"),
    ({"momentum": 1.0}, "momentum=1.0 should be < 1"),
    ({"epochs": 0}, "epochs=0 should be >= 1"),
    ({"epochs": 11}, "epochs=11 should be <= 10"),
])
def test_bounds_name_the_field_the_value_and_the_rule(changes, message):
    with pytest.raises(ConfigError) as info:
        make(**changes)
    assert str(info.value) == message


def test_bounds_are_inclusive_or_strict_as_declared():
    assert make(momentum=0.0).momentum == 0.0 and make(epochs=10).epochs == 10 and make(lr=1e-9).lr == 1e-9


@pytest.mark.parametrize(("changes", "message"), [
    ({"lr": "0.1"}, "lr should be a real number, got str ('0.1')"),
    ({"lr": float("nan")}, "lr=nan should be finite"),
    ({"lr": float("inf")}, "lr=inf should be finite"),
    ({"lr": True}, "lr should be a real number, got bool (True)"),
    ({"epochs": 2.0}, "epochs should be an int, got float (2.0)"),
    ({"epochs": True}, "epochs should be an int, got bool (True)"),
    ({"flag": 1}, "flag should be a bool, got int (1)"),
    ({"name": 3}, "name should be a string, got int (3)"),
    ({"budget": 2.5}, "budget should be an int, got float (2.5)"),
])
def test_types_come_from_the_annotations(changes, message):
    with pytest.raises(ConfigError) as info:
        make(**changes)
    assert str(info.value) == message


def test_an_int_is_a_valid_float():
    assert make(lr=2).lr == 2


def test_choices_of_a_scalar_and_of_each_tuple_item():
    assert make(mode="slow").mode == "slow" and make(archs=("GAT", "GCN")).archs == ("GAT", "GCN")
    with pytest.raises(ConfigError, match=r"^mode='medium' is not valid; choose one of \['fast', 'slow'\]$"):
        make(mode="medium")
    with pytest.raises(ConfigError, match=r"^archs='MLP' is not valid; choose one of \['GCN', 'GAT'\]$"):
        make(archs=("GCN", "MLP"))


def test_nonempty():
    with pytest.raises(ConfigError, match="^archs is empty; give at least one entry$"):
        make(archs=())
    assert make(counts=()).counts == () and make(grid=()).grid == ()  # not declared nonempty: empty is fine


def test_unique_names_the_repeated_entries_and_compares_numbers_by_value():
    with pytest.raises(ConfigError, match=r"^grid=\(0\.05, 0\.1, 0\.05, 0\.1\) repeats 0\.05, 0\.1; give each once"):
        make(grid=(0.05, 0.1, 0.050, 0.1))
    with pytest.raises(ConfigError, match=r"^archs=\('GCN', 'GCN'\) repeats GCN"):
        make(archs=("GCN", "GCN"))
    assert make(counts=(2, 2)).counts == (2, 2)  # not declared unique


def test_tuple_items_are_typed_and_bounded_one_by_one():
    with pytest.raises(ConfigError, match=r"^grid\[1\]=1\.5 should be <= 1$"):
        make(grid=(0.5, 1.5))
    with pytest.raises(ConfigError, match=r"^counts\[0\]=0 should be >= 1$"):
        make(counts=(0, 3))
    with pytest.raises(ConfigError, match=r"^counts\[1\] should be an int, got float \(2\.5\)$"):
        make(counts=(1, 2.5))
    with pytest.raises(ConfigError, match=r"^grid\[0\] should be a real number, got str"):
        make(grid=("0.5",))


def test_a_tuple_field_rejects_a_scalar_or_a_string():
    with pytest.raises(ConfigError, match=r"^grid=0\.5 should be a tuple \(comma-separated with --set\)$"):
        make(grid=0.5)
    with pytest.raises(ConfigError, match=r"^archs='GCN' should be a tuple"):
        make(archs="GCN")


def test_fixed_length_tuple():
    assert make(pair=(3, 4)).pair == (3, 4)
    with pytest.raises(ConfigError, match=r"^pair=\(1, 2, 3\) should have 2 entries$"):
        make(pair=(1, 2, 3))
    with pytest.raises(ConfigError, match=r"^pair\[1\]=-1 should be >= 0$"):
        make(pair=(1, -1))


def test_a_list_given_from_python_becomes_a_tuple_and_is_checked():
    cfg = make(archs=["GAT"], grid=[0.2, 0.3], pair=[5, 6])
    assert cfg.archs == ("GAT",) and cfg.grid == (0.2, 0.3) and cfg.pair == (5, 6)
    with pytest.raises(ConfigError, match="repeats GAT"):
        make(archs=["GAT", "GAT"])
    with pytest.raises(ConfigError, match=r"grid\[0\]=0 should be > 0"):
        make(grid=[0])


def test_optional_fields_accept_none_and_check_a_value():
    assert make(cap=None).cap is None and make(cap=0.5).cap == 0.5
    assert make(budget=None).budget is None and make(budget=7).budget == 7
    with pytest.raises(ConfigError, match=r"^cap=1\.5 should be <= 1$"):
        make(cap=1.5)
    with pytest.raises(ConfigError, match=r"^cap should be a real number, got str"):
        make(cap="half")


def test_set_strings_are_parsed_then_checked():
    cfg = Knobs.from_preset("quick").with_strings({"archs": "GAT,GCN", "cap": "none", "lr": "1/4"})
    assert cfg.archs == ("GAT", "GCN") and cfg.cap is None and cfg.lr == 0.25
    with pytest.raises(ConfigError, match=r"^grid\[1\]=2\.0 should be <= 1$"):
        Knobs.from_preset("quick").with_strings({"grid": "0.5,2"})
    with pytest.raises(ConfigError, match="^archs is empty"):
        Knobs.from_preset("quick").with_strings({"archs": ""})


def test_validate_checks_a_field_changed_in_place():
    cfg = make()
    cfg.epochs = 0  # bypassing replace(): validate() (which run() calls) still rejects it
    with pytest.raises(ConfigError, match="epochs=0 should be >= 1"):
        cfg.validate()


def test_a_preset_value_is_checked_like_any_other():
    @dataclass
    class Bad(Knobs):
        PRESETS: ClassVar[dict] = {"quick": {"lr": -1.0}}

    with pytest.raises(ConfigError, match="lr=-1.0 should be > 0"):
        Bad.from_preset("quick")
