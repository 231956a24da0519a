"""Feature specs: stats over unmasked entries, standardisation, masking, set layout, errors."""

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import features as feat
from pipeline.events import EventFile, open_events, write_events
from pipeline.features import (
    FeatureConfig,
    FeatureStats,
    InputGroupConfig,
    VariableConfig,
    build_inputs,
    fit_stats,
    input_spec,
    sources,
)
from pipeline.stats import Moments
from pipeline.transforms import TRANSFORMS

R, C = 6, 7


def airshower_arrays(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny air-shower-like events: log-normal signals and plane-front times where triggered."""
    rng = np.random.default_rng(seed)
    trig = rng.random((n, R, C)) < 0.3
    trig[0] = False  # an event with nothing triggered
    signal = np.where(trig, 10 ** rng.normal(1.0, 0.6, (n, R, C)), 0.0).astype(np.float32)
    t0 = rng.uniform(-3000, 3000, (n, 1, 1))
    time = np.where(trig, t0 + rng.normal(0, 300, (n, R, C)), 0.0).astype(np.float32)
    return {
        "station/signal": signal,
        "station/time": time,
        "station/trigger": trig,
        "truth/log10_energy": rng.uniform(18.5, 20, n).astype(np.float32),
        "truth/xmax": rng.normal(750, 60, n).astype(np.float32),
        "truth/n_triggered": trig.sum(axis=(1, 2)).astype(np.int16),
        "meta/station_x": np.zeros((R, C), np.float32),
    }


@pytest.fixture
def train(tmp_path: Path) -> EventFile:
    path = write_events(tmp_path / "train.h5", airshower_arrays(), {"kind": "airshower"})
    with open_events(path) as f:
        yield f


def _read_all(f: EventFile, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    return {p: f.read(p) for p in sources(cfg)}


def _rel_time(time: np.ndarray, trig: np.ndarray) -> np.ndarray:
    out = np.zeros_like(time)
    for i in range(len(time)):
        if trig[i].any():
            out[i] = np.where(trig[i], time[i] - time[i][trig[i]].min(), 0.0)
    return out


def test_default_spec(train: EventFile) -> None:
    assert input_spec(FeatureConfig(), train) == {"image": (R, C, 3)}


def test_stats_over_unmasked_entries(train: EventFile) -> None:
    a = airshower_arrays()
    trig = a["station/trigger"]
    stats = fit_stats(FeatureConfig(), train, ("log10_energy", "xmax"))
    logs = np.log10(1.0 + a["station/signal"].astype(np.float64))[trig]
    rel = _rel_time(a["station/time"], trig)[trig]
    got = stats.variables["image/log_signal"]
    assert got.count == trig.sum()
    np.testing.assert_allclose([got.mean, got.std], [logs.mean(), logs.std()], rtol=1e-5)
    got = stats.variables["image/time"]
    np.testing.assert_allclose([got.mean, got.std], [rel.mean(), rel.std()], rtol=1e-4)
    assert stats.variables["image/trigger"].count == trig.size
    xmax = a["truth/xmax"].astype(np.float64)
    np.testing.assert_allclose(
        [stats.targets["xmax"].mean, stats.targets["xmax"].std], [xmax.mean(), xmax.std()], 1e-6
    )


def test_stats_streaming_matches_one_pass(train: EventFile, monkeypatch) -> None:
    whole = fit_stats(FeatureConfig(), train, ("xmax",))
    monkeypatch.setattr(feat, "_FIT_EVENTS", 1)  # one chunk per read
    assert train.n_events > train.chunk_events
    chunked = fit_stats(FeatureConfig(), train, ("xmax",))
    for k, m in whole.variables.items():
        np.testing.assert_allclose(
            [chunked.variables[k].mean, chunked.variables[k].std], [m.mean, m.std], rtol=1e-9
        )


def test_standardised_on_train_and_masked_fill(train: EventFile) -> None:
    cfg = FeatureConfig()
    stats = fit_stats(cfg, train, ())
    out = build_inputs(cfg, stats, _read_all(train, cfg))
    image = out["image"]
    assert image.shape == (train.n_events, R, C, 3) and image.dtype == np.float32
    trig = train.read("station/trigger")
    for ch in (0, 1):
        vals = image[..., ch][trig]
        assert abs(vals.mean()) < 1e-4 and abs(vals.std() - 1.0) < 1e-4
        assert np.all(image[..., ch][~trig] == 0.0)  # fill
    np.testing.assert_array_equal(image[..., 2], trig.astype(np.float32))


def test_fill_and_clip(train: EventFile) -> None:
    cfg = FeatureConfig(
        groups=(
            InputGroupConfig(
                variables=(
                    VariableConfig(
                        name="s",
                        source="station/signal",
                        transform="log10_1p",
                        mask="station/trigger",
                        standardize=True,
                        clip=(-0.5, 0.5),
                        fill=-9.0,
                    ),
                ),
            ),
        )
    )
    stats = fit_stats(cfg, train, ())
    image = build_inputs(cfg, stats, _read_all(train, cfg))["image"][..., 0]
    trig = train.read("station/trigger")
    assert np.all(image[~trig] == -9.0)
    assert image[trig].min() == -0.5 and image[trig].max() == 0.5


def test_constant_variable_gets_unit_std(tmp_path: Path) -> None:
    a = airshower_arrays()
    a["station/signal"][:] = 3.0
    with open_events(write_events(tmp_path / "c.h5", a, {})) as f:
        stats = fit_stats(FeatureConfig(), f, ())
        m = stats.variables["image/log_signal"]
        assert m.std == 1.0 and m.mean == pytest.approx(np.log10(4.0))
        assert np.isfinite(
            build_inputs(FeatureConfig(), stats, _read_all(f, FeatureConfig()))["image"]
        ).all()


def test_stats_json_round_trip(train: EventFile) -> None:
    stats = fit_stats(FeatureConfig(), train, ("xmax", "log10_energy"))
    back = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats
    mean, std = back.target_mean_std(("log10_energy", "xmax"))
    assert mean.shape == (2,) and mean[1] == pytest.approx(stats.targets["xmax"].mean)


def test_relative_time_closed_form() -> None:
    t = np.array([[[5.0, 3.0], [100.0, 9.0]]], np.float32)
    m = np.array([[[True, True], [False, True]]])
    got = TRANSFORMS["relative_time"](t, m)
    np.testing.assert_array_equal(got, [[[2.0, 0.0], [0.0, 6.0]]])
    # nothing triggered: all zeros, no inf
    got = TRANSFORMS["relative_time"](t, np.zeros_like(m))
    np.testing.assert_array_equal(got, np.zeros_like(t))


def test_unknown_transform_names_it(train: EventFile) -> None:
    cfg = FeatureConfig(groups=(InputGroupConfig(variables=(VariableConfig(transform="cube"),)),))
    with pytest.raises(ValueError, match="'cube'"):
        fit_stats(cfg, train, ())


def test_unknown_source_names_it(train: EventFile) -> None:
    cfg = FeatureConfig(groups=(InputGroupConfig(variables=(VariableConfig(source="x/nope"),)),))
    with pytest.raises(ValueError, match="x/nope"):
        input_spec(cfg, train)


def test_nan_in_source_names_variable_and_event(tmp_path: Path) -> None:
    a = airshower_arrays(n=50)
    a["station/time"][17, 2, 3] = np.nan
    a["station/trigger"][17, 2, 3] = True
    path = tmp_path / "bad.h5"
    # Bypass write_events' NaN guard: the loader must still catch bad data.
    with h5py.File(path, "w") as f:
        for k, v in a.items():
            f[k] = v
        f.attrs.update(schema_version=1, n_events=50, kind="airshower")
    cfg = FeatureConfig()
    stats = FeatureStats(
        {f"image/{v.name}": Moments(0.0, 1.0, 1) for v in cfg.groups[0].variables}, {}
    )
    with open_events(path) as f:
        with pytest.raises(ValueError, match=r"'time'.*event 17"):
            build_inputs(cfg, stats, _read_all(f, cfg))


def test_set_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, s = 20, 6
    present = np.arange(s)[None, :] < rng.integers(1, s + 1, n)[:, None]
    a = {
        "part/pt": np.where(present, rng.uniform(1, 100, (n, s)), 0.0).astype(np.float32),
        "part/eta": np.where(present, rng.normal(0, 1, (n, s)), 0.0).astype(np.float32),
        "part/mask": present,
    }
    group = InputGroupConfig(
        name="particles",
        layout="set",
        mask="part/mask",
        length=8,
        variables=(
            VariableConfig(name="log_pt", source="part/pt", transform="log", standardize=True),
            VariableConfig(name="eta", source="part/eta"),
        ),
    )
    cfg = FeatureConfig(groups=(group,))
    with open_events(write_events(tmp_path / "j.h5", a, {"kind": "jets"})) as f:
        assert input_spec(cfg, f) == {"particles": (8, 2)}
        stats = fit_stats(cfg, f, ())
        assert stats.variables["particles/log_pt"].count == present.sum()
        out = build_inputs(cfg, stats, _read_all(f, cfg))  # log(0) on absent entries is masked
    assert out["particles"].shape == (n, 8, 2)
    assert out["particles_mask"].shape == (n, 8)
    np.testing.assert_array_equal(out["particles_mask"][:, :s], present)
    assert not out["particles_mask"][:, s:].any()
    assert np.all(out["particles"][~out["particles_mask"]] == 0.0)
    logpt = out["particles"][..., 0][out["particles_mask"]]
    assert abs(logpt.mean()) < 1e-4


def test_config_is_frozen_with_defaults() -> None:
    for cls in (VariableConfig, InputGroupConfig, FeatureConfig):
        obj = cls()
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.name = "x"  # type: ignore[misc]
