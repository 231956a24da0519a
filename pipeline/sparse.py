"""Sparse event datasets: values stored only where a boolean mask dataset of the file is True.

An air-shower array's station traces (n, R, C, T) are zero at the ~90% of stations that did not
trigger. Stored dense, each chunk inflates to ten times its real content, and inflating was most of
the loader's first epoch. Stored sparse, the dataset ``<name>`` is an HDF5 group (attribute
``sparse_mask``: the path of the bool event dataset (n, *lead) it follows) holding

- ``rows`` (m, *tail): the values of the masked entries, event by event, each event's entries in
  the mask's C order (``values[mask]``);
- ``offsets`` (n + 1,) int64: event i owns rows ``offsets[i]:offsets[i + 1]``.

:class:`pipeline.events.EventFile` lists it among its datasets with its dense shape
(n, *lead, *tail) and reads it back dense (zeros where the mask is False), so readers do not
change. Files holding sparse datasets have ``schema_version`` 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from pipeline import h5attrs
from pipeline.jagged import compression_for

SPARSE_ATTR = "sparse_mask"


@dataclass(frozen=True)
class MaskedRows:
    """Events of a sparse dataset as stored, without the dense array: the mask (n, *lead) bool
    and the masked entries' rows (m, *tail), ``dense()[mask] == rows``.

    The loader hands these to the feature transforms that use the masked entries only (the trace
    times, compact station sets), which then skip putting the rows in place and taking them out.
    """

    mask: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.mask)

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.mask.shape, *self.rows.shape[1:])

    def counts(self) -> np.ndarray:
        """(n,) int64: the rows of each event."""
        return _per_event(self.mask)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, self.rows.dtype)
        out[self.mask] = self.rows
        return out

    @staticmethod
    def concat(parts: Sequence[MaskedRows]) -> MaskedRows:
        return MaskedRows(
            np.concatenate([p.mask for p in parts]), np.concatenate([p.rows for p in parts])
        )


def sparse_rows(
    name: str, values: np.ndarray, mask_name: str, arrays: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``values`` can be stored sparse along ``arrays[mask_name]``; return its rows and
    per-event offsets.

    Raises:
        ValueError: the mask is missing, not bool, not an event dataset of ``values``'s leading
            shape, or ``values`` is nonzero where the mask is False (those values would be lost).
    """
    if mask_name not in arrays:
        raise ValueError(f"sparse dataset {name!r}: its mask {mask_name!r} is not written")
    mask = np.asarray(arrays[mask_name])
    lead = mask.shape
    if mask.dtype != bool or mask.ndim < 2 or values.shape[: mask.ndim] != lead:
        raise ValueError(
            f"sparse dataset {name!r} (shape {values.shape}) needs a bool mask of its leading "
            f"shape with an event axis; {mask_name!r} is {mask.dtype} {lead}"
        )
    step = 4096  # events at a time: the check's temporaries stay small
    if any(
        np.count_nonzero(values[i : i + step][~mask[i : i + step]])
        for i in range(0, len(mask), step)
    ):
        raise ValueError(
            f"sparse dataset {name!r} is nonzero where {mask_name!r} is False: storing it sparse "
            "would lose those values"
        )
    counts = _per_event(mask)
    return values[mask], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _per_event(mask: np.ndarray) -> np.ndarray:
    """(n, *lead) bool -> (n,) int64 entries per event."""
    return mask.reshape(len(mask), int(np.prod(mask.shape[1:]))).sum(axis=1, dtype=np.int64)


