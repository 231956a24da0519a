"""simulate(): the event-file contract, reproducibility, traces and the station list."""

from dataclasses import replace

import numpy as np
import pytest

from simulation.airshower import AirshowerConfig, as_station_list, simulate
from simulation.airshower.config import ArrayConfig, TraceConfig
from simulation.airshower.simulate import simulate_chunks

N = 300
# docs/architecture.md, air-shower table: name -> (shape after the event axis, dtype)
EVENT_DATASETS = {
    "station/signal": ((11, 11), np.float32),
    "station/signal_mu": ((11, 11), np.float32),
    "station/signal_em": ((11, 11), np.float32),
    "station/time": ((11, 11), np.float32),
    "station/trigger": ((11, 11), np.bool_),
    "station/trace": ((11, 11, 120), np.float16),
    "truth/log10_energy": ((), np.float32),
    "truth/energy_eev": ((), np.float32),
    "truth/mass_number": ((), np.int16),
    "truth/ln_a": ((), np.float32),
    "truth/xmax": ((), np.float32),
    "truth/zenith": ((), np.float32),
    "truth/azimuth": ((), np.float32),
    "truth/core_x": ((), np.float32),
    "truth/core_y": ((), np.float32),
    "truth/s1000": ((), np.float32),
    "truth/n_triggered": ((), np.int16),
}
META = ("meta/station_x", "meta/station_y", "meta/station_z")


@pytest.fixture(scope="module")
def events():
    return simulate(AirshowerConfig(), N, seed=42)


def test_names_shapes_and_dtypes_follow_the_contract(events):
    assert set(events) == set(EVENT_DATASETS) | set(META)
    for name, (shape, dtype) in EVENT_DATASETS.items():
        assert events[name].shape == (N, *shape), name
        assert events[name].dtype == dtype, name
    for name in META:
        assert events[name].shape == (11, 11) and events[name].dtype == np.float32
    for name, arr in events.items():
        if arr.dtype.kind == "f":
            assert np.isfinite(arr.astype(np.float32)).all(), name


def test_truth_is_consistent(events):
    lg, e = events["truth/log10_energy"], events["truth/energy_eev"]
    assert np.allclose(e, 10.0 ** (lg.astype(np.float64) - 18.0), rtol=1e-5)
    assert set(np.unique(events["truth/mass_number"])) <= {1, 4, 14, 56}
    assert np.allclose(events["truth/ln_a"], np.log(events["truth/mass_number"]), atol=1e-6)
    assert np.all(events["truth/n_triggered"] == events["station/trigger"].sum(axis=(1, 2)))
    assert np.all(events["truth/zenith"] <= np.radians(60.0) + 1e-6)
    assert np.all(np.hypot(events["truth/core_x"], events["truth/core_y"]) <= 750.0 + 1e-3)


def test_non_triggered_stations_are_zero(events):
    off = ~events["station/trigger"]
    assert off.any()
    for name in ("station/signal", "station/time", "station/trace"):
        assert np.all(events[name][off] == 0), name


def test_same_seed_same_arrays_other_seed_differs(events):
    again = simulate(AirshowerConfig(), N, seed=42)
    for name in events:
        np.testing.assert_array_equal(again[name], events[name], err_msg=name)
    other = simulate(AirshowerConfig(), N, seed=43)
    assert not np.array_equal(other["truth/xmax"], events["truth/xmax"])
    assert not np.array_equal(other["station/signal"], events["station/signal"])


def test_switching_traces_off_changes_nothing_else(events):
    cfg = replace(AirshowerConfig(), traces=TraceConfig(enabled=False))
    plain = simulate(cfg, N, seed=42)
    assert "station/trace" not in plain
    for name in plain:
        np.testing.assert_array_equal(plain[name], events[name], err_msg=name)


def test_chunks_concatenate_to_simulate():
    cfg = replace(AirshowerConfig(), chunk_size=64, traces=TraceConfig(enabled=False))
    chunks = list(simulate_chunks(cfg, 150, seed=5))
    assert [len(c["truth/xmax"]) for c in chunks] == [64, 64, 22]
    whole = simulate(cfg, 150, seed=5)
    np.testing.assert_array_equal(
        np.concatenate([c["truth/xmax"] for c in chunks]), whole["truth/xmax"]
    )
    assert simulate(cfg, 0, seed=5)["station/signal"].shape == (0, 11, 11)


def test_traces_integrate_to_the_station_signal(events):
    trace = events["station/trace"].astype(np.float32).sum(axis=-1)
    signal = events["station/signal"]
    np.testing.assert_allclose(trace, signal, rtol=2e-3, atol=0.02)


def test_cartesian_preset_runs():
    cfg = AirshowerConfig(array=ArrayConfig(layout="cartesian"), traces=TraceConfig(enabled=False))
    a = simulate(cfg, 50, seed=1)
    assert a["station/signal"].shape == (50, 14, 14)
    assert np.all(np.hypot(a["truth/core_x"], a["truth/core_y"]) <= 375.0 + 1e-3)


def test_station_list(events):
    sl = as_station_list(events)
    k = int(events["truth/n_triggered"].max())
    assert sl["signal"].shape == (N, k) and sl["trace"].shape == (N, k, 120)
    assert np.all(sl["mask"].sum(axis=1) == events["truth/n_triggered"])
    # same multiset of signals, largest first, padding zero
    for i in range(0, N, 37):
        expected = np.sort(events["station/signal"][i][events["station/trigger"][i]])[::-1]
        got = sl["signal"][i][sl["mask"][i]]
        np.testing.assert_array_equal(got, expected)
        assert np.all(sl["signal"][i][~sl["mask"][i]] == 0)
    # positions and image indices point at the same station
    i, j = np.nonzero(sl["mask"])
    row, col = sl["row"][i, j], sl["col"][i, j]
    np.testing.assert_array_equal(sl["x"][i, j], events["meta/station_x"][row, col])
    np.testing.assert_array_equal(sl["time"][i, j], events["station/time"][i, row, col])
    short = as_station_list(events, max_stations=3)
    assert short["signal"].shape == (N, 3)
    np.testing.assert_array_equal(short["signal"], sl["signal"][:, :3])
