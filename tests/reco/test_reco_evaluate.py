"""The predictions file: contract names, file order, de-normalisation, attributes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pipeline.config import to_dict
from pipeline.events import open_events, write_events
from pipeline.h5attrs import plain
from reco.checkpoint import Checkpoints
from reco.evaluate import evaluate
from reco.models import build_model
from reco.optim import make_optimizer
from reco.state import init_state, merge_model
from reco.tasks import TaskConfig


@pytest.fixture
def events_file(tmp_path, synth):
    image, log10_e = synth(50, seed=3)
    rng = np.random.default_rng(0)
    arrays = {
        "station/signal": image[..., 0],
        "truth/log10_energy": log10_e[:, 0],
        "truth/energy_eev": (10 ** (log10_e[:, 0] - 18)).astype(np.float32),
        "truth/xmax": rng.normal(750, 50, 50).astype(np.float32),
        "truth/n_triggered": rng.integers(3, 20, 50).astype(np.int16),
        "meta/station_x": np.zeros((11, 11), np.float32),
    }
    attrs = {"kind": "airshower", "split": "test", "config_hash": "abc123", "seed": 7}
    return write_events(tmp_path / "test.h5", arrays, attrs), image, log10_e


@pytest.fixture
def run_dir(tmp_path, tiny_cnn, stats, fast_train):
    model = build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed=0)
    tx, _ = make_optimizer(fast_train, 10, 3)
    graphdef, state = init_state(model, tx)
    meta = {
        "model": to_dict(tiny_cnn),
        "task": to_dict(TaskConfig()),
        "n_outputs": 1,
        "input_spec": {"image": [11, 11, 3]},
        "epoch": 0,
        "step": 0,
    }
    ckpt = Checkpoints(tmp_path / "run" / "checkpoints")
    ckpt.save("best", state, meta, {"model": to_dict(tiny_cnn)}, stats)
    ckpt.close()
    return tmp_path / "run", merge_model(graphdef, state.params, state.rest)


def test_predictions_file_follows_the_contract(events_file, run_dir, fake_loader, stats, tmp_path):
    path, image, log10_e = events_file
    run, model = run_dir
    seen = {}

    def factory(stats_dict, targets):
        seen["stats"], seen["targets"] = stats_dict, targets
        # shuffled and padded (50 events in batches of 16): evaluate must restore file order
        return fake_loader(image, log10_e, batch_size=16, shuffle=True, seed=1)

    out = evaluate(
        run,
        path,
        tmp_path / "run" / "predictions.h5",
        loader_factory=factory,
        attrs={"run_id": "r1"},
    )
    assert seen == {"stats": stats, "targets": ("log10_energy",)}
    with h5py.File(out, "r") as f:
        names = set()
        f.visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: plain(v) for k, v in f.attrs.items()}
        data = {n: f[n][()] for n in names}
    assert names == {
        "prediction/log10_energy",
        "prediction/energy_eev",
        "truth/log10_energy",
        "truth/energy_eev",
        "truth/xmax",
        "truth/n_triggered",
        "observer/n_triggered",
    }
    with open_events(path) as events:
        for name in ("truth/log10_energy", "truth/xmax", "truth/n_triggered"):
            np.testing.assert_array_equal(data[name], events.read(name))
        np.testing.assert_array_equal(
            data["observer/n_triggered"], events.read("truth/n_triggered")
        )
    # file order and physical units: the model's output de-normalised with the train stats
    moments = stats["targets"]["log10_energy"]
    direct = np.asarray(model({"image": image}, train=False))[:, 0]
    expected = direct * np.float32(moments["std"]) + np.float32(moments["mean"])
    np.testing.assert_allclose(data["prediction/log10_energy"], expected, rtol=1e-6)
    assert data["prediction/log10_energy"].dtype == np.float32
    np.testing.assert_allclose(
        data["prediction/energy_eev"], 10 ** (data["prediction/log10_energy"] - 18.0), rtol=1e-5
    )
    assert attrs["kind"] == "predictions" and attrs["model"] == "cnn"
    assert attrs["split"] == "test" and attrs["config_hash"] == "abc123" and attrs["run_id"] == "r1"
    assert attrs["checkpoint"].endswith("checkpoints/best/0") and attrs["n_events"] == 50
    assert json.loads(attrs["targets"]) == ["log10_energy"] and "schema_version" in attrs
    assert not list(out.parent.glob("*.tmp"))


def test_a_loader_missing_events_is_an_error(events_file, run_dir, fake_loader, tmp_path):
    path, image, log10_e = events_file
    short = fake_loader(image[:40], log10_e[:40], batch_size=16)
    with pytest.raises(ValueError, match="10 missing"):
        evaluate(run_dir[0], path, tmp_path / "p.h5", loader=short)
    assert not (tmp_path / "p.h5").exists()
    with pytest.raises(ValueError, match="at most one"):
        evaluate(
            run_dir[0], path, tmp_path / "p.h5", loader=short, loader_factory=lambda s, t: short
        )


def test_fit_then_evaluate_with_the_pipeline_loader(tmp_path, tiny_cnn, fast_train):
    """The real loader end to end: fit on an event file, evaluate with the stored config."""
    from pipeline.features import FeatureConfig, fit_stats
    from pipeline.loader import Loader, LoaderConfig
    from pipeline.tracking import NoopTracker
    from reco.train import fit

    rng = np.random.default_rng(1)
    paths = {}
    for split, n in (("train", 64), ("test", 40)):
        trigger = rng.random((n, 11, 11)) < 0.3
        signal = np.where(trigger, rng.lognormal(2, 1, (n, 11, 11)), 0).astype(np.float32)
        log10_e = (18 + np.log10(1 + signal.sum(axis=(1, 2)))).astype(np.float32)
        arrays = {
            "station/signal": signal,
            "station/time": np.where(trigger, rng.normal(0, 500, (n, 11, 11)), 0).astype(
                np.float32
            ),
            "station/trigger": trigger,
            "truth/log10_energy": log10_e,
            "truth/n_triggered": trigger.sum(axis=(1, 2)).astype(np.int16),
        }
        attrs = {"kind": "airshower", "split": split, "config_hash": "h", "seed": 1}
        paths[split] = write_events(tmp_path / f"{split}.h5", arrays, attrs)
    features, batching = FeatureConfig(), LoaderConfig(batch_size=16, prefetch=0)
    with open_events(paths["train"]) as train_file:
        stats = fit_stats(features, train_file, ("log10_energy",))
        train = Loader.from_config(
            train_file, batching, features, stats, ("log10_energy",), shuffle=True, seed=0
        )
        config = {"features": to_dict(features), "loader": to_dict(batching)}
        result = fit(
            tiny_cnn,
            TaskConfig(),
            fast_train,
            train,
            train,
            stats.to_dict(),
            tmp_path / "run",
            NoopTracker(),
            seed=0,
            config_dict=config,
            progress=False,
        )
    assert result.steps == 2 * 4
    out = evaluate(tmp_path / "run", paths["test"], tmp_path / "run" / "predictions.h5")
    with h5py.File(out, "r") as f:
        assert f["prediction/log10_energy"].shape == (40,)
        assert np.isfinite(f["prediction/log10_energy"][()]).all()
        assert f.attrs["checkpoint_step"] == 8 and plain(f.attrs["split"]) == "test"
