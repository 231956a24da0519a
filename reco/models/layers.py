"""Small building blocks shared by the architectures: normalisation, activations, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

NormKind = Literal["batch", "layer", "none"]
ActivationName = Literal["relu", "gelu", "silu"]

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nnx.relu,
    "gelu": nnx.gelu,
    "silu": nnx.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (relu, gelu, silu)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}") from None


class Norm(nnx.Module):
    """Normalisation over the feature (last) axis, chosen by ``kind``.

    ``"batch"``: BatchNorm over all axes but the last (running statistics in ``nnx.BatchStat``,
    updated only when ``train=True``); ``"layer"``: LayerNorm over the channels of each position
    (ConvNeXt-style, batch-independent); ``"none"``: identity.
    """

    def __init__(
        self,
        features: int,
        kind: str,
        *,
        momentum: float = 0.9,
        zero_scale: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        # zero_scale starts a residual branch as the identity (Goyal et al. 2017), which keeps
        # deep residual stacks stable at the start of training.
        scale_init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
        self.kind = kind
        self.norm: nnx.BatchNorm | nnx.LayerNorm | None
        if kind == "batch":
            self.norm = nnx.BatchNorm(features, momentum=momentum, scale_init=scale_init, rngs=rngs)
        elif kind == "layer":
            self.norm = nnx.LayerNorm(features, scale_init=scale_init, rngs=rngs)
        elif kind == "none":
            self.norm = None
        else:
            raise ValueError(f"unknown norm {kind!r}; known: batch, layer, none")

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: Float[Array, "... features"] -> same shape."""
        if isinstance(self.norm, nnx.BatchNorm):
            return self.norm(x, use_running_average=not train)
        if self.norm is None:
            return x
        return self.norm(x)


def _mix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 that mixes every input bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform uint32 words of ``shape`` from a counter hash keyed by ``key`` (two 32-bit words).

    Each element's flat index is hashed twice, keyed by the two words (a two-round keyed mix, as
    counter-based generators do): ``mix(mix(i * phi + k0) ^ k1)``. XLA fuses it into the
    consumer, so a mask costs one pass over the tensor; ``jax.random.bernoulli`` runs threefry
    per element, ~10x slower on a CPU. Good enough for dropout masks, not for physics sampling.
    """
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError(f"hash_bits: {shape} has more than 2**32 elements")
    i = jax.lax.iota(jnp.uint32, n).reshape(shape)
    return _mix32(_mix32(i * jnp.uint32(0x9E3779B9) + k0) ^ k1)


class HashDropout(nnx.Dropout):
    """``nnx.Dropout`` whose mask comes from :func:`hash_bits` instead of threefry.

    Same state, arguments and semantics (rate, ``deterministic``, the ``dropout`` stream, one
    key drawn per call); elements are dropped with probability ``rate`` to within 2**-32.
    Dropout masks were a quarter of ParT's CPU train step with threefry (docs/benchmarks.md).
    """

    def __call__(
        self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None
    ) -> jax.Array:
        """inputs -> inputs masked and scaled by 1 / (1 - rate) in training, else unchanged."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0.0:
            return inputs
        if self.broadcast_dims or rngs is not None:  # nnx.Dropout's own cases
            return super().__call__(inputs, deterministic=False, rngs=rngs)
        if self.rngs is None:
            raise ValueError("HashDropout in training needs rngs (a 'dropout' stream)")
        keep = 1.0 - self.rate
        threshold = jnp.uint32(min(round(self.rate * 2**32), 2**32 - 1))
        kept = hash_bits(self.rngs(), inputs.shape) >= threshold
        return jnp.where(kept, inputs / jnp.asarray(keep, inputs.dtype), jnp.zeros_like(inputs))


def true_indices(flags: jax.Array) -> jax.Array:
    """Indices of the True entries of a 1-D mask in order, then zeros: ``jnp.nonzero(flags,
    size=flags.size, fill_value=0)[0]``, but written by a scatter of distinct indices (no
    atomics on a GPU; ``jnp.nonzero`` scatter-adds its counts, colliding on a few slots)."""
    n = flags.shape[0]
    every = jnp.arange(n, dtype=jnp.int32)
    at = jnp.where(flags, jnp.cumsum(flags, dtype=jnp.int32) - 1, n + every)  # False: dropped
    return jnp.zeros(n, jnp.int32).at[at].set(every, mode="drop", unique_indices=True)


