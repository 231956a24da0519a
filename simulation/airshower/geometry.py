"""Array geometry and shower-frame coordinates of the stations.

Frame: x east, y north, z up, in m; the origin is the centre (mean position) of the array, z is the
height above sea level. The shower axis points from the ground towards where the shower comes
from: u = (sin t cos p, sin t sin p, cos t) for zenith t and azimuth p (from x, counter-clockwise).
"""

from __future__ import annotations

import numpy as np

from simulation.airshower.config import ArrayConfig

C_LIGHT = 0.299792458  # m/ns


def station_positions(array: ArrayConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Station coordinates (x, y, z) in m, each of shape (R, C), centred on the array centre.

    Triangular: offset coordinates, odd rows shifted by half a spacing in x, rows spaced
    spacing * sqrt(3)/2 in y, so every station has six neighbours at one spacing. Cartesian: a
    square grid. Row index increases with y, column index with x.
    """
    n_rows, n_cols = array.shape
    d = array.grid_spacing
    row, col = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    if array.layout == "triangular":
        x = d * (col + 0.5 * (row % 2))
        y = d * np.sqrt(3.0) / 2.0 * row
    else:
        x, y = d * col.astype(np.float64), d * row.astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return x, y, np.full_like(x, array.altitude)


def axis_vector(zenith: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors towards the shower's origin, shape (n, 3), from angles in radians, shape (n,)."""
    sin_t = np.sin(zenith)
    return np.stack([sin_t * np.cos(azimuth), sin_t * np.sin(azimuth), np.cos(zenith)], axis=-1)


def shower_frame(
    dx: np.ndarray, dy: np.ndarray, axis: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis distance and height along the axis of stations on the ground plane.

    Args:
        dx, dy: station position minus core, m, shape (n, S) (stations at the core's height).
        axis: unit axis vectors, shape (n, 3).

    Returns:
        r: distance of each station to the axis, m, shape (n, S);
        along: projection of (station - core) on the axis, m, shape (n, S) (> 0: the station is
            upstream, the front reaches it before the core);
        rho2: squared ground distance to the core, m^2, shape (n, S).
    """
    along = dx * axis[:, :1] + dy * axis[:, 1:2]
    rho2 = dx * dx + dy * dy
    r = np.sqrt(np.maximum(rho2 - along * along, 0.0))
    return r, along, rho2


def front_time(rho2: np.ndarray, along: np.ndarray, origin_distance: np.ndarray) -> np.ndarray:
    """Arrival time in ns of a spherical front from a virtual origin on the axis, shape (n, S).

    The front expands at c from the point at `origin_distance` (m, shape (n, 1)) up the axis from
    the core and is timed so that it crosses the core at t = 0; a plane front would arrive at
    -along / c. The curvature delay ~ r^2 / (2 c L) grows as the origin (Xmax) nears the ground.
    Written as (|p - O|^2 - D^2) / (|p - O| + D) to keep precision where |p - O| ~ D.
    """
    dist2_minus_d2 = rho2 - 2.0 * origin_distance * along
    dist = np.sqrt(np.maximum(dist2_minus_d2 + origin_distance**2, 0.0))
    return dist2_minus_d2 / ((dist + origin_distance) * C_LIGHT)
