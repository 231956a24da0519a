"""Targets, losses and the optimiser chain: closed forms and invariants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reco import tasks
from reco.optim import current_lr, decay_mask, make_optimizer, make_schedule
from reco.tasks import TargetScaler, TaskConfig
from reco.train import TrainConfig

SCALER = TargetScaler(np.array([18.5, 750.0], np.float32), np.array([0.5, 60.0], np.float32))


def test_normalise_round_trip_and_values():
    y = jnp.array([[18.5, 750.0], [19.0, 630.0]])
    z = tasks.normalise(y, SCALER)
    np.testing.assert_allclose(z, [[0.0, 0.0], [1.0, -2.0]], atol=1e-6)
    np.testing.assert_allclose(tasks.denormalise(z, SCALER), y, rtol=1e-6)


def test_scaler_from_stats_needs_every_target():
    stats = {"targets": {"log10_energy": {"mean": 18.5, "std": 0.5, "count": 10}}}
    assert TargetScaler.from_stats(stats, ("log10_energy",)).std.tolist() == [0.5]
    with pytest.raises(KeyError, match="xmax"):
        TargetScaler.from_stats(stats, ("log10_energy", "xmax"))
    with pytest.raises(ValueError, match="bad target statistics"):
        TargetScaler.from_stats({"targets": {"a": {"mean": 0.0, "std": 0.0}}}, ("a",))


@pytest.mark.parametrize("loss", ["mse", "huber", "relative"])
def test_padding_rows_do_not_change_the_loss(loss):
    cfg = TaskConfig(targets=("log10_energy", "xmax"), loss=loss)
    rng = np.random.default_rng(0)
    pred = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
    target = jnp.asarray([[18.7, 700.0], [19.2, 800.0], [18.1, 650.0], [18.9, 720.0], [19.5, 810]])
    ref = tasks.loss(cfg, pred, target, jnp.ones(5), SCALER)
    # padding rows: garbage predictions, zero targets (as the loader pads), valid = 0
    padded = tasks.loss(
        cfg,
        jnp.concatenate([pred, 1e3 * jnp.ones((3, 2))]),
        jnp.concatenate([target, jnp.zeros((3, 2))]),
        jnp.concatenate([jnp.ones(5), jnp.zeros(3)]),
        SCALER,
    )
    assert bool(jnp.isfinite(padded))
    np.testing.assert_allclose(padded, ref, rtol=1e-6)
    grad = jax.grad(lambda p: tasks.loss(cfg, p, target, jnp.ones(5), SCALER))(pred)
    assert bool(jnp.isfinite(grad).all())


def test_loss_closed_forms():
    target = jnp.array([[19.0, 800.0]])
    one = jnp.ones(1)
    # prediction one standard deviation high in both targets
    pred = tasks.normalise(target, SCALER) + 1.0
    assert float(tasks.loss(TaskConfig(loss="mse"), pred, target, one, SCALER)) == pytest.approx(
        2.0
    )
    huber = TaskConfig(loss="huber", huber_delta=0.5)
    assert float(tasks.loss(huber, pred, target, one, SCALER)) == pytest.approx(
        2 * 0.5 * (1.0 - 0.25)
    )
    # relative: E_pred = 1.1 E_true -> ((E_pred - E_true) / E_true)^2 = 0.01
    e_scaler = TargetScaler(np.array([3.0], np.float32), np.array([2.0], np.float32))
    e_true = jnp.array([[1.5], [10.0]])
    e_pred = tasks.normalise(1.1 * e_true, e_scaler)
    rel = tasks.loss(
        TaskConfig(targets=("energy_eev",), loss="relative"), e_pred, e_true, jnp.ones(2), e_scaler
    )
    assert float(rel) == pytest.approx(0.01, rel=1e-4)


def test_error_sums_are_physical_and_weighted():
    target = jnp.array([[19.0, 800.0], [18.0, 700.0], [0.0, 0.0]])
    pred = tasks.normalise(target + jnp.array([[0.1, 10.0]]), SCALER)
    sums = tasks.error_sums(pred, target, jnp.array([1.0, 1.0, 0.0]), SCALER)
    assert float(sums["n"]) == 2.0
    np.testing.assert_allclose(sums["err"], [0.2, 20.0], rtol=1e-4)
    np.testing.assert_allclose(sums["sq_err"], [0.02, 200.0], rtol=1e-4)


def test_task_config_validation():
    with pytest.raises(ValueError, match="duplicates"):
        TaskConfig(targets=("xmax", "xmax"))
    with pytest.raises(ValueError):
        TaskConfig(targets=())


def test_weight_decay_mask_spares_biases_and_scales():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
        "norm": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
        "dense": {"kernel": jnp.ones((4, 2))},
    }
    assert decay_mask(params) == {
        "conv": {"kernel": True, "bias": False},
        "norm": {"scale": False, "bias": False},
        "dense": {"kernel": True},
    }
    # with zero gradients only the decayed leaves move
    tx, _ = make_optimizer(
        TrainConfig(lr=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant"), 10, 5
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params, value=jnp.asarray(1.0))
    moved = jax.tree.map(lambda u: bool((u != 0).any()), updates)
    assert moved == decay_mask(params)


def test_schedules():
    cos = make_schedule(TrainConfig(lr=1e-3, warmup_steps=10, final_lr_fraction=0.1), 110)
    assert float(cos(0)) == 0.0
    assert float(cos(10)) == pytest.approx(1e-3)
    assert float(cos(110)) == pytest.approx(1e-4)
    assert float(cos(60)) == pytest.approx(0.55e-3, rel=1e-3)  # half-way down the cosine
    const = make_schedule(TrainConfig(lr=1e-3, warmup_steps=4, schedule="constant"), 100)
    assert [float(const(s)) for s in (0, 2, 4, 99)] == pytest.approx([0, 5e-4, 1e-3, 1e-3])


def test_plateau_reduces_the_learning_rate_when_the_loss_stalls():
    cfg = TrainConfig(
        lr=1e-2,
        warmup_steps=0,
        schedule="plateau",
        plateau_patience=2,
        plateau_factor=0.5,
        grad_clip=None,
    )
    tx, schedule = make_optimizer(cfg, total_steps=100, steps_per_epoch=4)
    params = {"w": jnp.ones((2, 2))}
    state = tx.init(params)
    assert current_lr(schedule, state, 0) == pytest.approx(1e-2)
    for _ in range(4 * 4):  # four "epochs" of a flat loss
        _, state = tx.update({"w": jnp.ones((2, 2))}, state, params, value=jnp.asarray(1.0))
    assert current_lr(schedule, state, 16) < 1e-2
    assert isinstance(tx, optax.GradientTransformationExtraArgs)


def test_multi_task_loss_weights():
    target = jnp.array([[19.0, 800.0]])
    pred = tasks.normalise(target, SCALER) + jnp.array([[1.0, 2.0]])  # 1 and 2 sigma off
    cfg = TaskConfig(targets=("log10_energy", "xmax"), loss_weights=(1.0, 0.25))
    assert float(tasks.loss(cfg, pred, target, jnp.ones(1), SCALER)) == pytest.approx(1.0 + 1.0)
    plain = TaskConfig(targets=("log10_energy", "xmax"))
    assert float(tasks.loss(plain, pred, target, jnp.ones(1), SCALER)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="one weight per regression target"):
        TaskConfig(targets=("log10_energy", "xmax"), loss_weights=(1.0,))
    with pytest.raises(ValueError, match=">= 0"):
        TaskConfig(targets=("log10_energy",), loss_weights=(0.0,))