def write_sparse(
    f: h5py.File,
    name: str,
    rows: np.ndarray,
    offsets: np.ndarray,
    mask_name: str,
    chunk_events: int,
) -> None:
    """Store one sparse dataset (module docstring); chunks of ~256 KiB of rows, gzip where it
    pays (:func:`pipeline.jagged.compression_for`: the traces' rows are stored raw)."""
    g = f.create_group(name)
    h5attrs.write(g, {SPARSE_ATTR: mask_name})  # fixed-length (pipeline.h5attrs says why)
    g.create_dataset("offsets", data=offsets, chunks=(min(len(offsets), chunk_events + 1),))
    if rows.size == 0:  # HDF5 chunks cannot have a 0 axis
        g.create_dataset("rows", data=rows)
        return
    row_bytes = rows.dtype.itemsize * int(np.prod(rows.shape[1:], dtype=np.int64))
    chunk = max(1, min(len(rows), (1 << 18) // max(row_bytes, 1)))
    g.create_dataset(
        "rows", data=rows, chunks=(chunk, *rows.shape[1:]), **compression_for(rows, chunk)
    )


def mask_of(group: h5py.Group) -> str | None:
    """The mask path of a sparse dataset's group; None for any other group."""
    if SPARSE_ATTR not in group.attrs:
        return None
    return str(h5attrs.plain(group.attrs[SPARSE_ATTR]))


def check_group(f: h5py.File, name: str, mask_name: str, names: tuple[str, ...]) -> str | None:
    """What is wrong with sparse group ``name`` (None: nothing), checked at open."""
    n_events = int(f.attrs["n_events"])
    if mask_name not in names or mask_name == name:
        return f"sparse dataset {name!r}: its mask {mask_name!r} is not a dataset of the file"
    mask = f[mask_name]
    if mask.dtype != bool or mask.ndim < 2:
        return f"sparse dataset {name!r}: its mask {mask_name!r} is {mask.dtype} {mask.shape}"
    g = f[name]
    parts = {k: g.get(k) for k in ("rows", "offsets")}
    if not all(isinstance(d, h5py.Dataset) for d in parts.values()):
        return f"sparse dataset {name!r} needs datasets 'rows' and 'offsets'"
    if parts["offsets"].shape != (n_events + 1,) or parts["rows"].ndim < 1:
        return (
            f"sparse dataset {name!r}: offsets of shape {parts['offsets'].shape} for "
            f"n_events={n_events}, rows of shape {parts['rows'].shape}"
        )
    return None


def dense_shape(f: h5py.File, name: str, mask_name: str) -> tuple[int, ...]:
    return (*f[mask_name].shape, *f[name]["rows"].shape[1:])


def read_rows(
    f: h5py.File,
    name: str,
    mask_name: str,
    events: slice | np.ndarray,
    load: Callable[[h5py.Dataset, str, Any], np.ndarray],
    read_mask: Callable[[slice | np.ndarray], np.ndarray],
) -> MaskedRows:
    """The :class:`MaskedRows` of ``events`` (a step-1 slice, or sorted unique indices).

    ``load(dataset, name, sel)`` reads a dataset (:meth:`EventFile._load`), ``read_mask`` the
    mask's events. Offsets that disagree with the mask raise ValueError naming both.
    """
    g = f[name]
    rows_ds, offsets_ds = g["rows"], g["offsets"]
    mask = read_mask(events)
    counts = _per_event(mask)
    if isinstance(events, slice):
        offsets = load(offsets_ds, f"{name}/offsets", slice(events.start, events.stop + 1))
        lo, hi = np.asarray(offsets[:-1], np.int64), np.asarray(offsets[1:], np.int64)
    else:
        lo = load(offsets_ds, f"{name}/offsets", events).astype(np.int64)
        hi = load(offsets_ds, f"{name}/offsets", events + 1).astype(np.int64)
    bad = np.flatnonzero((hi - lo != counts) | (lo < 0) | (hi > rows_ds.shape[0]))
    if bad.size:
        raise ValueError(
            f"sparse dataset {name!r}: its offsets disagree with its mask {mask_name!r} (or run "
            f"past its {rows_ds.shape[0]} rows) at the {int(bad[0])}-th event read"
        )
    if not counts.sum():
        return MaskedRows(mask, np.zeros((0, *rows_ds.shape[1:]), rows_ds.dtype))
    if isinstance(events, slice):
        rows = load(rows_ds, f"{name}/rows", slice(int(lo[0]), int(hi[-1])))
    else:  # the rows of each event, increasing: what HDF5 point selection needs
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        rows = load(rows_ds, f"{name}/rows", starts + np.arange(int(counts.sum())))
    return MaskedRows(mask, rows)
