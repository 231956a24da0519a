"""The station transformer's per-station layers and encodings (:mod:`reco.models.set_transformer`):
the pair features of two stations, the fixed Fourier encoding of a station's position, and the
shared 1-D CNN that summarises a station's trace.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import torch_uniform_init
from reco.models.part_layers import gelu


def station_pair_features(
    pos_a: jax.Array, pos_b: jax.Array, t_a: jax.Array | None, t_b: jax.Array | None
) -> jax.Array:
    """Pair features ``[distance, |t_a - t_b|]`` (or ``[distance]`` without times).

    Args:
        pos_a, pos_b: Float[Array, "... 3"] station positions in km.
        t_a, t_b: Float[Array, "..."] standardised arrival times, or None.

    Returns:
        Float[Array, "... 2"] (or "... 1"): the 3-D distance in km and the absolute time
        difference in standardised units; symmetric in (a, b), 0 on the diagonal.
    """
    d = jnp.sqrt(jnp.sum(jnp.square(pos_a - pos_b), axis=-1))
    if t_a is None or t_b is None:
        return d[..., None]
    return jnp.stack([d, jnp.abs(t_a - t_b)], axis=-1)


def fourier_features(xy: jax.Array, dim: int, wavelengths_km: tuple[float, float]) -> jax.Array:
    """Fixed sinusoidal encoding of (x, y): Float[Array, "... 2"] km -> Float[Array, "... dim"].

    ``dim / 4`` wavelengths spaced geometrically from the longest to the shortest; the channels
    are ``[sin x, cos x, sin y, cos y]``, each over all wavelengths.
    """
    n = dim // 4
    short, long = wavelengths_km
    ratio = (short / long) ** (1.0 / max(n - 1, 1))
    k = jnp.asarray([2.0 * math.pi / (long * ratio**i) for i in range(n)], jnp.float32)
    angles = xy[..., None] * k.reshape((1,) * xy.ndim + (n,))  # (..., 2, n)
    x, y = angles[..., 0, :], angles[..., 1, :]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=-1)


class TraceEncoder(nnx.Module):
    """Shared 1-D CNN over the time bins of each station's trace: (B, S, T, C) -> (B, S, 2 C_last).

    Stride-2 convolutions ('SAME' padding) with GELU, then the mean and the max over time.
    """

    def __init__(
        self, in_channels: int, channels: tuple[int, ...], kernel: int, *, rngs: nnx.Rngs
    ) -> None:
        convs = []
        for width in channels:
            init = torch_uniform_init(in_channels * kernel)  # PyTorch Conv1d default
            convs.append(
                nnx.Conv(
                    in_channels,
                    width,
                    kernel_size=(kernel,),
                    strides=(2,),
                    padding="SAME",
                    kernel_init=init,
                    bias_init=init,
                    rngs=rngs,
                )
            )
            in_channels = width
        self.convs = nnx.List(convs)
        self.out_features = 2 * channels[-1]

    def __call__(self, traces: jax.Array) -> jax.Array:
        """(..., T, C) traces (any leading axes: (B, S) or packed stations) -> (..., 2 C_last)."""
        *lead, t, c = traces.shape
        h = traces.reshape(-1, t, c)
        for conv in self.convs:
            h = gelu(conv(h))
        summary = jnp.concatenate([jnp.mean(h, axis=1), jnp.max(h, axis=1)], axis=-1)
        return summary.reshape(*lead, self.out_features)
