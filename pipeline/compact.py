"""Set groups' entries: the real entries of a compact group (:class:`Compact`) and padding.

Used by :func:`pipeline.features.build_inputs` for ``layout: set`` groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.sparse import MaskedRows


class Compact:
    """The real entries of a compact set group, first and in source order, cut to ``length``.

    Per-entry transforms run on the real entries alone (an air-shower array's triggered stations
    are ~10% of it), gathered by :meth:`take` and put in place by :meth:`place`.
    """

    def __init__(self, entry: np.ndarray, length: int | None) -> None:
        n, self.entry_axes, self.length = entry.shape[0], entry.ndim - 1, length
        flat = entry.reshape(n, -1)
        order = np.argsort(~flat, axis=1, kind="stable")[:, :length]  # (n, k)
        self.entry = flat[np.arange(n)[:, None], order]  # (n, k): real entries first
        self.event, self.slot = np.nonzero(self.entry)  # (m,) each: the real entries kept
        self.station = order[self.event, self.slot]  # (m,) their flat index in the source

    def take(self, values: np.ndarray | MaskedRows, per_file: bool) -> np.ndarray:
        """(n, *entry axes, ...) values or a per-file (*entry axes, ...) constant -> (m, ...).

        A sparse dataset's :class:`MaskedRows` along this group's own mask (the loader checks the
        paths) already hold the real entries in order: their first ``length`` rows per event.
        """
        if isinstance(values, MaskedRows):
            counts = values.counts()
            kept = counts if self.length is None else np.minimum(counts, self.length)
            if np.array_equal(kept, self.entry.sum(axis=1)):
                if self.length is None:
                    return values.rows
                rank = np.arange(len(values.rows)) - np.repeat(np.cumsum(counts) - counts, counts)
                return values.rows[rank < self.length]
            values = values.dense()  # another mask: take from the dense values
        if per_file:
            return values.reshape(-1, *values.shape[self.entry_axes :])[self.station]
        flat = values.reshape(len(values), -1, *values.shape[1 + self.entry_axes :])
        return flat[self.event, self.station]

    def place(self, x: np.ndarray, fill: float | Sequence[float]) -> np.ndarray:
        """(m, ...) values of the real entries -> (n, k, ...), ``fill`` elsewhere (a value per
        entry of the last axis if a sequence)."""
        fill = np.asarray(fill, np.float32)
        shape = (*self.entry.shape, *x.shape[1:])
        # zeros from the allocator: the pages no real entry writes to are never filled by hand
        out = np.zeros(shape, np.float32) if not fill.any() else np.full(shape, fill, np.float32)
        out[self.event, self.slot] = x
        return out


def pad_set(data: np.ndarray, entry: np.ndarray, length: int | None) -> tuple[np.ndarray, ...]:
    """Truncate or zero-pad the entry axis of (n, S, ...) data and its (n, S) mask to ``length``."""
    if length is None or length == data.shape[1]:
        return data, entry
    if length < data.shape[1]:
        return data[:, :length], entry[:, :length]
    pad = length - data.shape[1]
    widths = ((0, 0), (0, pad)) + ((0, 0),) * (data.ndim - 2)
    return np.pad(data, widths), np.pad(entry, ((0, 0), (0, pad)), constant_values=False)
