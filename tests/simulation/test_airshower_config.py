"""Config of the air-shower simulator: validation, layout presets, building from YAML data."""

from dataclasses import MISSING, fields, is_dataclass

import numpy as np
import pytest

from pipeline.config import ConfigError, from_dict
from simulation.airshower.config import AirshowerConfig, ArrayConfig, PrimaryConfig
from simulation.airshower.geometry import station_positions


def test_unknown_species_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match=r"composition.*unknown species.*'O'"):
        PrimaryConfig(composition={"p": 0.5, "O": 0.5})


def test_negative_fraction_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match=r"composition.*>= 0.*He"):
        PrimaryConfig(composition={"p": 1.0, "He": -0.1})


def test_all_zero_fractions_are_rejected():
    with pytest.raises(ValueError, match="composition.*sum"):
        PrimaryConfig(composition={"p": 0.0, "Fe": 0.0})


def test_fractions_are_normalised_and_drop_zeros():
    names, fractions = PrimaryConfig(composition={"Fe": 3.0, "p": 1.0, "N": 0.0}).fractions()
    assert names == ("p", "Fe")
    assert fractions == pytest.approx((0.25, 0.75))


def test_from_yaml_data_through_the_project_loader():
    cfg = from_dict(
        AirshowerConfig,
        {
            "n_train": 10,
            "primaries": {"composition": {"p": 1, "Fe": 1}},
            "traces": {"enabled": False},
        },
    )
    assert cfg.n_train == 10 and not cfg.traces.enabled
    assert cfg.primaries.composition == {"p": 1.0, "Fe": 1.0}
    with pytest.raises(ConfigError, match="composition"):
        from_dict(AirshowerConfig, {"primaries": {"composition": {"X": 1.0}}})


def test_every_section_is_frozen_with_defaults():
    def check(cls):
        assert cls.__dataclass_params__.frozen, cls.__name__
        for f in fields(cls):
            assert f.default is not MISSING or f.default_factory is not MISSING, f.name
            if is_dataclass(f.default_factory):
                check(f.default_factory)

    check(AirshowerConfig)
    assert AirshowerConfig().kind == "airshower"


def test_layout_presets():
    tri = ArrayConfig()
    assert tri.shape == (11, 11) and tri.grid_spacing == 1500.0
    cart = ArrayConfig(layout="cartesian")
    assert cart.shape == (14, 14) and cart.grid_spacing == 750.0
    x, y, z = station_positions(cart)
    assert x.shape == (14, 14)
    assert np.allclose(np.diff(x, axis=1), 750.0) and np.allclose(np.diff(y, axis=0), 750.0)
    assert np.allclose(z, 1400.0)
