"""The pair bias's layout: the lower-triangle pairs of a set and their (P, P) matrices.

Pair embeddings are computed once per unordered pair (i >= j, :func:`tril_pairs` order) and
gathered into the per-head (B, H, P, P) attention bias (:func:`gather_bias`), for ParT and the
station set transformer alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reco.models.attention import CPU_CHUNK_BYTES


def flat_gather_pays(u: jax.Array, n: int, *, train: bool) -> bool:
    """Whether :func:`gather_bias` should gather flat for embeddings ``u`` (B, n_pairs, H) of a
    set of ``n``: always in training; at inference on a CPU once the (B, H, n, n) float32 bias
    outgrows ``CPU_CHUNK_BYTES`` (measured: default ParT predict 1.06x, docs/benchmarks.md), as
    the pairs' gather is then followed by a transposing copy through memory. A symbolic batch
    size (exports) keeps the pairs' gather."""
    if train:
        return True
    n_jets, _, heads = u.shape
    if not isinstance(n_jets, int) or jax.default_backend() != "cpu":
        return False
    return 4 * n_jets * heads * n * n > CPU_CHUNK_BYTES


def gather_bias(u: jax.Array, index: np.ndarray, *, flat: bool) -> jax.Array:
    """Pair embeddings (B, n_pairs, H) -> the attention bias (B, H, P, P); ``index`` (P, P) maps
    (i, j) to its pair (:func:`tril_pairs`).

    XLA writes a gather's output index-major: gathering whole pairs (``u[:, index]``) gives a
    (P, P, B, H) array that every block then reads through a transpose. With ``flat`` the
    gather takes one flat index per (jet, head, i, j), computed inside its fusion, and its
    output is (B, H, P, P) in memory (needs B * H * P * P < 2^32, else the pairs' gather). Its
    gradient is gathered too, each pair's ``g[i, j] + g[j, i]`` (``g[i, i]`` on the diagonal):
    the same sums as the scatter-add autodiff would emit, with no atomics on a GPU (where those
    are slow and their order varies from run to run).
    """
    n_jets, n_pairs, heads = u.shape
    n = index.shape[0]
    if not flat or n_jets * heads * n * n >= 2**32:  # uint32 indices
        return jnp.moveaxis(u[:, index], -1, 1)
    rows, cols = np.tril_indices(n)  # pair p is (rows[p], cols[p]) in tril_pairs order
    assert n_pairs == len(rows) and np.array_equal(index[rows, cols], np.arange(n_pairs))

    def flat_at(values: jax.Array, outer: int, inner: np.ndarray, shape: tuple[int, ...]):
        """``values`` (flat) at ``o * stride + inner`` for every outer index o, reshaped."""
        stride = values.size // outer
        # unsigned: the gather's fusion has no negative-index handling
        start = jnp.arange(outer, dtype=jnp.uint32)[:, None] * stride
        at = start + jnp.asarray(inner.reshape(1, -1), jnp.uint32)
        return values.at[at].get(mode="promise_in_bounds").reshape(shape)

    @jax.custom_vjp
    def bias(u: jax.Array) -> jax.Array:
        values = jnp.moveaxis(u, -1, 1).reshape(-1)  # (B * H * n_pairs,)
        return flat_at(values, n_jets * heads, index, (n_jets, heads, n, n))

    def bias_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
        values = g.reshape(-1)  # (B * H * P * P,)
        lower = flat_at(values, n_jets * heads, rows * n + cols, (n_jets, heads, n_pairs))
        upper = flat_at(values, n_jets * heads, cols * n + rows, (n_jets, heads, n_pairs))
        du = lower + jnp.where(jnp.asarray(rows != cols), upper, jnp.zeros((), g.dtype))
        return (jnp.moveaxis(du, 1, -1).astype(u.dtype),)

    bias.defvjp(lambda u: (bias(u), None), bias_bwd)
    return bias(u)


def tril_pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower-triangle pairs (i >= j) of n set elements and the (n, n) map from (i, j) to pair index."""
    rows, cols = np.tril_indices(n)
    hi, lo = (
        np.maximum.outer(np.arange(n), np.arange(n)),
        np.minimum.outer(np.arange(n), np.arange(n)),
    )
    return (
        rows,
        cols,
        hi * (hi + 1) // 2 + lo,
    )  # row-major tril order: index of (i, j) = i(i+1)/2 + j
