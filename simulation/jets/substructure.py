"""Jet substructure on padded constituents: N-subjettiness and an approximate soft-drop mass.

Inputs are padded per-jet arrays (n, P) (pT-ordered, padding masked out), with angles relative to
the jet axis (deta = eta - eta_jet, dphi wrapped), so the whole sample is processed at once.

N-subjettiness (beta = 1, R0 = R): tau_N = sum_i pT_i min_k Delta R_ik / (R0 sum_i pT_i). Axes
approximate the exclusive-kT axes: greedy kT seeding (the hardest particle, then repeatedly the
particle with the largest kT-like distance pT_i min_k Delta R_ik^2 to the axes chosen so far),
followed by pT-weighted Lloyd (k-means) updates, i.e. a one-pass-minimised kT axis set.

Soft-drop mass (beta = 0, z_cut = 0.1): the C/A declustering is approximated by splitting the
current constituents into two angular clusters (2-means as above); if the softer one carries less
than z_cut of their pT it is dropped and the harder one is split again, otherwise grooming stops.
The groomed mass is the invariant mass of what remains.
"""

from __future__ import annotations

import numpy as np


def _dr2(deta: np.ndarray, dphi: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Squared distances (n, P) of particles (n, P) to one axis per jet (n, 2) in (deta, dphi)."""
    de = deta - axis[:, None, 0]
    dp = dphi - axis[:, None, 1]
    return de * de + dp * dp


def kt_axes(
    pt: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    mask: np.ndarray,
    n_axes: int,
    n_iter: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate exclusive-kT axes (n, n_axes, 2) in (deta, dphi); see the module docstring.

    Returns the axes and each particle's squared distance to its nearest axis (n, P).
    """
    n = pt.shape[0]
    rows = np.arange(n)
    w = np.where(mask, pt, 0)
    axes = np.zeros((n, n_axes, 2), dtype=deta.dtype)
    nxt = np.argmax(w, axis=1)
    d2 = None
    for k in range(n_axes):
        axes[:, k] = np.stack([deta[rows, nxt], dphi[rows, nxt]], axis=-1)
        dk = _dr2(deta, dphi, axes[:, k])
        d2 = dk if d2 is None else np.minimum(d2, dk)
        nxt = np.argmax(w * d2, axis=1)
    for _ in range(n_iter if n_axes > 1 else 1):
        dist = np.stack([_dr2(deta, dphi, axes[:, k]) for k in range(n_axes)], axis=-1)
        assign = np.argmin(dist, axis=-1)
        for k in range(n_axes):
            wk = np.where(assign == k, w, 0)
            wsum = wk.sum(axis=1)
            ok = wsum > 0
            safe = np.where(ok, wsum, 1)
            axes[:, k, 0] = np.where(ok, (wk * deta).sum(axis=1) / safe, axes[:, k, 0])
            axes[:, k, 1] = np.where(ok, (wk * dphi).sum(axis=1) / safe, axes[:, k, 1])
    dist = np.stack([_dr2(deta, dphi, axes[:, k]) for k in range(n_axes)], axis=-1)
    return axes, dist.min(axis=-1) if n_axes > 1 else dist[..., 0]


def nsubjettiness(
    pt: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    mask: np.ndarray,
    n_max: int = 4,
    radius: float = 0.8,
) -> np.ndarray:
    """tau_1 .. tau_{n_max} (n, n_max) with beta = 1 and R0 = radius (dimensionless)."""
    w = np.where(mask, pt, 0)
    norm = np.maximum(w.sum(axis=1), 1e-12) * radius
    taus = []
    for n_axes in range(1, n_max + 1):
        _, d2 = kt_axes(pt, deta, dphi, mask, n_axes)
        taus.append((w * np.sqrt(d2)).sum(axis=1) / norm)
    return np.stack(taus, axis=-1)


def softdrop_mass(
    p4: np.ndarray,
    pt: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    mask: np.ndarray,
    z_cut: float = 0.1,
    max_steps: int = 12,
) -> np.ndarray:
    """Approximate soft-drop mass (n,) GeV (beta = 0); p4 (n, P, 4) = (px, py, pz, E) in GeV."""
    active = mask.copy()
    todo = np.arange(pt.shape[0])  # jets still being groomed
    for _ in range(max_steps):
        if todo.size == 0:
            break
        a, e, f, w = active[todo], deta[todo], dphi[todo], np.where(active[todo], pt[todo], 0)
        axes, _ = kt_axes(pt[todo], e, f, a, 2)
        group1 = _dr2(e, f, axes[:, 1]) < _dr2(e, f, axes[:, 0])
        pt2 = np.where(group1, w, 0).sum(axis=1)
        pt1 = w.sum(axis=1) - pt2
        z = np.minimum(pt1, pt2) / np.maximum(pt1 + pt2, 1e-12)
        fail = (a.sum(axis=1) > 1) & (z < z_cut)
        drop = np.where((pt2 < pt1)[:, None], group1, ~group1) & fail[:, None]
        active[todo] = a & ~drop
        todo = todo[fail]
    s = np.where(active[:, :, None], p4, 0).sum(axis=1, dtype=np.float64)
    return np.sqrt(np.maximum(s[:, 3] ** 2 - np.sum(s[:, :3] ** 2, axis=-1), 0.0))
