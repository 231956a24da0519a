"""Optax optimiser chains: clipping, AdamW with a decay mask, and learning-rate schedules.

Schedules (``train.schedule``), all with a linear warm-up from 0 over ``warmup_steps``:

- ``"cosine"``: cosine decay to ``final_lr_fraction * lr`` at the last step;
- ``"constant"``: ``lr`` after the warm-up;
- ``"plateau"``: ``lr`` after the warm-up, multiplied by ``plateau_factor`` whenever the training
  loss averaged over an epoch has not improved for ``plateau_patience`` epochs
  (``optax.contrib.reduce_on_plateau``, fed the loss inside the jitted step, so it can only watch
  the training loss; early stopping watches the validation loss).

Weight decay applies to kernels only (arrays of rank >= 2); biases and normalisation scales/offsets
(rank 1) are not decayed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import optax

if TYPE_CHECKING:
    from reco.train import TrainConfig


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: kernels (rank >= 2), not biases or scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimiser step (before any plateau scaling)."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=cfg.lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=cfg.lr * cfg.final_lr_fraction,
        )
    if cfg.schedule in ("constant", "plateau"):
        if warmup == 0:
            return optax.constant_schedule(cfg.lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)],
            boundaries=[warmup],
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: cosine, constant, plateau")


def make_optimizer(
    cfg: TrainConfig, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """The optimiser chain and its learning-rate schedule.

    The chain's ``update`` must be called with ``value=<loss>`` (used by the plateau schedule,
    ignored by the others). Returns ``(tx, schedule)``; see :func:`current_lr` for logging.
    """
    schedule = make_schedule(cfg, total_steps)
    parts: list[optax.GradientTransformation] = []
    if cfg.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask))
    if cfg.schedule == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                accumulation_size=max(steps_per_epoch, 1),
            )
        )
    return optax.chain(*parts), schedule


def current_lr(schedule: optax.Schedule, opt_state: Any, step: int) -> float:
    """Effective learning rate at ``step`` (host float): schedule times any plateau scale."""
    lr = float(schedule(step))
    is_plateau = lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=is_plateau):
        if is_plateau(node):
            lr *= float(node.scale)
    return lr
