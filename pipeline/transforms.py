"""Feature transforms: named functions from an event-file dataset to input values.

Each transform takes (values (n, ...) float32, mask (n, ...) bool or None) and returns values of
the same shape, or, for the *reducing* ones (a station's time trace (n, ..., T) -> one number per
station), of the shape without the last axis. They are registered by name
(:func:`register_transform`) and named by ``VariableConfig.transform`` in the experiment YAML
(:mod:`pipeline.features`); never evaluated strings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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


def _crossing(trace: np.ndarray, cum: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Fractional bin where the cumulative trace reaches ``level`` (signal uniform in a bin)."""
    i = np.argmax(cum >= level[..., None], axis=-1)[..., None]
    in_bin = np.take_along_axis(trace, i, axis=-1)[..., 0]
    before = np.take_along_axis(cum, i, axis=-1)[..., 0] - in_bin
    return i[..., 0] + (level - before) / np.maximum(in_bin, np.float32(1e-12))


def _trace_interval(x: np.ndarray, mask: np.ndarray | None, lo: float, hi: float) -> np.ndarray:
    """Time, in trace bins, for the integrated signal to grow from fraction ``lo`` to ``hi``.

    Only entries with ``mask`` True are computed (the other ~90% of an array's stations did not
    trigger and have empty traces); the rest get 0.
    """
    out = np.zeros(x.shape[:-1], np.float32)
    sel = np.ones(out.shape, bool) if mask is None else mask.astype(bool)
    trace = np.maximum(x[sel].astype(np.float32), np.float32(0.0))  # (k, T)
    cum = np.cumsum(trace, axis=-1)
    total = cum[:, -1]
    width = _crossing(trace, cum, np.float32(hi) * total) - _crossing(
        trace, cum, np.float32(lo) * total
    )
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
