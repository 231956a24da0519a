"""The fit loop: logging in batches, checkpoints, resume, early stopping, non-finite losses."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from pipeline.config import to_dict
from pipeline.tracking import DictTracker
from reco.checkpoint import Checkpoints, load_for_inference, read_meta
from reco.models import build_model
from reco.optim import make_optimizer
from reco.state import init_state, merge_model
from reco.tasks import TargetScaler, TaskConfig
from reco.train import NonFiniteLossError, make_train_step
from reco.train import fit as _fit


def fit(model_cfg, train_cfg, train, val, stats, run_dir, tracker=None, **kw):
    config = {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "seed": 0}
    return _fit(
        model_cfg,
        TaskConfig(),
        train_cfg,
        train,
        val,
        stats,
        run_dir,
        tracker or DictTracker(),
        seed=0,
        config_dict=config,
        progress=False,
        **kw,
    )


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            jax.random.key_data(y) if jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key) else y,
        )
        for x, y in zip(la, lb, strict=True)
    )


def test_fit_logs_in_batches_and_writes_best_and_last(
    tiny_cnn, fast_train, loaders, stats, tmp_path
):
    train, val = loaders()
    tracker = DictTracker()
    result = fit(tiny_cnn, fast_train, train, val, stats, tmp_path, tracker)
    steps = 2 * len(train)  # 2 epochs x 3 batches
    assert (result.steps, result.epochs_run, result.stopped_early) == (steps, 2, False)
    # train metrics at every 2nd step and at epoch ends (remainders); val once per epoch
    assert [s for s, _ in tracker.metrics["train/loss"]] == [2, 3, 4, 6]
    assert [s for s, _ in tracker.metrics["val/loss"]] == [3, 6]
    assert "val/rmse/log10_energy" in tracker.metrics and "train/lr" in tracker.metrics
    assert tracker.metric_calls == 6
    assert result.best_val_loss == min(v for _, v in tracker.metrics["val/loss"])
    assert result.last_checkpoint == tmp_path.absolute() / "checkpoints" / "last" / str(steps)
    assert result.best_checkpoint.parent == tmp_path.absolute() / "checkpoints" / "best"
    meta = read_meta(tmp_path)  # a run dir resolves to its best checkpoint
    assert meta["val_loss"] == result.best_val_loss and meta["task"]["targets"] == ["log10_energy"]
    _, config, saved_stats = load_for_inference(result.last_checkpoint)
    assert config["train"]["epochs"] == 2 and saved_stats == stats


def test_checkpoint_round_trip_is_exact(tiny_cnn, stats, loaders, fast_train, tmp_path):
    model = build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed=0)
    tx, _ = make_optimizer(fast_train, 10, 3)
    graphdef, state = init_state(model, tx)
    step = make_train_step(
        graphdef, tx, TaskConfig(), TargetScaler.from_stats(stats, ("log10_energy",))
    )
    for batch in loaders()[0].epoch(0):
        state, _ = step(state, {k: v for k, v in batch.items() if k != "index"})
    meta = {
        "model": to_dict(tiny_cnn),
        "task": to_dict(TaskConfig()),
        "input_spec": {"image": [11, 11, 3]},
        "n_outputs": 1,
        "epoch": 0,
        "step": 3,
    }
    ckpt = Checkpoints(tmp_path / "checkpoints")
    ckpt.save("best", state, meta, {"a": [1, 2]}, stats)
    template = init_state(build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed=7), tx)[1]
    restored, restored_meta = ckpt.restore("best", template)
    ckpt.close()
    assert restored_meta == meta and int(restored.step) == 3
    for part in ("params", "rest", "opt_state"):
        assert _leaves_equal(getattr(restored, part), getattr(state, part)), part
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    # the inference model rebuilt from the stored config predicts bit for bit the same
    model, config, saved_stats = load_for_inference(tmp_path)
    x = {"image": np.random.default_rng(0).normal(size=(7, 11, 11, 3)).astype(np.float32)}
    expected = merge_model(graphdef, state.params, state.rest)(x, train=False)
    np.testing.assert_array_equal(model(x, train=False), expected)
    assert config == {"a": [1, 2]} and saved_stats == stats


def test_resume_continues_the_run_exactly(tiny_cnn, loaders, stats, tmp_path):
    cfg = dataclasses.replace(
        __import__("reco.train", fromlist=["TrainConfig"]).TrainConfig(),
        epochs=2,
        lr=3e-3,
        warmup_steps=0,
        schedule="constant",
        log_every_steps=100,
    )
    first = fit(tiny_cnn, cfg, *loaders(), stats, tmp_path / "a")
    longer = dataclasses.replace(cfg, epochs=3)
    tracker = DictTracker()
    resumed = fit(tiny_cnn, longer, *loaders(), stats, tmp_path / "a", tracker, resume=True)
    straight = fit(tiny_cnn, longer, *loaders(), stats, tmp_path / "b")
    assert first.steps == 6 and resumed.steps == straight.steps == 9
    assert resumed.epochs_run == 3
    assert [s for s, _ in tracker.metrics["val/loss"]] == [9]  # only the new epoch was run
    a, b = (
        load_for_inference(resumed.last_checkpoint)[0],
        load_for_inference(straight.last_checkpoint)[0],
    )
    x = {"image": np.ones((2, 11, 11, 3), np.float32)}
    np.testing.assert_array_equal(a(x, train=False), b(x, train=False))
    with pytest.raises(FileExistsError, match="resume"):
        fit(tiny_cnn, cfg, *loaders(), stats, tmp_path / "a")


def test_resume_without_checkpoint_fails(tiny_cnn, fast_train, loaders, stats, tmp_path):
    with pytest.raises(FileNotFoundError, match="last"):
        fit(tiny_cnn, fast_train, *loaders(), stats, tmp_path, resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_cnn, fast_train, loaders, stats, tmp_path
):
    train, val = loaders(corrupt_epochs=(1,))
    cfg = dataclasses.replace(fast_train, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"step 4 \(epoch 1\)") as err:
        fit(tiny_cnn, cfg, train, val, stats, tmp_path)
    assert (err.value.step, err.value.epoch) == (4, 1)
    meta = read_meta(tmp_path / "checkpoints" / "last")
    assert (meta["epoch"], meta["step"]) == (0, 3)
    model, _, _ = load_for_inference(tmp_path / "checkpoints" / "last")
    out = model({"image": np.zeros((1, 11, 11, 3), np.float32)}, train=False)
    assert np.isfinite(np.asarray(out)).all()


def test_early_stopping_on_a_flat_validation_loss(fast_train, loaders, stats, tmp_path):
    # LayerNorm (no running statistics) and a negligible learning rate: the model, hence the
    # validation loss, does not change, so no epoch after the first improves on it.
    from reco.models.cnn import CNNConfig

    model_cfg = CNNConfig(stem_width=4, widths=(4,), head_widths=(), norm="layer")
    cfg = dataclasses.replace(fast_train, epochs=10, lr=1e-30, early_stopping_patience=2)
    tracker = DictTracker()
    result = fit(model_cfg, cfg, *loaders(), stats, tmp_path, tracker)
    vals = [v for _, v in tracker.metrics["val/loss"]]
    assert len(set(vals)) == 1, vals
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0
    assert result.best_checkpoint.name == "3" and result.last_checkpoint.name == "9"


def test_sigterm_checkpoints_mid_epoch_and_resume_ends_identical(
    tiny_cnn, loaders, stats, tmp_path
):
    """SLURM preemption: SIGTERM after the 2nd batch of epoch 1 writes a checkpoint of that exact
    position and stops; --resume skips the batches already seen and ends with the parameters of
    an uninterrupted run (same seed, same data order)."""
    import os
    import signal

    from reco.train import Preempted, TrainConfig

    cfg = dataclasses.replace(
        TrainConfig(), epochs=3, lr=3e-3, warmup_steps=0, schedule="constant", log_every_steps=2
    )
    train, val = loaders()

    class Terminating:  # the loader of the interrupted run: SIGTERM while serving epoch 1
        input_spec, n_events = train.input_spec, train.n_events

        def __len__(self) -> int:
            return len(train)

        def epoch(self, e: int):
            for i, batch in enumerate(train.epoch(e)):
                if e == 1 and i == 1:  # during the 2nd step's batch: stop after that step
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

    with pytest.raises(Preempted, match="epoch 1, after 2 of its batches") as stopped:
        fit(tiny_cnn, cfg, Terminating(), val, stats, tmp_path / "a")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    meta = read_meta(tmp_path / "a", "last")
    assert (meta["epoch"], meta["batches_done"], meta["step"]) == (1, 2, 5)
    assert stopped.value.checkpoint == tmp_path / "a" / "checkpoints" / "last" / "5"

    tracker = DictTracker()
    resumed = fit(tiny_cnn, cfg, *loaders(), stats, tmp_path / "a", tracker, resume=True)
    straight = fit(tiny_cnn, cfg, *loaders(), stats, tmp_path / "b")
    assert resumed.steps == straight.steps == 9 and resumed.epochs_run == 3
    assert [s for s, _ in tracker.metrics["val/loss"]] == [6, 9]  # epochs 1 and 2 validated
    a = load_for_inference(resumed.last_checkpoint)[0]
    b = load_for_inference(straight.last_checkpoint)[0]
    x = {"image": np.ones((2, 11, 11, 3), np.float32)}
    np.testing.assert_array_equal(a(x, train=False), b(x, train=False))


def test_a_batch_that_does_not_fit_says_lower_the_batch_size(
    tiny_cnn, loaders, stats, fast_train, tmp_path, monkeypatch
):
    import reco.train as train_module
    from reco.train import BatchTooLargeError

    def exhausted_step(*args, **kwargs):
        def step(state, batch):
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9GiB")

        return step

    monkeypatch.setattr(train_module, "make_train_step", exhausted_step)
    with pytest.raises(BatchTooLargeError, match="lower loader.batch_size") as err:
        fit(tiny_cnn, fast_train, *loaders(batch_size=16), stats, tmp_path)
    assert "batch size 16" in str(err.value) and "9GiB" in str(err.value)


def test_nonfinite_skip_leaves_the_model_as_it_was_and_counts(
    tiny_cnn, fast_train, loaders, stats, tmp_path
):
    """train.nonfinite = skip: the 3 NaN steps of epoch 1 change nothing (the epoch's end state
    equals epoch 0's), are counted and logged; past max_skipped_steps training stops."""
    train, val = loaders(corrupt_epochs=(1,))
    cfg = dataclasses.replace(
        fast_train, epochs=2, nonfinite="skip", max_skipped_steps=3, schedule="constant"
    )  # constant: epoch 0 of a 2-epoch run is a 1-epoch run
    cfg = dataclasses.replace(cfg, warmup_steps=0)
    tracker = DictTracker()
    result = fit(tiny_cnn, cfg, train, val, stats, tmp_path / "a", tracker)
    assert result.steps == 6 and result.epochs_run == 2
    assert tracker.metrics["train/skipped_steps"][-1] == (6, 3.0)
    assert read_meta(tmp_path / "a", "last")["skipped_steps"] == 3
    once = fit(tiny_cnn, dataclasses.replace(cfg, epochs=1), *loaders(), stats, tmp_path / "b")
    x = {"image": np.ones((2, 11, 11, 3), np.float32)}
    after_nan_epoch = load_for_inference(result.last_checkpoint)[0](x, train=False)
    after_epoch_0 = load_for_inference(once.last_checkpoint)[0](x, train=False)
    np.testing.assert_array_equal(after_nan_epoch, after_epoch_0)

    strict = dataclasses.replace(cfg, max_skipped_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"in 3 steps by step 6 .*max_skipped_steps = 2"):
        fit(tiny_cnn, strict, *loaders(corrupt_epochs=(1,)), stats, tmp_path / "c")
