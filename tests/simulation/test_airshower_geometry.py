"""Array layout and the shower front."""

import numpy as np
import pytest

from simulation.airshower.config import ArrayConfig
from simulation.airshower.geometry import (
    C_LIGHT,
    axis_vector,
    front_time,
    shower_frame,
    station_positions,
)


def test_triangular_grid_has_six_neighbours_at_one_spacing():
    x, y, z = station_positions(ArrayConfig())
    assert x.shape == (11, 11)
    assert abs(x.mean()) < 1e-9 and abs(y.mean()) < 1e-9
    assert np.allclose(z, 1400.0)
    pts = np.stack([x.ravel(), y.ravel()], axis=1)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() == pytest.approx(1500.0)
    centre = 5 * 11 + 5
    assert np.sum(np.isclose(d[centre], 1500.0)) == 6
    # odd rows shifted by half a spacing, rows sqrt(3)/2 spacings apart
    assert x[1, 0] - x[0, 0] == pytest.approx(750.0)
    assert y[1, 0] - y[0, 0] == pytest.approx(1500.0 * np.sqrt(3) / 2)


def test_shower_frame_distances():
    axis = axis_vector(np.array([np.radians(60.0)]), np.array([0.0]))
    dx, dy = np.array([[1000.0, 0.0]]), np.array([[0.0, 1000.0]])
    r, along, _ = shower_frame(dx, dy, axis)
    # along the azimuth the ground distance shrinks by cos(theta); across it is kept
    assert r[0] == pytest.approx([500.0, 1000.0])
    assert along[0] == pytest.approx([1000.0 * np.sin(np.radians(60.0)), 0.0])


def test_front_time_limits_and_curvature():
    along = np.array([0.0, 300.0, -300.0, 0.0])
    r = np.array([0.0, 0.0, 0.0, 1000.0])
    rho2 = along**2 + r**2
    far = front_time(rho2, along, np.full(4, 1e9))
    assert far == pytest.approx(-along / C_LIGHT, abs=0.01)  # plane front from far away
    near = front_time(rho2, along, np.full(4, 5000.0))
    assert near[0] == 0.0  # the front crosses the core at t = 0
    expected = (np.hypot(5000.0, 1000.0) - 5000.0) / C_LIGHT  # ~330 ns behind the plane
    assert near[3] == pytest.approx(expected)
    closer = front_time(rho2, along, np.full(4, 3000.0))
    assert closer[3] > near[3]  # the nearer the origin (Xmax), the more curved the front
