"""Small building blocks shared by the architectures: normalisation choice and activations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
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
