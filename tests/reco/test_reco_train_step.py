"""The pure jitted train and eval steps."""

from __future__ import annotations

import jax
import numpy as np

from reco.models import build_model
from reco.optim import make_optimizer
from reco.state import init_state
from reco.tasks import TargetScaler, TaskConfig
from reco.train import TrainConfig, make_eval_step, make_train_step


def _setup(cfg, stats, lr=3e-3):
    model = build_model(cfg, {"image": (11, 11, 3)}, 1, seed=0)
    tx, _ = make_optimizer(TrainConfig(lr=lr, warmup_steps=0, schedule="constant"), 100, 10)
    graphdef, state = init_state(model, tx)
    scaler = TargetScaler.from_stats(stats, ("log10_energy",))
    return graphdef, tx, state, scaler


def test_train_step_lowers_the_loss_on_a_fixed_batch(tiny_cnn, stats, loaders):
    graphdef, tx, state, scaler = _setup(tiny_cnn, stats, lr=1e-2)
    step = make_train_step(graphdef, tx, TaskConfig(), scaler)
    batch = next(loaders(batch_size=64)[0].epoch(0))
    batch = {k: v for k, v in batch.items() if k != "index"}
    losses = []
    for _ in range(40):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    losses = np.array(jax.device_get(losses))
    assert int(state.step) == 40
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.3 * losses[:3].mean(), losses


def test_eval_step_ignores_padding_rows(tiny_cnn, stats, data):
    graphdef, _, state, scaler = _setup(tiny_cnn, stats)
    eval_step = make_eval_step(graphdef, TaskConfig(), scaler)
    image, target = data[0][:10], data[1][:10]
    full = eval_step(state, {"image": image, "target": target, "valid": np.ones(10, np.float32)})
    rng = np.random.default_rng(5)
    padded = eval_step(
        state,
        {
            "image": np.concatenate([image, rng.normal(size=(6, 11, 11, 3)).astype(np.float32)]),
            "target": np.concatenate([target, np.zeros((6, 1), np.float32)]),
            "valid": np.concatenate([np.ones(10), np.zeros(6)]).astype(np.float32),
        },
    )
    for key in full:
        np.testing.assert_allclose(padded[key], full[key], rtol=1e-5)
    assert float(padded["n"]) == 10.0


def test_batch_statistics_are_carried_in_the_state(tiny_cnn, stats, loaders):
    graphdef, tx, state, scaler = _setup(tiny_cnn, stats)
    before = jax.tree.map(np.array, state.rest)
    step = make_train_step(graphdef, tx, TaskConfig(), scaler)
    batch = next(loaders()[0].epoch(0))
    state, _ = step(state, {k: v for k, v in batch.items() if k != "index"})
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.rest), strict=True)
    ]
    assert all(changed)
