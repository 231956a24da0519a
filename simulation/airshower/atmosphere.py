"""Atmospheric depth: the CORSIKA US-standard atmosphere (Linsley, CORSIKA model 1).

Vertical depth T(h) = a_i + b_i exp(-h / c_i) in layer i (h in cm above sea level), linear above
100 km and zero from 112.8 km. Flat Earth: the slant depth at zenith theta is T / cos(theta),
good to ~1% up to 60 deg. Pure functions of numpy arrays, elementwise (any shape).
"""

from __future__ import annotations

import numpy as np

# Layer lower edges in m and the parameters (a in g/cm^2, b in g/cm^2, c in cm), PHYSICS.md.
_LAYER_BOTTOM_M = np.array([0.0, 4e3, 10e3, 40e3, 100e3])
_A = np.array([-186.5562, -94.919, 0.61289, 0.0, 0.01128292])
_B = np.array([1222.6562, 1144.9069, 1305.5948, 540.1778, 1.0])
_C = np.array([994186.38, 878153.55, 636143.04, 772170.16, 1e9])
_TOP_M = 1e-2 * _A[4] * _C[4] / _B[4]  # m, where the linear top layer reaches zero depth


def _layer_depth(layer: np.ndarray, h_cm: np.ndarray) -> np.ndarray:
    a, b, c = _A[layer], _B[layer], _C[layer]
    return np.where(layer == 4, a - b * h_cm / c, a + b * np.exp(-h_cm / c))


# Depths at the layer edges (g/cm^2), decreasing with height; used to invert T(h).
_LAYER_BOTTOM_DEPTH = _layer_depth(np.arange(5), 100.0 * _LAYER_BOTTOM_M)


def vertical_depth(height: np.ndarray | float) -> np.ndarray:
    """Vertical atmospheric depth in g/cm^2 at `height` (m above sea level), any shape.

    Heights below sea level use the lowest layer; above the top of the atmosphere the depth is 0.
    """
    h = np.asarray(height, dtype=np.float64)
    layer = np.clip(np.searchsorted(_LAYER_BOTTOM_M, h, side="right") - 1, 0, 4)
    return np.where(h >= _TOP_M, 0.0, _layer_depth(layer, 100.0 * h))


def height_from_depth(depth: np.ndarray | float) -> np.ndarray:
    """Height in m above sea level where the vertical depth is `depth` (g/cm^2), any shape.

    Inverse of :func:`vertical_depth` for depth > 0 (depth 0 gives the top, ~112.8 km); depths
    beyond sea level give negative heights.
    """
    t = np.asarray(depth, dtype=np.float64)
    # Layer i holds depths in (T(bottom_{i+1}), T(bottom_i)]; depths decrease with the layer index.
    layer = np.clip(np.searchsorted(-_LAYER_BOTTOM_DEPTH, -t, side="right") - 1, 0, 4)
    a, b, c = _A[layer], _B[layer], _C[layer]
    ratio = np.maximum((t - a) / b, 1e-300)  # guards the log of the unused branch
    h_cm = np.where(layer == 4, (a - t) * c / b, -c * np.log(ratio))
    return 1e-2 * h_cm


def slant_depth(height: np.ndarray | float, cos_zenith: np.ndarray | float) -> np.ndarray:
    """Slant depth in g/cm^2 along an axis of zenith cos `cos_zenith` at `height` (m), flat Earth."""
    return vertical_depth(height) / np.asarray(cos_zenith, dtype=np.float64)
