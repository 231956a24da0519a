"""Pairwise interaction features of the Particle Transformer (Qu, Li, Qian, arXiv:2202.03772).

Pure functions of 4-vectors ``(px, py, pz, E)`` in GeV, with the exact clamps of weaver-core's
``pairwise_lv_fts`` ("pp" mode, ``pair_input_dim=4``) so imported weights see the same inputs:

- rapidity ``y = 0.5 * ln(1 + 2 pz / max(E - pz, 1e-20))`` (algebraically ``0.5 ln((E+pz)/(E-pz))``),
- ``Delta = sqrt(dy^2 + dphi^2)`` with ``dphi = ((phi_a - phi_b + pi) mod 2 pi) - pi``,
- channel order ``[ln kT, ln z, ln Delta, ln m^2]`` with ``eps = 1e-8`` inside every log.

The diagonal (a, a) is a valid pair (weaver keeps self pairs): ``ln Delta = ln kT = ln 1e-8``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

PAIR_EPS = 1e-8  # floor inside every log of the pair features (weaver-core's eps)
N_PAIR_FEATURES = 4  # ln kT, ln z, ln Delta, ln m^2


def pt_rapidity_phi(v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(pT, y, phi)`` of Float[Array, "... 4"] 4-vectors (px, py, pz, E); each of shape ``...``."""
    px, py, pz, e = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    pt = jnp.sqrt(px * px + py * py)  # no clamp: pT = 0 is handled by the eps in the logs
    rap = 0.5 * jnp.log1p(2.0 * pz / jnp.maximum(e - pz, 1e-20))
    phi = jnp.arctan2(py, px)
    return pt, rap, phi


def delta_phi(phi_a: jax.Array, phi_b: jax.Array) -> jax.Array:
    """``phi_a - phi_b`` wrapped into [-pi, pi) by a modulo (as weaver), not via atan2(sin, cos)."""
    return jnp.mod(phi_a - phi_b + math.pi, 2.0 * math.pi) - math.pi


def kinematics(v: jax.Array) -> jax.Array:
    """Float[Array, "... 4"] 4-vectors -> Float[Array, "... 7"] ``(px, py, pz, E, pT, y, phi)``.

    Computed once per particle and then gathered per pair: the logarithm, arctangent and square
    root of each particle's ``(pT, y, phi)`` are then not evaluated again for each of its pairs.
    """
    return jnp.concatenate([v, jnp.stack(pt_rapidity_phi(v), axis=-1)], axis=-1)


def pair_features(v_a: jax.Array, v_b: jax.Array) -> jax.Array:
    """Interaction features of the pairs ``(a, b)``.

    Args:
        v_a, v_b: Float[Array, "... 4"] 4-vectors (px, py, pz, E), broadcastable against each other
            (e.g. ``(B, P, 1, 4)`` and ``(B, 1, P, 4)`` for all pairs).

    Returns:
        Float[Array, "... 4"]: ``[ln kT, ln z, ln Delta, ln m^2]`` per pair, symmetric in (a, b).
    """
    return kinematic_pair_features(kinematics(v_a), kinematics(v_b))


def kinematic_pair_features(k_a: jax.Array, k_b: jax.Array) -> jax.Array:
    """:func:`pair_features` of particles given by their :func:`kinematics` (``... 7``)."""
    pt_a, y_a, phi_a = k_a[..., 4], k_a[..., 5], k_a[..., 6]
    pt_b, y_b, phi_b = k_b[..., 4], k_b[..., 5], k_b[..., 6]
    dy = y_a - y_b
    dphi = delta_phi(phi_a, phi_b)
    delta = jnp.sqrt(dy * dy + dphi * dphi)
    ptmin = jnp.minimum(pt_a, pt_b)
    lnkt = jnp.log(jnp.maximum(ptmin * delta, PAIR_EPS))
    lnz = jnp.log(jnp.maximum(ptmin / jnp.maximum(pt_a + pt_b, PAIR_EPS), PAIR_EPS))
    lndelta = jnp.log(jnp.maximum(delta, PAIR_EPS))
    s = k_a[..., :4] + k_b[..., :4]
    # E^2 - |p|^2 cancels almost completely for (near-)massless pairs, above all the self pair:
    # the result is float32 rounding noise around 4 m^2 that the log then amplifies (ln 1e-8 vs
    # ~ -3). The max (a no-op on squares) keeps XLA from contracting the squares and the sums into
    # fused multiply-adds, so jitted code rounds like the PyTorch reference, once per operation
    # (an optimization_barrier or reduce_precision is simplified away and does not do this).
    sq = jnp.maximum(s * s, 0.0)
    m2 = sq[..., 3] - (sq[..., 0] + sq[..., 1] + sq[..., 2])
    lnm2 = jnp.log(jnp.maximum(m2, PAIR_EPS))
    return jnp.stack([lnkt, lnz, lndelta, lnm2], axis=-1)


def all_pair_features(vectors: jax.Array) -> jax.Array:
    """Features of every ordered pair of a jet's particles.

    Args:
        vectors: Float[Array, "batch particles 4"] (px, py, pz, E) in GeV.

    Returns:
        Float[Array, "batch particles particles 4"], entry ``[b, i, j]`` for the pair (i, j).
    """
    return pair_features(vectors[:, :, None, :], vectors[:, None, :, :])
