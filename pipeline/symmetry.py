"""Symmetries of a station lattice, as permutations of the stations (numpy, no physics).

A surface array on a triangular grid is mapped onto itself by the rotations by multiples of 60
degrees and by reflections about a station (the dihedral group D6); a square grid by D4. On a
finite array a symmetry moves the stations near the border outside it: those are dropped (a
footprint there looks as if that station had not triggered), the others land exactly on
stations. Quantities of the shower that do not depend on its orientation (energy, Xmax, mass)
are unchanged, so a random symmetry per event augments the training data of an image model for
free. Directions and core positions would have to be transformed with the stations: they are
not handled here.
"""

from __future__ import annotations

import numpy as np

_ROTATIONS_DEG = (0, 60, 90, 120, 180, 240, 270, 300)


def _transforms() -> list[np.ndarray]:
    """2x2 matrices: the candidate rotations, each with and without a reflection y -> -y."""
    out = []
    for deg in _ROTATIONS_DEG:
        a = np.deg2rad(deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out += [rot, rot @ np.diag([1.0, -1.0])]
    return out


def lattice_symmetries(x: np.ndarray, y: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """The symmetries of the station lattice as index maps, one row per symmetry.

    Args:
        x, y: station coordinates (any shape, e.g. the (R, C) ``meta/station_x``); flattened in C
            order, station k is ``x.ravel()[k]``.
        tol: matching tolerance in units of the smallest station spacing.

    Returns:
        Int[G, S] ``source``: for symmetry g, the station moved *onto* station j is
        ``source[g, j]`` (-1: none, the slot becomes empty). Row 0 is the identity. A candidate
        (rotation by a multiple of 60 or 90 degrees about the station nearest the array's
        centre, with or without a reflection) is kept when every station it moves lands on a
        station or outside the array's bounding box.
    """
    pts = np.stack([np.ravel(x), np.ravel(y)], axis=-1).astype(np.float64)
    n = len(pts)
    if n < 2:
        raise ValueError(f"lattice_symmetries: needs at least 2 stations, got {n}")
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    spacing = float(dist[dist > 0].min())
    centre = pts[np.argmin(np.linalg.norm(pts - pts.mean(axis=0), axis=-1))]
    rel = pts - centre
    lo, hi = rel.min(axis=0) - 0.25 * spacing, rel.max(axis=0) + 0.25 * spacing
    maps, seen = [], set()
    for m in _transforms():
        moved = rel @ m.T  # where each station goes
        d = np.linalg.norm(moved[:, None] - rel[None], axis=-1)
        target = np.argmin(d, axis=1)
        hit = d[np.arange(n), target] < tol * spacing
        inside = np.all((moved > lo) & (moved < hi), axis=1)
        if np.any(inside & ~hit):
            continue  # not a symmetry of the lattice
        source = np.full(n, -1, np.int64)
        source[target[hit]] = np.flatnonzero(hit)
        key = source.tobytes()
        if key not in seen:
            seen.add(key)
            maps.append(source)
    return np.stack(maps)


def apply_symmetry(
    values: np.ndarray, source: np.ndarray, choice: np.ndarray, blank: np.ndarray
) -> np.ndarray:
    """Move the stations of each event by its chosen symmetry.

    Args:
        values: Float[n, S, V] per-station values (an (n, R, C, V) image reshaped).
        source: Int[G, S] from :func:`lattice_symmetries`.
        choice: Int[n] the symmetry of each event.
        blank: Float[V] the values of an empty station (what a dropped station becomes).

    Returns:
        Float[n, S, V]: ``out[i, j] = values[i, source[choice[i], j]]`` (``blank`` where -1).
    """
    src = source[choice]  # (n, S)
    out = np.take_along_axis(values, np.maximum(src, 0)[..., None], axis=1)
    return np.where((src >= 0)[..., None], out, blank.astype(values.dtype))
