"""Mixed precision: bfloat16 compute with float32 master weights and float32 statistics.

``train.precision: bfloat16`` sets the compute ``dtype`` of every Flax layer of a model
(``nnx.Linear``, ``nnx.Conv``, ``nnx.LayerNorm``, ``nnx.BatchNorm``, ``nnx.Embed``, ...) while
their ``param_dtype`` stays float32: the parameters and the optimiser state are float32 (the
*master weights*), each layer casts them and its input to bfloat16 for its matrix multiply, and
the gradients flow back through the casts into float32. The normalisation layers compute their
mean and variance in float32 (Flax promotes the statistics to at least float32) and keep float32
running averages; the project's attention computes its logits' softmax in float32
(:mod:`reco.models.attention`); the train and eval steps cast the model's output to float32
before the loss. bfloat16 has float32's exponent range, so no loss scaling is needed.

The compute dtype is part of the model's graph definition (static), not of its variables, so a
checkpoint of a bfloat16 run is an ordinary float32 checkpoint: evaluation and fine-tuning load it
in float32 unless told otherwise.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from flax import nnx

Precision = Literal["float32", "bfloat16"]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str) -> jnp.dtype:
    """The compute dtype of a precision name.

    Raises:
        ValueError: an unknown name (listing the known ones).
    """
    try:
        return jnp.dtype(DTYPES[precision])
    except KeyError:
        raise ValueError(
            f"train.precision must be one of {sorted(DTYPES)}, got {precision!r}"
        ) from None


def apply(model: nnx.Module, precision: str) -> int:
    """Set the compute dtype of every Flax layer of ``model`` (in place); returns how many.

    A layer is any submodule with both a ``dtype`` (compute) and a ``param_dtype`` (storage)
    attribute, the convention of Flax's layers; storage stays as it is. ``"float32"`` restores
    the default (``dtype=None``: compute in the dtype of the inputs and parameters).
    """
    dtype = compute_dtype(precision)
    value = None if dtype == jnp.float32 else dtype
    n = 0
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "dtype") and hasattr(module, "param_dtype"):
            module.dtype = value
            n += 1
    return n