def unpack_rows(packed: jax.Array, at: jax.Array, valid: jax.Array, n_rows: int) -> jax.Array:
    """The packed rows (cap, ...) back to their rows ``at`` of an (n_rows, ...) zero array; the
    fill rows (``valid`` False) go to distinct rows past the end and are dropped, so the
    indices are unique and sorted (``at`` from :func:`true_indices`): a GPU stores them
    without atomics."""
    to = jnp.where(valid, at, n_rows + jnp.arange(at.shape[0], dtype=at.dtype))
    out = jnp.zeros((n_rows, *packed.shape[1:]), packed.dtype)
    return out.at[to].set(packed, mode="drop", unique_indices=True, indices_are_sorted=True)


class Packing(NamedTuple):
    """Where the real rows of a padded layout go when packed (:func:`packing`).

    ``at`` (cap,): the layout's row of packed row i (0 past the real rows); ``valid`` (cap,):
    packed row i holds a real row; ``inv`` (n,): the packed row of layout row r (0 where
    padded); ``real`` (n,): layout row r is real. :func:`pack` and :func:`unpack` move rows
    between the two with these.
    """

    at: jax.Array
    valid: jax.Array
    inv: jax.Array
    real: jax.Array


def packing(real: jax.Array, capacity: int) -> Packing:
    """The :class:`Packing` of the True rows of ``real`` (any shape, flattened in C order)
    into ``capacity`` rows, in order. The caller guarantees that they fit: rows past the
    capacity would be lost."""
    real = real.reshape(-1)
    at = true_indices(real)[:capacity]
    valid = jnp.arange(capacity) < jnp.sum(real, dtype=jnp.int32)
    inv = jnp.where(real, jnp.cumsum(real, dtype=jnp.int32) - 1, 0)
    return Packing(at, valid, inv, real)


def _rows(flags: jax.Array, x: jax.Array) -> jax.Array:
    return flags.reshape(flags.shape + (1,) * (x.ndim - 1))


@jax.custom_vjp
def pack(x: jax.Array, p: Packing) -> jax.Array:
    """The real rows of the layout ``x`` (n, ...) packed: (cap, ...), zero past them.

    A gather whose gradient is the gather :func:`unpack` (the two are each other's transpose),
    not the scatter-add XLA would make of a gather's gradient."""
    return jnp.where(_rows(p.valid, x), x[p.at], 0)


@jax.custom_vjp
def unpack(x: jax.Array, p: Packing) -> jax.Array:
    """Packed rows ``x`` (cap, ...) back in their layout: (n, ...), zero on the padded rows
    (the gradient is :func:`pack`)."""
    return jnp.where(_rows(p.real, x), x[p.inv], 0)


def _pack_fwd(x: jax.Array, p: Packing) -> tuple[jax.Array, Packing]:
    return pack(x, p), p


def _pack_bwd(p: Packing, g: jax.Array) -> tuple[jax.Array, None]:
    return unpack(g, p), None


def _unpack_fwd(x: jax.Array, p: Packing) -> tuple[jax.Array, Packing]:
    return unpack(x, p), p


def _unpack_bwd(p: Packing, g: jax.Array) -> tuple[jax.Array, None]:
    return pack(g, p), None


pack.defvjp(_pack_fwd, _pack_bwd)
unpack.defvjp(_unpack_fwd, _unpack_bwd)


def switch_by_capacity(
    capacities: Sequence[int],
    count: jax.Array,
    branch: Callable[[int], Callable[..., Any]],
    *operands: Any,
) -> Any:
    """``branch(c)(*operands)`` for the smallest static capacity ``c`` that holds a traced count.

    One compiled branch per capacity (``lax.switch``), so the work follows the data while every
    shape stays static. ``capacities`` must be sorted ascending; a count above the largest takes
    the largest (``lax.switch`` clamps its index).
    """
    which = jnp.searchsorted(jnp.asarray(capacities), count)  # the first capacity >= count
    return jax.lax.switch(which, [branch(c) for c in capacities], *operands)
