"""Optax optimiser chains: clipping, AdamW with a decay mask, and learning-rate schedules.

Schedules (``train.schedule``), all with a linear warm-up from 0 over ``warmup_steps``:

- ``"cosine"``: cosine decay to ``final_lr_fraction * lr`` at the last step;
- ``"constant"``: ``lr`` after the warm-up;
- ``"flat_decay"``: weaver's default (the ParT paper's): ``lr`` for the first 70% of the epochs,
  then multiplied by ``0.01^(1/n)`` at the start of each of the last ``n = max(1, int(0.3 epochs))``
  epochs, ending at 1% of ``lr``;
- ``"plateau"``: ``lr`` after the warm-up, multiplied by ``plateau_factor`` whenever the training
  loss averaged over an epoch has not improved for ``plateau_patience`` epochs
  (``optax.contrib.reduce_on_plateau``, fed the loss inside the jitted step, so it can only watch
  the training loss; early stopping watches the validation loss).

Optimisers (``train.optimizer``): ``"adamw"``; ``"ranger"`` = Lookahead (every ``lookahead_steps``
fast steps the slow weights move ``lookahead_alpha`` of the way to the fast ones, and the fast
weights restart from them) around RAdam with decoupled weight decay, as ParT was trained
(weaver-core; betas (0.95, 0.999), eps 1e-5). optax's own ``lookahead`` wants the parameters as a
``LookaheadParams`` pair, which the rest of the training code should not have to know about, so
:func:`lookahead` here keeps the slow weights in the optimiser state instead.

Weight decay applies to kernels only (arrays of rank >= 2) and never to the cls token; biases and
normalisation scales/offsets (rank 1) are not decayed.

Head learning rate (``train.head_lr_multiplier``, fine-tuning as in the ParT paper: lr 1e-4, the
new head x50): the head's updates are multiplied after the learning-rate step of AdamW/RAdam and
before Lookahead. For these optimisers that is exactly a learning rate ``multiplier x lr`` on the
head (as a PyTorch parameter group with its own lr): the Adam step does not depend on the lr, the
decoupled weight decay is scaled by the lr (so by the multiplier too), the schedule and a plateau
scale apply to both groups alike, and Lookahead's interpolation does not involve the lr. Gradient
clipping stays global over all parameters. With a multiplier of 1 the chain is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from reco.state import head_mask

if TYPE_CHECKING:
    from reco.train_config import TrainConfig


NO_DECAY_NAMES = ("cls_token",)  # parameters never decayed, whatever their rank (weaver's list)


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: kernels (rank >= 2), not biases, scales or
    the cls token."""

    def decays(path: Any, p: Any) -> bool:
        name = jax.tree_util.keystr(path)
        return p.ndim >= 2 and not any(n in name for n in NO_DECAY_NAMES)

    return jax.tree_util.tree_map_with_path(decays, params)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`: the inner optimiser's, the slow weights and the step count."""

    inner: Any
    slow: Any
    count: jax.Array


def lookahead(
    inner: optax.GradientTransformation, sync_period: int, alpha: float
) -> optax.GradientTransformationExtraArgs:
    """Lookahead (Zhang et al. 2019) with the slow weights in the optimiser state.

    Every ``sync_period`` steps: slow <- slow + alpha (fast - slow), and fast <- slow. The
    updates it returns take the parameters to the new fast weights (``apply_updates`` as usual).
    """
    if sync_period < 1 or not 0.0 < alpha <= 1.0:
        raise ValueError(
            f"lookahead needs sync_period >= 1 and 0 < alpha <= 1, got {sync_period}, {alpha}"
        )
    inner = optax.with_extra_args_support(inner)

    def init(params: Any) -> LookaheadState:
        # a copy: the train step donates its state, and one buffer must not be donated twice
        slow = jax.tree.map(jnp.copy, params)
        return LookaheadState(inner.init(params), slow, jnp.zeros((), jnp.int32))

    def update(updates: Any, state: LookaheadState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError("lookahead needs the parameters in update()")
        inner_updates, inner_state = inner.update(updates, state.inner, params, **extra)
        fast = optax.apply_updates(params, inner_updates)
        count = state.count + 1
        sync = count % sync_period == 0
        slow = jax.tree.map(lambda s, f: jnp.where(sync, s + alpha * (f - s), s), state.slow, fast)
        new = jax.tree.map(lambda s, f: jnp.where(sync, s, f), slow, fast)
        out = jax.tree.map(lambda n, p: n - p, new, params)
        return out, LookaheadState(inner_state, slow, count)

    return optax.GradientTransformationExtraArgs(init, update)


def make_schedule(
    cfg: TrainConfig, total_steps: int, steps_per_epoch: int | None = None
) -> optax.Schedule:
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
    if cfg.schedule == "flat_decay":
        if not steps_per_epoch:
            raise ValueError("schedule flat_decay needs steps_per_epoch")
        n_decay = max(1, int(0.3 * cfg.epochs))
        first_decay_epoch = cfg.epochs - n_decay
        gamma = 0.01 ** (1.0 / n_decay)

        def flat_decay(step: Any) -> Any:
            epoch = step // steps_per_epoch
            k = jnp.clip(epoch - first_decay_epoch + 1, 0, n_decay)
            ramp = jnp.minimum(1.0, step / warmup) if warmup else 1.0
            return cfg.lr * ramp * gamma**k

        return flat_decay
    if cfg.schedule in ("constant", "plateau"):
        if warmup == 0:
            return optax.constant_schedule(cfg.lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)],
            boundaries=[warmup],
        )
    raise ValueError(
        f"unknown schedule {cfg.schedule!r}; known: cosine, constant, plateau, flat_decay"
    )


def scale_head(multiplier: float, head: tuple[str, ...]) -> optax.GradientTransformation:
    """Multiply the updates of the head's parameters (top-level modules ``head``) by
    ``multiplier``; the other updates pass unchanged. Stateless."""
    return optax.masked(optax.scale(multiplier), lambda tree: head_mask(tree, head))


def make_optimizer(
    cfg: TrainConfig, total_steps: int, steps_per_epoch: int, head: tuple[str, ...] = ()
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """The optimiser chain and its learning-rate schedule.

    The chain's ``update`` must be called with ``value=<loss>`` (used by the plateau schedule,
    ignored by the others). Returns ``(tx, schedule)``; see :func:`current_lr` for logging.

    Args:
        head: the model's head modules (:func:`reco.state.head_modules`); their learning rate is
            ``cfg.head_lr_multiplier`` times the others'. Needed when the multiplier is not 1.

    Raises:
        ValueError: ``head_lr_multiplier`` is not 1 and ``head`` is empty.
    """
    schedule = make_schedule(cfg, total_steps, steps_per_epoch)
    head_lr = cfg.head_lr_multiplier != 1.0
    if head_lr and not head:
        raise ValueError(
            f"train.head_lr_multiplier = {cfg.head_lr_multiplier} needs the model's head modules"
        )
    parts: list[optax.GradientTransformation] = []
    if cfg.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    b1, b2 = cfg.betas
    if cfg.optimizer == "ranger":
        radam = optax.chain(
            optax.scale_by_radam(b1=b1, b2=b2, eps=cfg.eps),
            optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),  # decoupled decay
            optax.scale_by_learning_rate(schedule),
            *([scale_head(cfg.head_lr_multiplier, head)] if head_lr else []),
        )
        parts.append(lookahead(radam, cfg.lookahead_steps, cfg.lookahead_alpha))
    else:
        parts.append(
            optax.adamw(
                schedule, b1=b1, b2=b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
            )
        )
        if head_lr:
            parts.append(scale_head(cfg.head_lr_multiplier, head))
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
