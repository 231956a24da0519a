"""Feature transforms: named functions from an event-file dataset to input values.

Each transform takes (values (n, ...) float32, mask (n, ...) bool or None) and returns values of
the same shape, or, for the *reducing* ones (a station's time trace (n, ..., T) -> one number per
station), of the shape without the last axis. They are registered by name
(:func:`register_transform`) and named by ``VariableConfig.transform`` in the experiment YAML
(:mod:`pipeline.features`); never evaluated strings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from pipeline.sparse import MaskedRows

Transform = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
"""(values (n, ...) float32, mask (n, ...) bool or None) -> transformed values, same shape."""

TRANSFORMS: dict[str, Transform] = {}
REDUCING: set[str] = set()  # transforms that summarise the source's last axis (traces)
PER_ENTRY: set[str] = set()  # transforms whose value at an entry depends on that entry alone


def register_transform(
    name: str, reduces_last_axis: bool = False, per_entry: bool = False
) -> Callable[[Transform], Transform]:
    """Register a feature transform under ``name`` (the value of ``VariableConfig.transform``).

    ``reduces_last_axis``: the transform summarises a per-entry series (a station's time trace,
    (n, R, C, T)) into one number per entry ((n, R, C)); its source has one axis more than the
    group's other sources.

    ``per_entry``: each entry's (station's) value depends on that entry's source and mask alone,
    not on the event's other entries. A compact set group then transforms only the entries it
    keeps (the real ones, ~10% of an array's stations) instead of all of them; leave it False for
    transforms that look across the event (``relative_time``).
    """

    def deco(fn: Transform) -> Transform:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is already registered")
        TRANSFORMS[name] = fn
        if reduces_last_axis:
            REDUCING.add(name)
        if per_entry:
            PER_ENTRY.add(name)
        return fn

    return deco


@register_transform("identity", per_entry=True)
def _identity(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return x


@register_transform("log10_1p", per_entry=True)
def _log10_1p(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """log10(1 + x): station signals in VEM span 4 decades; 0 stays 0.

    ``log(1 + x)`` rather than ``log1p``: 7x faster in float32 (SIMD log), and the precision
    ``log1p`` keeps for x < 1e-7 does not matter for signals in VEM.
    """
    return np.log(x + np.float32(1.0)) * np.float32(1.0 / np.log(10.0))


@register_transform("log", per_entry=True)
def _log(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return np.log(x)


@register_transform("log10", per_entry=True)
def _log10(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return np.log10(x)


@register_transform("relative_time")
def _relative_time(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Time minus the event's earliest unmasked (triggered) time, ns; 0 where masked.

    Removes the arbitrary time origin of each event, so the model sees the shower front's shape.
    """
    reduce_axes = tuple(range(1, x.ndim))
    valid = np.ones(x.shape, bool) if mask is None else mask
    t0 = np.min(np.where(valid, x, np.inf), axis=reduce_axes, keepdims=True)
    t0 = np.where(np.isfinite(t0), t0, 0.0)  # events with nothing triggered
    return np.where(valid, x - t0, 0.0).astype(np.float32)


_shared = threading.local()


@contextmanager
def shared_work() -> Iterator[None]:
    """Within the block, transforms given the same source and mask *objects* compute their common
    intermediates once (the signal-fraction times behind both the rise and the fall time).

    For one build of inputs on one thread (:func:`pipeline.features.build_inputs`): the sources
    must not change in place inside the block. Outside any block nothing is kept.
    """
    outer = getattr(_shared, "memo", None)
    _shared.memo = {}
    try:
        yield
    finally:
        _shared.memo = outer


_FRACTIONS = (0.1, 0.5, 0.9)  # of a trace's integral: the times the trace transforms use
_BLOCK = 4096  # entries computed at a time: their (T, 4096) float32 traces stay in cache


def _fraction_times(x: np.ndarray | MaskedRows, mask: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Fractional bins where each masked entry's integrated trace reaches :data:`_FRACTIONS` of
    its total (signal uniform within a bin).

    Returns (sel (n, ...) bool: the entries computed, total (k,) float32: their integrals,
    times (len(_FRACTIONS), k) float64). The same numbers, to the bit, as ``np.cumsum`` along the
    bins and ``argmax(cum >= level)``, ~3x faster:

    - blocks of entries are converted to float32 bins first (``trace[t]`` is a row), so the
      running sum is T - 1 vector additions, in the same order as ``cumsum``'s;
    - the first bin with ``cum >= level`` is found by a binary search (the sums never decrease:
      the trace is clipped at 0), over rows padded with +inf to a power of two; 0 where there is
      none (a NaN total), as ``argmax`` gives.
    """
    memo = getattr(_shared, "memo", None)
    key = (id(x), id(mask))
    if memo is not None and key in memo:
        return memo[key][2]
    stored = isinstance(x, MaskedRows) and (
        mask is x.mask or (mask is not None and np.array_equal(mask, x.mask))
    )
    if stored:  # a sparse dataset's rows along this mask (pipeline.loader): no gather
        sel, rows = x.mask, x.rows
    else:
        x = x.dense() if isinstance(x, MaskedRows) else x
        sel = np.ones(x.shape[:-1], bool) if mask is None else mask.astype(bool, copy=False)
        rows = x[sel]  # (k, T) as stored
    k, n_bins = rows.shape
    total = np.empty(k, np.float32)
    times = np.empty((len(_FRACTIONS), k), np.float64)
    fractions = np.array(_FRACTIONS, np.float32)[:, None]
    steps = [1 << j for j in reversed(range((n_bins - 1).bit_length()))]
    height = 2 * steps[0] if steps else 1  # rows n_bins... stay +inf: never below a level
    width = min(_BLOCK, k)
    trace = np.empty(n_bins * width, np.float32)
    cum = np.full(height * width, np.inf, np.float32)
    for s in range(0, k, _BLOCK):
        w = min(_BLOCK, k - s)
        tr = trace[: n_bins * w].reshape(n_bins, w)
        cu = cum[: height * w].reshape(height, w)
        cu[n_bins:] = np.inf
        tr[...] = rows[s : s + w].T
        np.maximum(tr, np.float32(0.0), out=tr)
        cu[0] = tr[0]
        for i in range(1, n_bins):
            np.add(cu[i - 1], tr[i], out=cu[i])
        total[s : s + w] = cu[n_bins - 1]
        level = fractions * cu[n_bins - 1]  # (F, w)
        flat = cu.reshape(-1)
        at = np.broadcast_to(np.arange(w) - w, level.shape)  # flat index of row (bins below - 1)
        for step in steps:
            probe = at + step * w
            at = np.where(flat[probe] < level, probe, at)
        i = (at + w) // w  # bins with cum < level
        i[i >= n_bins] = 0
        at = i * w + np.arange(w)
        in_bin = tr.reshape(-1)[at]
        before = flat[at] - in_bin
        times[:, s : s + w] = i + (level - before) / np.maximum(in_bin, np.float32(1e-12))
    out = (sel, total, times)
    if memo is not None:
        memo[key] = (x, mask, out)  # holding x and mask keeps their ids from being reused
    return out


def _trace_interval(x: np.ndarray, mask: np.ndarray | None, lo: float, hi: float) -> np.ndarray:
    """Time, in trace bins, for the integrated signal to grow from fraction ``lo`` to ``hi``.

    Only entries with ``mask`` True are computed (the other ~90% of an array's stations did not
    trigger and have empty traces); the rest get 0.
    """
    sel, total, times = _fraction_times(x, mask)
    width = times[_FRACTIONS.index(hi)] - times[_FRACTIONS.index(lo)]
    out = np.zeros(sel.shape, np.float32)
    out[sel] = np.where(total > 0, width, np.float32(0.0))
    return out


@register_transform("trace_rise_time", reduces_last_axis=True, per_entry=True)
def _trace_rise_time(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Rise time t10 -> t50 of a station trace (n, ..., T), in trace bins (25 ns by default).

    The classic surface-detector observable of the shower's age: deeper showers (larger Xmax,
    lighter primaries) give slower signals at the same core distance.
    """
    return _trace_interval(x, mask, 0.1, 0.5)


@register_transform("trace_fall_time", reduces_last_axis=True, per_entry=True)
def _trace_fall_time(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Fall time t50 -> t90 of a station trace (n, ..., T), in trace bins."""
    return _trace_interval(x, mask, 0.5, 0.9)
