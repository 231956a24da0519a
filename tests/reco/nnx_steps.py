"""A shared test helper: a few jitted Adam steps of a classifier on a fixed batch."""

from __future__ import annotations

import jax
import optax
from flax import nnx


def adam_classifier_losses(
    model: nnx.Module, inputs: dict, labels: jax.Array, steps: int, lr: float = 1e-2
) -> list[float]:
    """Cross-entropy of ``model(inputs, train=True)`` against ``labels`` over ``steps`` steps."""
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss_fn(m):
            logits = m(inputs, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    return [float(step(model, opt)) for _ in range(steps)]
