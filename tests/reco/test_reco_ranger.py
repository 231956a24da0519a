"""Ranger (Lookahead around RAdam), the flat+decay schedule and the cls-token decay mask."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reco.models import build_model
from reco.optim import decay_mask, lookahead, make_optimizer, make_schedule
from reco.state import init_state
from reco.tasks import TargetScaler, TaskConfig
from reco.train import TrainConfig, make_train_step


def test_flat_decay_schedule_matches_weaver():
    cfg = TrainConfig(lr=1e-3, epochs=10, warmup_steps=0, schedule="flat_decay")
    sched = make_schedule(cfg, total_steps=50, steps_per_epoch=5)
    gamma = 0.01 ** (1 / 3)  # n = max(1, int(0.3 * 10)) = 3 decay epochs: 7, 8, 9
    for step, expected in [
        (0, 1e-3),
        (34, 1e-3),
        (35, 1e-3 * gamma),
        (44, 1e-3 * gamma**2),
        (49, 1e-5),
    ]:
        assert float(sched(step)) == pytest.approx(expected, rel=1e-5), step
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule(cfg, total_steps=50)


def test_lookahead_closed_form():
    # SGD with lr 1 on a constant gradient 1: fast weights fall by 1 per step; every 2 steps the
    # slow weights move half-way to the fast ones and the fast weights restart from them.
    tx = lookahead(optax.sgd(1.0), sync_period=2, alpha=0.5)
    params = jnp.array([1.0])
    state = tx.init(params)
    seen = []
    for _ in range(4):
        updates, state = tx.update(jnp.array([1.0]), state, params)
        params = optax.apply_updates(params, updates)
        seen.append(float(params[0]))
    assert seen == pytest.approx([0.0, 0.0, -1.0, -1.0])
    assert float(state.slow[0]) == pytest.approx(-1.0)


def test_cls_token_is_not_decayed():
    from reco.models.part import PartConfig

    small = PartConfig(embed_dims=(16, 32, 16), pair_embed_dims=(8, 8), num_heads=2, num_layers=1)
    model = build_model(small, {"particles": (8, 7), "vectors": (8, 4)}, 3, seed=0)
    _, state = init_state(model, optax.sgd(0.1))
    mask = decay_mask(state.params)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    cls = [v for k, v in flat.items() if "cls_token" in k]
    assert cls == [False]
    assert any(flat.values())  # kernels are decayed
    biases = [v for k, v in flat.items() if "bias" in k]
    assert biases and not any(biases)  # rank-1 biases are not decayed


def test_ranger_trains_through_the_donating_train_step(tiny_cnn, stats, loaders):
    cfg = TrainConfig(
        lr=3e-2,
        warmup_steps=0,
        schedule="constant",
        optimizer="ranger",
        betas=(0.95, 0.999),
        eps=1e-5,
    )
    model = build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed=0)
    tx, _ = make_optimizer(cfg, 100, 10)
    graphdef, state = init_state(model, tx)
    step = make_train_step(
        graphdef, tx, TaskConfig(), TargetScaler.from_stats(stats, ("log10_energy",))
    )
    batch = {k: v for k, v in next(loaders(batch_size=64)[0].epoch(0)).items() if k != "index"}
    losses = []
    for _ in range(60):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    losses = np.array(jax.device_get(losses))
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.6 * losses[:3].mean(), losses


def test_adamw_uses_configured_betas():
    cfg = dataclasses.replace(
        TrainConfig(),
        betas=(0.5, 0.6),
        eps=1e-3,
        schedule="constant",
        warmup_steps=0,
        grad_clip=None,
    )
    tx, _ = make_optimizer(cfg, 10, 2)
    state = tx.init({"w": jnp.ones((2, 2))})
    _, state = tx.update(
        {"w": jnp.ones((2, 2))}, state, {"w": jnp.ones((2, 2))}, value=jnp.array(1.0)
    )
    mu = [leaf for leaf in jax.tree.leaves(state) if getattr(leaf, "shape", None) == (2, 2)][0]
    np.testing.assert_allclose(mu, 0.5)  # first moment after one step = (1 - b1) * g
