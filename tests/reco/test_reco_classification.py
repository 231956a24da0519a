"""The classification task: config checks, cross entropy, accuracy, probabilities, fit + evaluate."""

from __future__ import annotations

import dataclasses
import json

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline.config import to_dict
from pipeline.events import open_events, write_events
from pipeline.h5attrs import plain
from reco import tasks
from reco.evaluate import evaluate
from reco.tasks import TaskConfig

CLASSES = ("QCD", "Tbqq", "Wqq")


def clf(**kw) -> TaskConfig:
    return TaskConfig(targets=("label",), loss="cross_entropy", classes=CLASSES, **kw)


def test_config_checks():
    assert clf().n_outputs == 3 and clf().is_classification
    assert TaskConfig(targets=("a", "b")).n_outputs == 2
    with pytest.raises(ValueError, match="one target"):
        TaskConfig(targets=("label", "x"), loss="cross_entropy", classes=CLASSES)
    with pytest.raises(ValueError, match="at least two classes"):
        TaskConfig(targets=("label",), loss="cross_entropy", classes=("QCD",))
    with pytest.raises(ValueError, match="only for loss cross_entropy"):
        TaskConfig(classes=CLASSES)
    with pytest.raises(ValueError, match="label_smoothing"):
        clf(label_smoothing=1.0)


def test_cross_entropy_closed_forms():
    cfg, scaler = clf(), tasks.make_scaler(clf(), {})
    target = jnp.array([[0.0], [2.0]])
    uniform = jnp.zeros((2, 3))
    np.testing.assert_allclose(
        tasks.per_event_loss(cfg, uniform, target, scaler), np.log(3.0), rtol=1e-6
    )
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    expected = [
        -np.log(np.exp(2) / (np.exp(2) + 2)),
        -np.log(np.exp(3) / (1 + np.e + np.exp(3))),
    ]
    np.testing.assert_allclose(
        tasks.per_event_loss(cfg, logits, target, scaler), expected, rtol=1e-5
    )
    # label smoothing eps: loss = (1 - eps) CE(label) + eps * mean over classes of CE(class)
    eps = 0.3
    smooth = tasks.per_event_loss(clf(label_smoothing=eps), logits, target, scaler)
    logp = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    ref = -(1 - eps) * logp[[0, 1], [0, 2]] - eps * logp.mean(-1)
    np.testing.assert_allclose(smooth, ref, rtol=1e-5)


def test_accuracy_and_valid_weighting():
    cfg, scaler = clf(), tasks.make_scaler(clf(), {})
    logits = jnp.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    target = jnp.array([[0.0], [1.0], [0.0], [2.0]])  # two right, two wrong
    sums = tasks.metric_sums(cfg, logits, target, jnp.array([1.0, 1.0, 1.0, 0.0]), scaler)
    assert tasks.summarise_sums(cfg, sums) == {"accuracy": pytest.approx(2 / 3)}


def test_predictions_are_probabilities():
    cfg = clf()
    out = tasks.predictions(
        cfg, np.array([[1000.0, 0, 0], [0.0, 0, 0]]), tasks.make_scaler(cfg, {})
    )
    probs = out["probs"]
    assert probs.shape == (2, 3) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[1], 1 / 3, rtol=1e-6)


def _images(rng, n: int):
    """Images whose class is readable: class k has signals ~ 10^k larger (log-normal spread)."""
    label = rng.integers(0, 3, n)
    trigger = rng.random((n, 11, 11)) < 0.15
    scale = np.exp(1.0 + 2.3 * label)[:, None, None]
    signal = np.where(trigger, scale * rng.lognormal(0, 0.3, (n, 11, 11)), 0).astype(np.float32)
    return {
        "station/signal": signal,
        "station/time": np.zeros((n, 11, 11), np.float32),
        "station/trigger": trigger,
        "truth/label": label.astype(np.int64),
    }


def test_fit_and_evaluate_a_classifier(tmp_path, tiny_cnn, fast_train):
    from pipeline.features import FeatureConfig, fit_stats
    from pipeline.loader import Loader, LoaderConfig
    from pipeline.tracking import DictTracker
    from reco.train import fit

    rng = np.random.default_rng(0)
    paths = {
        split: write_events(tmp_path / f"{split}.h5", _images(rng, n), {"kind": "toy"})
        for split, n in (("train", 256), ("test", 96))
    }
    task = clf()
    features, batching = FeatureConfig(), LoaderConfig(batch_size=32, prefetch=0)
    train_cfg = dataclasses.replace(fast_train, epochs=6, lr=1e-2)
    tracker = DictTracker()
    with open_events(paths["train"]) as train_file:
        stats = fit_stats(features, train_file, task.targets)
        train = Loader.from_config(
            train_file, batching, features, stats, task.targets, shuffle=True, seed=0
        )
        config = {"features": to_dict(features), "loader": to_dict(batching), "task": to_dict(task)}
        fit(
            tiny_cnn,
            task,
            train_cfg,
            train,
            train,
            stats.to_dict(),
            tmp_path / "run",
            tracker,
            seed=0,
            config_dict=config,
            progress=False,
        )
    assert tracker.metrics["val/accuracy"][-1][1] > 0.9
    out = evaluate(tmp_path / "run", paths["test"], tmp_path / "predictions.h5", observers=())
    with h5py.File(out, "r") as f:
        probs = f["prediction/probs"][()]
        label = f["truth/label"][()]
        assert plain(f.attrs["task"]) == "classification"
        assert json.loads(plain(f.attrs["class_names"])) == list(CLASSES)
    assert probs.shape == (96, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert (probs.argmax(-1) == label).mean() > 0.9
