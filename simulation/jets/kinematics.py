"""Four-vector helpers, vectorised over rows: momenta (m, 3) in GeV, energies (m,) in GeV.

Conventions: pseudorapidity eta = asinh(pz / pT); phi in (-pi, pi]; boosts are active Lorentz
transformations with velocity beta (m, 3) in units of c.
"""

from __future__ import annotations

import numpy as np


def pt_eta_phi_m_to_p4(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(pT, eta, phi, m) (m,) -> momentum (m, 3) and energy (m,), GeV."""
    p = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    energy = np.sqrt(np.sum(p * p, axis=-1) + mass * mass)
    return p, energy


def pt_eta_phi(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Momentum (m, 3) -> pT (GeV), eta, phi (rad), each (m,)."""
    pt = np.hypot(p[..., 0], p[..., 1])
    eta = np.arcsinh(p[..., 2] / np.maximum(pt, 1e-12))
    return pt, eta, np.arctan2(p[..., 1], p[..., 0])


def invariant_mass(p: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """sqrt(max(E^2 - |p|^2, 0)) in GeV, shape of `energy`."""
    return np.sqrt(np.maximum(energy * energy - np.sum(p * p, axis=-1), 0.0))


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Angle difference wrapped into [-pi, pi)."""
    return (dphi + np.pi) % (2.0 * np.pi) - np.pi


def boost(p: np.ndarray, energy: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boost four-vectors (p (m, 3), E (m,)) by velocity beta (m, 3), |beta| < 1."""
    b2 = np.sum(beta * beta, axis=-1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p, axis=-1)
    # (gamma - 1) / b2 written as gamma^2 / (gamma + 1): finite for beta -> 0.
    coef = gamma * gamma / (gamma + 1.0) * bp + gamma * energy
    return p + coef[:, None] * beta, gamma * (energy + bp)


def isotropic_directions(rng: np.random.Generator, m: int) -> np.ndarray:
    """m unit vectors (m, 3) uniform on the sphere."""
    cos_t = rng.uniform(-1.0, 1.0, m)
    phi = rng.uniform(0.0, 2.0 * np.pi, m)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)


def perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (m, 3) orthogonal to the unit vectors d (m, 3) and to each other."""
    # Cross with the axis least aligned with d, so the result never degenerates.
    ref = np.zeros_like(d)
    ref[np.arange(len(d)), np.argmin(np.abs(d), axis=-1)] = 1.0
    u = np.cross(d, ref)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    return u, np.cross(d, u)


def rotate_off_axis(d: np.ndarray, theta: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors at polar angle theta (rad) and azimuth (rad) around the unit vectors d (m, 3)."""
    u, v = perpendicular_basis(d)
    s = np.sin(theta)[:, None]
    return (
        np.cos(theta)[:, None] * d
        + s * np.cos(azimuth)[:, None] * u
        + s * np.sin(azimuth)[:, None] * v
    )


def group_sum(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum rows of values ((m,) or (m, k)) by integer group id (m,) -> (n_groups[, k])."""
    if values.ndim == 1:
        return np.bincount(group, weights=values, minlength=n_groups)
    return np.stack(
        [
            np.bincount(group, weights=values[:, k], minlength=n_groups)
            for k in range(values.shape[1])
        ],
        axis=-1,
    )


def rescale_to_mass(
    p: np.ndarray, mass: np.ndarray, group: np.ndarray, target: np.ndarray, n_iter: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame momentum rescaling: make each group's invariant mass equal `target`.

    Every group (ids 0..len(target)-1) is boosted to its rest frame, its momenta scaled by one
    factor k per group so that sum sqrt(k^2 p*^2 + m^2) = target (Newton iterations from the
    massless solution), the way parton showers restore resonance masses. Momentum sums in the rest
    frame stay zero, so the group keeps its rest frame; the result is returned in that rest frame.

    Args:
        p: momenta (m, 3) GeV; mass: (m,) GeV; group: (m,) int; target: (g,) GeV, must exceed
            the sum of the group's masses.

    Returns:
        rest-frame momenta (m, 3) and energies (m,) with group masses equal to target.
    """
    n = len(target)
    energy = np.sqrt(np.sum(p * p, axis=-1) + mass * mass)
    tot_p = group_sum(p, group, n)
    tot_e = group_sum(energy, group, n)
    beta = -tot_p / np.maximum(tot_e, 1e-12)[:, None]
    p_rest, _ = boost(p, energy, beta[group])
    p2 = np.sum(p_rest * p_rest, axis=-1)
    e_rest = np.sqrt(p2 + mass * mass)
    k = target / np.maximum(group_sum(e_rest, group, n), 1e-12)
    for _ in range(n_iter):
        e_k = np.sqrt(k[group] ** 2 * p2 + mass * mass)
        f = group_sum(e_k, group, n) - target
        df = group_sum(k[group] * p2 / np.maximum(e_k, 1e-12), group, n)
        k = np.maximum(k - f / np.maximum(df, 1e-12), 1e-6)
    p_new = p_rest * k[group][:, None]
    return p_new, np.sqrt(np.sum(p_new * p_new, axis=-1) + mass * mass)
