"""Stations as sets: grid sources flattened, meta/ constants broadcast, compaction, trace series."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.events import open_events, write_events
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
from pipeline.loader import Loader
from pipeline.transforms import TRANSFORMS, register_transform

N, R, C, T = 40, 3, 4, 12


def _write(path, sparse=False):
    rng = np.random.default_rng(0)
    trig = rng.random((N, R, C)) < 0.4
    trig[3] = False  # an event without triggered stations
    signal = np.where(trig, rng.exponential(10.0, (N, R, C)), 0.0).astype(np.float32)
    signal[5, 0, 0], trig[5, 0, 0] = 0.0, True  # a real reading of 0 on a triggered station
    trace = (rng.random((N, R, C, T)) * trig[..., None]).astype(np.float16)
    x, y = np.meshgrid(np.arange(C) * 1500.0, np.arange(R) * 1300.0)
    arrays = {
        "station/signal": signal,
        "station/trigger": trig,
        "station/trace": trace,
        "truth/log10_energy": rng.uniform(18.5, 20, N).astype(np.float32),
        "meta/station_x": x.astype(np.float32),
        "meta/station_y": y.astype(np.float32),
    }
    stored = {"station/trace": "station/trigger"} if sparse else None  # the triggered rows only
    return write_events(path, arrays, {"kind": "airshower"}, sparse=stored), arrays


def _stations(compact=True, length=8):
    var = dict(mask="station/trigger")
    return InputGroupConfig(
        name="stations",
        layout="set",
        mask="station/trigger",
        compact=compact,
        length=length,
        variables=(
            VariableConfig(name="x", source="meta/station_x", scale=1e-3),
            VariableConfig(name="y", source="meta/station_y", scale=1e-3),
            VariableConfig(
                name="log_s", source="station/signal", transform="log10_1p", standardize=True, **var
            ),  # fmt: skip
            VariableConfig(name="rise", source="station/trace", transform="trace_rise_time", **var),
        ),
    )


def _traces(length=8):
    return InputGroupConfig(
        name="traces",
        layout="set",
        mask="station/trigger",
        compact=True,
        length=length,
        variables=(VariableConfig(name="trace", source="station/trace", transform="log10_1p"),),
    )


def _raw(f, cfg):
    return {p: f.read(p) for p in sources(cfg)}


@pytest.mark.parametrize("sparse", [False, True])
def test_stations_flattened_compacted_with_positions(tmp_path, sparse):
    path, arrays = _write(tmp_path / "a.h5", sparse)
    cfg = FeatureConfig((_stations(), _traces()))
    with open_events(path) as f:
        assert input_spec(cfg, f) == {"stations": (8, 4), "traces": (8, T, 1)}
        stats = fit_stats(cfg, f, ("log10_energy",))
        out = build_inputs(cfg, stats, _raw(f, cfg))
    # statistics over the triggered stations only: their signals, and every bin of their traces
    trig = arrays["station/trigger"]
    for key, values in (
        ("stations/log_s", arrays["station/signal"][trig]),
        ("traces/trace", arrays["station/trace"][trig].astype(np.float32)),
    ):
        logs, got = np.log10(1.0 + values.astype(np.float64)), stats.variables[key]
        assert got.count == logs.size
        np.testing.assert_allclose([got.mean, got.std], [logs.mean(), logs.std()], rtol=1e-5)
    trig = trig.reshape(N, -1)
    n_real = np.minimum(trig.sum(1), 8)
    np.testing.assert_array_equal(out["stations_mask"].sum(1), n_real)
    np.testing.assert_array_equal(out["stations_mask"], np.arange(8) < n_real[:, None])
    assert not out["stations_mask"][3].any() and np.isfinite(out["stations"]).all()
    # the real entries, in grid order, carry their own station's position and trace
    for e in (0, 5, 17):
        idx = np.flatnonzero(trig[e])[:8]
        k = len(idx)
        np.testing.assert_allclose(
            out["stations"][e, :k, 0], arrays["meta/station_x"].ravel()[idx] * 1e-3
        )
        np.testing.assert_allclose(
            out["stations"][e, :k, 1], arrays["meta/station_y"].ravel()[idx] * 1e-3
        )
        tr = arrays["station/trace"].reshape(N, -1, T)[e, idx].astype(np.float32)
        np.testing.assert_allclose(out["traces"][e, :k, :, 0], np.log10(1 + tr), rtol=1e-5)
        assert (out["stations"][e, k:] == 0).all() and (out["traces"][e, k:] == 0).all()
    # a triggered station reading 0 VEM is a real entry (masking is by the trigger)
    first = np.flatnonzero(trig[5])[0]
    assert first == 0 and out["stations_mask"][5, 0]


def test_without_compaction_entries_keep_grid_slots(tmp_path):
    path, arrays = _write(tmp_path / "a.h5")
    cfg = FeatureConfig((_stations(compact=False, length=None),))
    with open_events(path) as f:
        assert input_spec(cfg, f) == {"stations": (R * C, 4)}
        out = build_inputs(cfg, fit_stats(cfg, f, ()), _raw(f, cfg))
    np.testing.assert_array_equal(out["stations_mask"], arrays["station/trigger"].reshape(N, -1))


def test_loader_batches_station_sets(tmp_path):
    path, _ = _write(tmp_path / "a.h5")
    cfg = FeatureConfig((_stations(), _traces()))
    with open_events(path) as f:
        stats = fit_stats(cfg, f, ("log10_energy",))
    with Loader(path, cfg, stats, ("log10_energy",), batch_size=16, shuffle=True, seed=0,
                prefetch=0) as loader:  # fmt: skip
        batches = list(loader)
    assert batches[0]["stations"].shape == (16, 8, 4)
    assert batches[0]["traces"].shape == (16, 8, T, 1)


def test_mixed_series_and_series_without_mask_are_refused(tmp_path):
    path, _ = _write(tmp_path / "a.h5")
    mixed = InputGroupConfig(
        name="g", layout="set", mask="station/trigger",
        variables=(VariableConfig(name="s", source="station/signal"),
                   VariableConfig(name="t", source="station/trace")),
    )  # fmt: skip
    unmasked = InputGroupConfig(
        name="g", layout="set", variables=(VariableConfig(name="t", source="station/trace"),)
    )
    with open_events(path) as f:
        with pytest.raises(ValueError, match="mixes per-entry values and series"):
            input_spec(FeatureConfig((mixed,)), f)
        with pytest.raises(ValueError, match="entry axes"):
            input_spec(FeatureConfig((unmasked,)), f)
        with pytest.raises(ValueError, match="compact is for layout 'set'"):
            input_spec(FeatureConfig((InputGroupConfig(name="i", compact=True),)), f)


_SEEN: dict[str, list[tuple[int, ...]]] = {"per_entry": [], "per_event": []}


def _probe(kind: str):
    def fn(x, mask):
        _SEEN[kind].append(x.shape)
        return np.log(x.astype(np.float32) + np.float32(1.0))

    return fn


if "_probe_per_entry" not in TRANSFORMS:  # the registry is global to the process
    register_transform("_probe_per_entry", per_entry=True)(_probe("per_entry"))
    register_transform("_probe_per_event")(_probe("per_event"))


def test_compact_groups_transform_only_the_kept_real_entries(tmp_path):
    """Per-entry transforms see only the real entries that are kept; the others (relative_time)
    see every station, so the earliest time comes from all triggered stations even when
    ``length`` cuts some; both give the values of transforming everything."""
    path, arrays = _write(tmp_path / "a.h5")
    trig = arrays["station/trigger"].reshape(N, -1)
    rng = np.random.default_rng(1)
    time = np.where(trig, rng.normal(0, 500, trig.shape), 0).astype(np.float32).reshape(N, R, C)
    var = dict(mask="station/trigger")
    group = InputGroupConfig(
        name="s", layout="set", mask="station/trigger", compact=True, length=3,
        variables=(
            VariableConfig(name="a", source="station/signal", transform="_probe_per_entry", **var),
            VariableConfig(name="b", source="station/signal", transform="_probe_per_event", **var),
            VariableConfig(name="t", source="station/time", transform="relative_time", **var),
        ),
    )  # fmt: skip
    cfg = FeatureConfig((group,))
    raw = {"station/signal": arrays["station/signal"], "station/trigger": arrays["station/trigger"],
           "station/time": time}  # fmt: skip
    for seen in _SEEN.values():
        seen.clear()
    out = build_inputs(cfg, FeatureStats({}, {}), raw)
    kept = np.minimum(trig.sum(1), 3)
    assert _SEEN["per_entry"] == [(kept.sum(),)] and _SEEN["per_event"] == [(N, R, C)]
    assert (trig.sum(1) > 3).any()  # some events lose stations to the length
    np.testing.assert_array_equal(out["s"][..., 0], out["s"][..., 1])
    np.testing.assert_array_equal(out["s_mask"], np.arange(3) < kept[:, None])
    for e in range(N):
        idx = np.flatnonzero(trig[e])
        if not len(idx):
            assert (out["s"][e] == 0).all()
            continue
        t = time.reshape(N, -1)[e]
        np.testing.assert_array_equal(out["s"][e, : kept[e], 2], t[idx[:3]] - t[idx].min())
        want = np.log(arrays["station/signal"].reshape(N, -1)[e, idx[:3]] + np.float32(1))
        np.testing.assert_array_equal(out["s"][e, : kept[e], 0], want)


def _grid(trace_uses):
    """An image group whose trace variables use ``trace_uses`` (transform, mask) pairs."""
    return InputGroupConfig(
        name="image",
        layout="grid",
        variables=tuple(
            VariableConfig(name=f"v{i}", source="station/trace", transform=t, mask=m)
            for i, (t, m) in enumerate(trace_uses)
        ),
    )


def test_row_sources_are_the_sparse_datasets_used_at_their_mask_only():
    from pipeline.features import row_sources

    sparse = {"station/trace": "station/trigger"}
    times = [("trace_rise_time", "station/trigger"), ("trace_fall_time", "station/trigger")]
    assert row_sources(FeatureConfig((_stations(), _traces())), sparse) == {"station/trace"}
    assert row_sources(FeatureConfig((_grid(times),)), sparse) == {"station/trace"}
    assert row_sources(FeatureConfig((_grid(times),)), {}) == set()
    # one use beyond the mask's entries keeps the dense read for all
    unmasked = [times[0], ("trace_rise_time", None)]
    assert row_sources(FeatureConfig((_grid(unmasked),)), sparse) == set()
    assert row_sources(FeatureConfig((_stations(compact=False),)), sparse) == {"station/trace"}
    loose = dataclasses.replace(_traces(), compact=False)  # log10_1p of every station's trace
    assert row_sources(FeatureConfig((_stations(), loose)), sparse) == set()
    other_mask = {"station/trace": "station/other"}
    assert row_sources(FeatureConfig((_stations(), _grid(times))), other_mask) == set()


@pytest.mark.parametrize("length", [None, 3, 8])
def test_inputs_from_stored_rows_equal_those_from_dense_traces(tmp_path, length):
    # the loader hands sparse traces as MaskedRows: the same inputs, bit for bit
    _, arrays = _write(tmp_path / "dense.h5")
    path = write_events(
        tmp_path / "sparse.h5",
        arrays,
        {"kind": "airshower"},
        sparse={"station/trace": "station/trigger"},
    )
    times = [("trace_rise_time", "station/trigger"), ("trace_fall_time", "station/trigger")]
    cfg = FeatureConfig((_stations(length=length), _traces(length=length), _grid(times)))
    with open_events(path) as f:
        stats = fit_stats(cfg, f, ())
        dense = _raw(f, cfg)
        rows = {**dense, "station/trace": f.read_rows("station/trace", slice(0, N))}
    want, got = build_inputs(cfg, stats, dense), build_inputs(cfg, stats, rows)
    assert set(got) == set(want)
    for key in want:
        assert np.array_equal(got[key], want[key]), key


def test_rows_along_another_mask_are_taken_from_the_dense_values(tmp_path):
    from pipeline.compact import Compact
    from pipeline.sparse import MaskedRows

    rng = np.random.default_rng(2)
    mask, other = rng.random((6, 5)) < 0.5, rng.random((6, 5)) < 0.5
    values = rng.random((6, 5, 3)) * mask[..., None]
    compact = Compact(other, 2)
    got = compact.take(MaskedRows(mask, values[mask]), per_file=False)
    assert np.array_equal(got, compact.take(values, per_file=False))
    times = TRANSFORMS["trace_rise_time"](MaskedRows(mask, values[mask]), other)
    assert np.array_equal(times, TRANSFORMS["trace_rise_time"](values, other))


def test_compact_padding_takes_each_variables_fill_and_errors_name_the_event(tmp_path):
    """A compact group's real entries are stacked first and put in place once: the padded slots
    still carry each variable's own fill, and a bad value names its event and variable."""
    path, arrays = _write(tmp_path / "a.h5")
    stations = _stations()
    fills = (-1.0, 0.0, 7.5, -2.0)
    stations = dataclasses.replace(stations, variables=tuple(
        dataclasses.replace(v, fill=x) for v, x in zip(stations.variables, fills, strict=True)))  # fmt: skip
    cfg = FeatureConfig((stations, _traces()))
    with open_events(path) as f:
        stats = fit_stats(cfg, f, ())
        raw = _raw(f, cfg)
    out = build_inputs(cfg, stats, raw)
    pad = ~out["stations_mask"]
    assert pad.any() and out["stations_mask"].any()
    for ch, fill in enumerate(fills):
        assert (out["stations"][..., ch][pad] == np.float32(fill)).all()
    assert (out["traces"][pad] == 0.0).all()
    # the same real entries as a group built on its own (the groups share one mask's entries)
    alone = build_inputs(FeatureConfig((_traces(),)), stats, raw)
    np.testing.assert_array_equal(alone["traces"], out["traces"])
    np.testing.assert_array_equal(alone["traces_mask"], out["stations_mask"])
    # a non-finite signal at a triggered station of event 21 (not the first one with entries)
    trig = arrays["station/trigger"].reshape(N, -1)
    bad = dict(raw, **{"station/signal": raw["station/signal"].copy()})
    bad["station/signal"].reshape(N, -1)[21, np.flatnonzero(trig[21])[0]] = np.inf
    with pytest.raises(ValueError, match=r"'stations'.*'log_s'.*event index 1021"):
        build_inputs(cfg, stats, bad, event_index=np.arange(N) + 1000)
    # a non-finite fill is caught too (in the padded slots)
    nan_fill = FeatureConfig((dataclasses.replace(stations, variables=(
        dataclasses.replace(stations.variables[0], fill=float("nan")), *stations.variables[1:])),))  # fmt: skip
    with pytest.raises(ValueError, match=r"'stations'.*'x'"):
        build_inputs(nan_fill, stats, raw)
