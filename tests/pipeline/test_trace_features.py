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


def _reference_interval(x, mask, lo, hi):
    """The plain computation: cumsum along the bins, first bin at or above each level."""
    out = np.zeros(x.shape[:-1], np.float32)
    sel = np.ones(out.shape, bool) if mask is None else mask
    trace = np.maximum(x[sel].astype(np.float32), np.float32(0.0))
    cum = np.cumsum(trace, axis=-1)
    total = cum[:, -1]

    def crossing(level):
        i = np.argmax(cum >= level[:, None], axis=-1)
        in_bin = trace[np.arange(len(i)), i]
        before = cum[np.arange(len(i)), i] - in_bin
        return i + (level - before) / np.maximum(in_bin, np.float32(1e-12))

    width = crossing(np.float32(hi) * total) - crossing(np.float32(lo) * total)
    out[sel] = np.where(total > 0, width, np.float32(0.0))
    return out


@pytest.mark.parametrize("bins", [1, 2, 7, 64, 120, 129])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_trace_times_match_the_plain_cumsum_to_the_bit(bins, dtype):
    # blocked bins-first sums and the binary search: the same bits as cumsum + argmax, including
    # empty, negative, NaN and inf traces, more entries than one block, and a partial mask
    rng = np.random.default_rng(bins)
    x = rng.exponential(size=(5000, 2, bins)) * (rng.random((5000, 2, 1)) < 0.7)
    x[0, 0] = np.nan
    x[1, 0] = -1.0
    x[2, 0, -1] = np.inf
    x[3, 1] = 1e-30
    x = x.astype(dtype)
    for mask in (None, rng.random((5000, 2)) < 0.4):
        with np.errstate(invalid="ignore"):
            for name, lo, hi in (("trace_rise_time", 0.1, 0.5), ("trace_fall_time", 0.5, 0.9)):
                got = TRANSFORMS[name](x, mask)
                want = _reference_interval(x, mask, lo, hi)
                assert got.dtype == np.float32 and got.shape == want.shape
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name


def test_shared_work_computes_the_trace_sums_once_and_keeps_nothing_outside(monkeypatch):
    from pipeline import transforms

    calls = []
    real_maximum = np.maximum

    def counting_maximum(*args, **kwargs):
        calls.append(1)
        return real_maximum(*args, **kwargs)

    rng = np.random.default_rng(1)
    x = rng.random((40, 3, 20)).astype(np.float16)
    mask = rng.random((40, 3)) < 0.5
    plain = [TRANSFORMS[n](x, mask) for n in ("trace_rise_time", "trace_fall_time")]
    monkeypatch.setattr(transforms.np, "maximum", counting_maximum)
    TRANSFORMS["trace_rise_time"](x, mask)
    alone, calls[:] = len(calls), []
    with transforms.shared_work():
        shared = [TRANSFORMS[n](x, mask) for n in ("trace_rise_time", "trace_fall_time")]
    assert alone > 0 and len(calls) == alone  # both in one block cost what one costs alone
    assert np.array_equal(shared[0], plain[0]) and np.array_equal(shared[1], plain[1])
    # outside a block nothing is kept: changed data gives new numbers
    x[:] = 0
    assert np.all(TRANSFORMS["trace_rise_time"](x, mask) == 0)
