"""Lattice symmetries of the station grid and the loader's augmentation with them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.events import open_events, write_events
from pipeline.features import FeatureConfig, FeatureStats
from pipeline.loader import Loader, LoaderConfig
from pipeline.symmetry import apply_symmetry, lattice_symmetries
from simulation.airshower.config import ArrayConfig
from simulation.airshower.geometry import station_positions


def _grid(layout: str = "triangular"):
    x, y, _ = station_positions(ArrayConfig(layout=layout))
    return x, y


@pytest.mark.parametrize(("layout", "order"), [("triangular", 12), ("cartesian", 8)])
def test_group_order_and_exact_landing(layout, order):
    x, y = _grid(layout)
    source = lattice_symmetries(x, y)
    assert source.shape == (order, x.size)  # D6 on a triangular grid, D4 on a square one
    np.testing.assert_array_equal(source[0], np.arange(x.size))  # identity first
    pts = np.stack([x.ravel(), y.ravel()], -1)
    centre = pts[np.argmin(np.linalg.norm(pts - pts.mean(0), axis=1))]
    rel = pts - centre
    for src in source:  # each map is an isometry about the central station
        j = np.flatnonzero(src >= 0)
        moved, landed = rel[src[j]], rel[j]
        np.testing.assert_allclose(
            np.linalg.norm(moved, axis=1), np.linalg.norm(landed, axis=1), atol=1e-6
        )
        assert len(np.unique(src[j])) == len(j)  # a permutation where defined
        assert len(j) > 0.7 * x.size  # only the border is lost


def test_footprint_is_rotated_not_lost():
    x, y = _grid()
    source = lattice_symmetries(x, y)
    r2 = (x - x.ravel()[60]) ** 2 + (y - y.ravel()[60]) ** 2  # around the central station
    signal = np.exp(-r2 / (2 * 2000.0**2)).ravel()[None, :, None].astype(np.float32)
    blank = np.zeros(1, np.float32)
    for g in range(len(source)):
        out = apply_symmetry(signal, source, np.array([g]), blank)
        # a central, round footprint maps onto itself (minus the far border stations)
        inner = r2.ravel() < 4500.0**2
        np.testing.assert_allclose(out[0, inner, 0], signal[0, inner, 0], rtol=1e-5)


def test_not_a_lattice_is_only_identity():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1000, 30), rng.uniform(0, 1000, 30)
    assert len(lattice_symmetries(x, y)) == 1


def _file(tmp_path):
    x, y = _grid()
    rng = np.random.default_rng(1)
    n = 64
    signal = rng.exponential(5.0, (n, *x.shape)).astype(np.float32)
    centre = (np.abs(x) < 3000) & (np.abs(y) < 3000)
    signal *= centre  # contained footprints: every symmetry keeps the total signal
    arrays = {
        "station/signal": signal,
        "station/trigger": signal > 0,
        "truth/log10_energy": rng.uniform(18.5, 20, n).astype(np.float32),
        "meta/station_x": x.astype(np.float32),
        "meta/station_y": y.astype(np.float32),
    }
    return write_events(tmp_path / "a.h5", arrays, {"kind": "airshower"}), signal


def test_loader_augments_training_batches_only(tmp_path):
    from pipeline.features import InputGroupConfig, VariableConfig

    path, signal = _file(tmp_path)
    feats = FeatureConfig(
        (InputGroupConfig(variables=(VariableConfig(name="s", source="station/signal"),)),)
    )
    cfg = LoaderConfig(batch_size=16, prefetch=0, augment="lattice")
    with open_events(path) as f:
        train = Loader.from_config(
            f, cfg, feats, FeatureStats(), ("log10_energy",), shuffle=True, seed=0
        )
        val = Loader.from_config(
            f, cfg, feats, FeatureStats(), ("log10_energy",), shuffle=False, seed=0
        )
        batches = list(train.epoch(0))
        again = list(train.epoch(0))
        plain = list(val.epoch(0))
    moved = 0
    for b, b2 in zip(batches, again, strict=True):
        np.testing.assert_array_equal(b["image"], b2["image"])  # deterministic in (seed, epoch)
        orig = signal[b["index"]]
        np.testing.assert_allclose(b["image"][..., 0].sum((1, 2)), orig.sum((1, 2)), rtol=1e-5)
        moved += int((~np.isclose(b["image"][..., 0], orig).all(axis=(1, 2))).sum())
    assert moved > 40  # most of the 64 events were moved (11 of 12 symmetries move stations)
    for b in plain:
        np.testing.assert_array_equal(b["image"][..., 0], signal[b["index"]])


def test_augment_needs_positions_and_an_image(tmp_path):
    from pipeline.features import InputGroupConfig, VariableConfig

    path, _ = _file(tmp_path)
    sets = FeatureConfig((InputGroupConfig(name="s", layout="set", mask="station/trigger",
                          variables=(VariableConfig(name="s", source="station/signal"),)),))  # fmt: skip
    with pytest.raises(ValueError, match="needs an image input group"):
        Loader(
            path, sets, FeatureStats(), (), batch_size=4, shuffle=True, seed=0, augment="lattice"
        )
    with pytest.raises(ValueError, match="augment must be"):
        Loader(path, sets, FeatureStats(), (), batch_size=4, shuffle=True, seed=0, augment="spin")


def test_experiment_refuses_augmenting_oriented_targets():
    from pipeline.config import ConfigError, from_dict
    from reco.experiment import ExperimentConfig

    data = {"loader": {"augment": "lattice"}, "task": {"targets": ["log10_energy", "azimuth"]}}
    with pytest.raises(ConfigError, match=r"changes the targets \['azimuth'\]"):
        from_dict(ExperimentConfig, data)
    from_dict(ExperimentConfig, {**data, "task": {"targets": ["log10_energy", "xmax"]}})
