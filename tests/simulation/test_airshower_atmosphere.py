"""CORSIKA US-standard (Linsley) atmosphere."""

import numpy as np
import pytest

from simulation.airshower.atmosphere import height_from_depth, slant_depth, vertical_depth


def test_depth_at_auger_altitude_and_sea_level():
    assert vertical_depth(1400.0) == pytest.approx(875.5, abs=0.5)
    # a_1 + b_1 at sea level
    assert vertical_depth(0.0) == pytest.approx(-186.5562 + 1222.6562, rel=1e-12)


def test_depth_is_continuous_and_decreasing():
    h = np.linspace(0.0, 110e3, 20001)
    t = vertical_depth(h)
    assert np.all(np.diff(t) < 0)
    # layer edges of the CORSIKA model join within 0.1 g/cm^2
    for edge in (4e3, 10e3, 40e3, 100e3):
        assert vertical_depth(edge - 1e-3) == pytest.approx(vertical_depth(edge + 1e-3), abs=0.1)
    assert vertical_depth(120e3) == 0.0


def test_height_inverts_depth():
    h = np.array([0.0, 1400.0, 3999.0, 4001.0, 8000.0, 25e3, 60e3, 105e3])
    assert np.allclose(height_from_depth(vertical_depth(h)), h, atol=1e-6)


def test_slant_depth_is_flat_earth():
    assert slant_depth(1400.0, 0.5) == pytest.approx(2 * vertical_depth(1400.0))
