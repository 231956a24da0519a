"""HashDropout: the dropout of the set transformers' blocks (counter-hash masks, not threefry)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reco.models.layers import HashDropout, hash_bits


def _apply(layer: HashDropout, x: jax.Array, calls: int) -> list[np.ndarray]:
    """``calls`` training calls in one jitted function (the stream advances between them)."""

    @nnx.jit
    def run(layer: HashDropout, x: jax.Array) -> list[jax.Array]:
        return [layer(x, deterministic=False) for _ in range(calls)]

    return [np.asarray(y) for y in run(layer, x)]


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_masks_have_the_rate_and_keep_the_mean(rate: float):
    x = jnp.ones((64, 4, 32, 32))
    (y,) = _apply(HashDropout(rate, rngs=nnx.Rngs(dropout=0)), x, 1)
    n = y.size
    dropped = (y == 0).mean()
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)  # binomial, 5 sigma
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)


def test_masks_differ_between_calls_and_repeat_with_the_seed():
    x = jnp.ones((8, 128, 64))
    a1, a2 = _apply(HashDropout(0.1, rngs=nnx.Rngs(dropout=0)), x, 2)
    b1, _ = _apply(HashDropout(0.1, rngs=nnx.Rngs(dropout=0)), x, 2)
    c1, _ = _apply(HashDropout(0.1, rngs=nnx.Rngs(dropout=1)), x, 2)
    np.testing.assert_array_equal(a1, b1)  # same seed, same masks
    for other in (a2, c1):  # the next call / another seed: independent masks
        both = ((a1 == 0) & (other == 0)).mean()
        assert abs(both - 0.01) < 0.003, both


def test_eval_and_rate_zero_are_the_identity():
    x = jax.random.normal(jax.random.key(0), (4, 16))
    layer = HashDropout(0.3, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(layer(x, deterministic=True), x)
    (y,) = _apply(HashDropout(0.0, rngs=nnx.Rngs(dropout=0)), x, 1)
    np.testing.assert_array_equal(y, x)


def test_hash_bits_are_uniform_and_uncorrelated():
    bits = np.asarray(hash_bits(jax.random.key(3), (1 << 18,)))
    for bit in (0, 1, 8, 16, 31):  # every bit position is a fair coin
        assert abs(((bits >> bit) & 1).mean() - 0.5) < 0.005, bit
    u = bits.astype(np.float64) / 2**32
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbours independent
    hist, _ = np.histogram(u, bins=16, range=(0, 1))
    expected = u.size / 16
    assert ((hist - expected) ** 2 / expected).sum() < 50  # chi2, 15 dof (p ~ 1e-5)
