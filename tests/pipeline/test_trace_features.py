"""Trace-summary transforms: closed forms on hand-made traces, and a trace channel in an image."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.events import open_events, write_events
from pipeline.features import (
    FeatureConfig,
    InputGroupConfig,
    VariableConfig,
    build_inputs,
    fit_stats,
    input_spec,
)
from pipeline.transforms import TRANSFORMS


def test_rise_time_of_flat_pulse():
    # signal uniform over bins 10..29 (20 bins): 10% reached at 12.0, 50% at 20.0
    trace = np.zeros((1, 60), np.float32)
    trace[0, 10:30] = 2.0
    assert TRANSFORMS["trace_rise_time"](trace, None)[0] == pytest.approx(8.0, abs=1e-4)
    assert TRANSFORMS["trace_fall_time"](trace, None)[0] == pytest.approx(8.0, abs=1e-4)


def test_rise_time_of_single_bin_and_empty_trace():
    trace = np.zeros((2, 3, 40), np.float32)
    trace[0, 1, 7] = 5.0  # all signal in one bin: 10% -> 50% takes 0.4 bins
    out = TRANSFORMS["trace_rise_time"](trace, None)
    assert out.shape == (2, 3)
    assert out[0, 1] == pytest.approx(0.4, abs=1e-5)
    assert np.all(out[1] == 0.0) and np.all(np.isfinite(out))


def test_slow_pulse_has_longer_rise_than_fast_one():
    t = np.arange(120, dtype=np.float32)
    fast = np.exp(-0.5 * ((t - 20) / 2.0) ** 2)
    slow = np.exp(-0.5 * ((t - 20) / 8.0) ** 2)
    rise = TRANSFORMS["trace_rise_time"](np.stack([fast, slow]), None)
    # Gaussian: t50 - t10 = 1.2816 sigma
    assert rise == pytest.approx([1.2816 * 2.0, 1.2816 * 8.0], rel=0.02)


def test_trace_channel_in_image(tmp_path):
    rng = np.random.default_rng(0)
    n, r, c, t = 50, 4, 5, 30
    trig = rng.random((n, r, c)) < 0.5
    trace = (rng.random((n, r, c, t)) * trig[..., None]).astype(np.float16)
    arrays = {
        "station/signal": (trace.astype(np.float32).sum(-1)),
        "station/trigger": trig,
        "station/trace": trace,
        "truth/log10_energy": rng.uniform(18.5, 20, n).astype(np.float32),
    }
    path = write_events(tmp_path / "t.h5", arrays, {"kind": "airshower"})
    cfg = FeatureConfig(
        groups=(
            InputGroupConfig(
                variables=(
                    VariableConfig(name="s", source="station/signal", transform="log10_1p"),
                    VariableConfig(
                        name="rise",
                        source="station/trace",
                        transform="trace_rise_time",
                        mask="station/trigger",
                        standardize=True,
                    ),
                )
            ),
        )
    )
    with open_events(path) as ev:
        assert input_spec(cfg, ev) == {"image": (r, c, 2)}
        stats = fit_stats(cfg, ev, ("log10_energy",))
        out = build_inputs(cfg, stats, {k: ev.read(k) for k in arrays})
    assert out["image"].shape == (n, r, c, 2)
    rise = out["image"][..., 1]
    assert np.all(rise[~trig] == 0.0)
    assert abs(rise[trig].mean()) < 1e-3 and rise[trig].std() == pytest.approx(1.0, rel=1e-2)


def test_masked_entries_are_not_computed():
    trace = np.ones((2, 10), np.float32)
    mask = np.array([True, False])
    out = TRANSFORMS["trace_rise_time"](trace, mask)
    assert out[0] == pytest.approx(4.0, abs=1e-5) and out[1] == 0.0
