"""HDF5 event files: the versioned contract between simulation, training and evaluation.

A file holds one split of one kind of event (``kind = "airshower"``, ...). Every dataset outside
``meta/`` has the event index as its first axis; ``meta/`` holds per-file constants (e.g. the
station geometry) without an event axis. See ``docs/architecture.md`` for the datasets of each kind.

Writing is atomic: the file is written under a temporary name in the target directory and renamed
into place only once complete and closed, so a crashed job never leaves a file that looks whole.
Reading validates the file (readable HDF5, schema version, kind, required datasets, lengths) and
raises :class:`EventFileError` naming the file and the problem.

Jagged per-event lists (jet constituents) live under ``jagged/<group>/``: ``offsets`` (n+1,) int64
and one flat content dataset per field, in the buffer layout of ``awkward.to_buffers`` for a
ListOffsetArray of a RecordArray. The group's ``form`` attribute holds the awkward form JSON whose
form keys are the dataset names, so ``awkward.from_buffers(form, n, group, buffer_key="{form_key}")``
rebuilds the array from the stored buffers. Padding to (n, P, F) is done with numpy from the offsets
(:func:`pipeline.jet_features.pad_jagged`), measured 15x faster than padding through awkward.

A dataset that is zero wherever a bool event dataset (its mask) is False, such as the station
traces, may be stored *sparse*: only the masked entries' values, read back dense
(:mod:`pipeline.sparse`; ``schema_version`` 2).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import h5attrs
from pipeline import sparse as _sparse
from pipeline.atomic import atomic_path
from pipeline.chunks import ChunkReader
from pipeline.jagged import (  # JaggedGroup: re-exported
    JAGGED_PREFIX,
    JaggedGroup,
    check_jagged,
    compression_for,
    write_jagged,
)

SCHEMA_VERSION = 2  # 2: may hold sparse datasets (pipeline.sparse)
_READABLE_VERSIONS = (1, 2)

META_PREFIX = "meta/"
SPLITS = ("train", "val", "test")  # a dataset's files: <split>.h5 (or its shards)

# Event datasets share one chunk length (in events) so that a chunk-aligned block of events is a
# contiguous, whole-chunk read in every dataset. ~1 MiB of the widest dataset per chunk, capped so
# that block shuffling still has many blocks to permute in small files.
_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_EVENTS = 512
_MIN_CHUNK_EVENTS = 16


class EventFileError(ValueError):
    """An event file is missing, unreadable or does not satisfy the contract."""


def split_seeds(seed: int) -> dict[str, int]:
    """Independent seeds of the three splits, derived from `seed` (SeedSequence spawning).

    Splits never share events, and adding events to one split leaves the others unchanged.
    """
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    return {
        name: int(child.generate_state(1)[0]) for name, child in zip(SPLITS, children, strict=True)
    }


def check_split(split: str) -> None:
    """ValueError naming the field unless `split` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")


def _reco_version() -> str:
    try:
        return importlib.metadata.version("reco")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_meta(name: str) -> bool:
    return name.startswith(META_PREFIX)


def _is_jagged(name: str) -> bool:
    return name.startswith(JAGGED_PREFIX)


def chunk_events_for(arrays: Mapping[str, np.ndarray], n_events: int) -> int:
    """Chunk length along the event axis: <= ~1 MiB of the widest event dataset, <= 512 events."""
    widest = max(
        (a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays.values()),
        default=1,
    )
    # Small files still get ~64 chunks (of >= 16 events) so block shuffling has blocks to permute.
    per_file = max(_MIN_CHUNK_EVENTS, -(-n_events // 64))
    chunk = min(_MAX_CHUNK_EVENTS, per_file, _CHUNK_BYTES // max(widest, 1))
    return max(1, min(chunk, n_events))


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> int:
    """Validate lengths and finiteness; return n_events."""
    n_events: int | None = None
    first_name = ""
    for name, arr in arrays.items():
        if _is_meta(name):
            continue
        if arr.ndim == 0:
            raise ValueError(f"event dataset {name!r} is a scalar; it needs an event axis")
        if n_events is None:
            n_events, first_name = int(arr.shape[0]), name
        elif arr.shape[0] != n_events:
            raise ValueError(
                f"event dataset {name!r} has {arr.shape[0]} events, but {first_name!r} has {n_events}"
            )
    for name, arr in arrays.items():
        # Bad data must not reach training silently: refuse it where it is made.
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"dataset {name!r} contains {n_bad} non-finite values (NaN/inf)")
    return 0 if n_events is None else n_events


def write_events(
    path: Path,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    jagged: Mapping[str, JaggedGroup] | None = None,
    sparse: Mapping[str, str] | None = None,
) -> Path:
    """Write an event file atomically and return its path.

    Args:
        path: destination ``.h5`` file; parent directories are created.
        arrays: dataset path (e.g. ``"station/signal"``) -> array with the event axis first;
            names under ``meta/`` are per-file constants (no event axis, stored uncompressed).
        attrs: file attributes (``kind``, ``split``, ``config_hash``, ``seed``, ...); values that
            are ``None`` are left out ("not set"). ``schema_version``, ``reco_version``,
            ``created_utc`` and ``n_events`` are added.
        jagged: group name (e.g. ``"part"``) -> :class:`JaggedGroup` of per-event lists, stored as
            ``jagged/<group>/offsets`` and ``jagged/<group>/<field>`` with the awkward ``form``
            attribute on the group (see the module docstring).
        sparse: dataset name -> the bool event dataset (its leading shape) it is zero outside
            of: stored as the mask's entries only (:mod:`pipeline.sparse`), read back dense.

    Raises:
        TypeError: a dataset of a dtype HDF5 cannot hold (str, object), named.
        ValueError: event datasets disagree on their length, or a float dataset has NaN/inf; a
            jagged group with bad offsets (not starting at 0, decreasing, not ending at the
            content length), a mismatched event count, or NaN/inf in a field (named); a sparse
            dataset nonzero outside its mask, or whose mask is not a bool event dataset.
    """
    path = Path(path)
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    for name in arrays:
        if _is_jagged(name):
            raise ValueError(f"dataset {name!r}: names under {JAGGED_PREFIX!r} are for jagged=")
    n_events = _check_arrays(arrays)
    checked = {g: check_jagged(g, jag) for g, jag in (jagged or {}).items()}
    has_events = any(not _is_meta(k) for k in arrays)
    for group, (offsets, _) in checked.items():
        if has_events and offsets.size - 1 != n_events:
            raise ValueError(
                f"jagged {group!r} has {offsets.size - 1} events, but the event datasets have "
                f"{n_events}"
            )
        n_events = offsets.size - 1
    sparse = dict(sparse or {})
    for name in sparse:
        if name not in arrays or _is_meta(name):
            raise ValueError(f"sparse dataset {name!r} is not among the event datasets written")
    rows = {k: _sparse.sparse_rows(k, arrays[k], m, arrays) for k, m in sparse.items()}
    dense = {k: v for k, v in arrays.items() if not _is_meta(k) and k not in rows}
    chunk = chunk_events_for(dense, n_events)
    # h5py raises RuntimeError when its flush on close fails on a full disk
    with atomic_path(path, "the event file", (OSError, RuntimeError)) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                if name in rows:
                    _sparse.write_sparse(f, name, *rows[name], sparse[name], chunk)
                    continue
                try:
                    if _is_meta(name) or arr.size == 0:  # HDF5 chunks cannot have a 0 axis
                        f.create_dataset(name, data=arr)
                    else:
                        f.create_dataset(
                            name,
                            data=arr,
                            chunks=(chunk, *arr.shape[1:]),
                            **compression_for(arr, chunk),
                        )
                except TypeError as err:  # str or object arrays: no HDF5 type
                    raise TypeError(
                        f"dataset {name!r}: dtype {arr.dtype} cannot be stored in HDF5 ({err})"
                    ) from err
            for group, (offsets, content) in checked.items():
                write_jagged(f, group, offsets, content)
            h5attrs.write(
                f,
                {
                    **attrs,
                    "schema_version": SCHEMA_VERSION,
                    "reco_version": _reco_version(),
                    "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                    "n_events": n_events,
                    "chunk_events": chunk,
                },
            )
    return path


class EventFile:
    """A validated, read-only event file, kept open for the object's life.

    Use as a context manager or call :meth:`close`. Obtain one with :func:`open_events`.
    """

    def __init__(
        self,
        path: Path,
        handle: h5py.File,
        names: tuple[str, ...],
        sparse: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._f = handle
        self.names = names
        self.sparse: dict[str, str] = dict(sparse or {})  # sparse dataset -> its mask
        self.attrs: dict[str, Any] = {k: h5attrs.plain(v) for k, v in handle.attrs.items()}
        self.n_events = int(self.attrs["n_events"])
        self.chunk_events = int(self.attrs.get("chunk_events", _MAX_CHUNK_EVENTS))
        self._chunks = ChunkReader(handle)  # slices of chunked datasets, in parallel threads

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._chunks.close()
        if self._f.id.valid:
            self._f.close()

    def __repr__(self) -> str:
        return f"EventFile({str(self.path)!r}, n_events={self.n_events})"

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """h5py's errors on damaged metadata (found only when an object is opened) as
        :class:`EventFileError` naming the file and ``what``."""
        try:
            yield
        except EventFileError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
            raise EventFileError(f"{self.path}: {what} cannot be read: {err}") from err

    def _dataset(self, name: str) -> h5py.Dataset:
        if name not in self.names:
            raise KeyError(f"{self.path}: no dataset {name!r}")
        with self._reading(f"dataset {name!r}"):
            return self._f[name]

    def _load(self, ds: h5py.Dataset, name: str, sel: Any = ()) -> np.ndarray:
        """``ds[sel]``; damage found only now (a chunk that fails to decompress, cut metadata)
        raises :class:`EventFileError` naming the file and the dataset.

        Slices of event datasets are read chunk by chunk outside h5py's lock where the storage
        allows (:mod:`pipeline.chunks`), so that threads reading parts of a block run in parallel.
        """
        with self._reading(f"dataset {name!r}"):
            if isinstance(sel, slice) and sel.step in (None, 1) and ds.ndim > 0:
                start, stop, _ = sel.indices(ds.shape[0])
                out = self._chunks.read(ds, start, max(start, stop))
                if out is not None:
                    return out
            return ds[sel]

    def shape(self, name: str) -> tuple[int, ...]:
        """Full shape of a dataset (event axis first for event datasets)."""
        if name in self.sparse:
            with self._reading(f"sparse dataset {name!r}"):
                return _sparse.dense_shape(self._f, name, self.sparse[name])
        return tuple(self._dataset(name).shape)

    def dtype(self, name: str) -> np.dtype:
        if name in self.sparse:
            with self._reading(f"sparse dataset {name!r}"):
                return self._f[name]["rows"].dtype
        return self._dataset(name).dtype

    def read(self, name: str, sel: slice | np.ndarray | None = None) -> np.ndarray:
        """Read an event dataset, all of it or the events ``sel`` (a slice or an index array).

        A per-file constant (``meta/...``) has no event axis: it is returned whole for any ``sel``.

        Index arrays may be unsorted or repeat events; they are read in sorted unique order (what
        HDF5 fancy indexing needs) and put back in the order asked. Contiguous slices are by far the
        fastest reads: prefer them for bulk access.
        """
        if name in self.sparse:
            return self._read_sparse(name, slice(None) if sel is None else sel)
        ds = self._dataset(name)
        if sel is None or _is_meta(name):  # a per-file constant has no event axis
            return self._load(ds, name)
        if isinstance(sel, slice):
            return self._load(ds, name, sel)
        idx = np.asarray(sel)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if idx.size == 0:
            return np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
        if idx.min() < 0 or idx.max() >= ds.shape[0]:
            raise IndexError(f"{self.path}: index out of range for {name!r} (length {ds.shape[0]})")
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._load(ds, name, uniq)[inverse]

    def _read_sparse(self, name: str, sel: slice | np.ndarray) -> np.ndarray:
        """A sparse dataset's events ``sel``, dense (:mod:`pipeline.sparse`)."""
        if isinstance(sel, slice) and sel.step in (None, 1):
            return self.read_rows(name, sel).dense()
        idx = np.arange(self.n_events)[sel] if isinstance(sel, slice) else np.asarray(sel)
        idx = (np.flatnonzero(idx) if idx.dtype == bool else idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_events):
            raise IndexError(f"{self.path}: index out of range for {name!r}")
        events, inverse = np.unique(idx, return_inverse=True)
        return self._rows(name, events).dense()[inverse]

    def read_rows(self, name: str, sel: slice | None = None) -> _sparse.MaskedRows:
        """A sparse dataset's contiguous events ``sel`` as stored: its mask and the masked
        entries' rows, without the dense array (:class:`pipeline.sparse.MaskedRows`)."""
        if name not in self.sparse:
            raise KeyError(f"{self.path}: {name!r} is not a sparse dataset")
        start, stop, step = (sel or slice(None)).indices(self.n_events)
        if step != 1:
            raise ValueError("read_rows: sel must be a contiguous slice (step 1)")
        return self._rows(name, slice(start, max(start, stop)))

    def _rows(self, name: str, events: slice | np.ndarray) -> _sparse.MaskedRows:
        mask = self.sparse[name]
        with self._reading(f"sparse dataset {name!r}"):
            return _sparse.read_rows(
                self._f, name, mask, events, self._load, lambda e: self.read(mask, e)
            )

    def jagged_groups(self) -> tuple[str, ...]:
        """Names of the jagged groups (e.g. ``("part",)``)."""
        with self._reading("the jagged groups"):
            if JAGGED_PREFIX.rstrip("/") not in self._f:
                return ()
            return tuple(sorted(self._f[JAGGED_PREFIX.rstrip("/")]))

    def jagged_fields(self, group: str) -> tuple[str, ...]:
        """Content fields of a jagged group, in their stored order."""
        g = self._jagged(group)  # KeyError: no such group
        with self._reading(f"the 'fields' attribute of jagged group {group!r}"):
            fields = json.loads(h5attrs.plain(g.attrs["fields"]))
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise EventFileError(f"{self.path}: jagged group {group!r}: bad 'fields' {fields!r}")
        return tuple(fields)

    def jagged_form(self, group: str) -> str:
        """Awkward form JSON of a jagged group (buffer_key ``"{form_key}"``)."""
        g = self._jagged(group)
        with self._reading(f"the 'form' attribute of jagged group {group!r}"):
            return str(h5attrs.plain(g.attrs["form"]))

    def _jagged(self, group: str) -> h5py.Group:
        with self._reading(f"jagged group {group!r}"):
            g = self._f.get(JAGGED_PREFIX + group)
        if g is None:
            raise KeyError(f"{self.path}: no jagged group {group!r}")
        return g

    def read_jagged(
        self, group: str, fields: Sequence[str] | None = None, sel: slice | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Read the lists of a contiguous range of events.

        Args:
            group: jagged group name (``"part"``).
            fields: content fields to read; None -> all.
            sel: a slice of events with step 1; None -> all events.

        Returns:
            offsets (m + 1,) int64 rebased to start at 0, and field -> flat content array.
        """
        g = self._jagged(group)
        start, stop, step = (sel or slice(None)).indices(self.n_events)
        if step != 1:
            raise ValueError("read_jagged: sel must be a contiguous slice (step 1)")
        stop = max(stop, start)
        where = f"jagged/{group}/offsets"
        names = self.jagged_fields(group) if fields is None else tuple(fields)
        with self._reading(f"jagged group {group!r}"):
            unknown = [f for f in names if f not in g]
            data = {f: g[f] for f in ("offsets", *names) if f not in unknown}
        if unknown:  # asked for (KeyError), or listed in the group's own 'fields' (damage)
            error = KeyError if fields is not None else EventFileError
            raise error(f"{self.path}: jagged group {group!r} has no fields {unknown}")
        odd = [f for f, d in data.items() if not isinstance(d, h5py.Dataset) or d.ndim != 1]
        if odd:
            raise EventFileError(f"{self.path}: jagged group {group!r}: {odd} are not 1-d datasets")
        offsets = self._load(data.pop("offsets"), where, slice(start, stop + 1)).astype(np.int64)
        # Offsets written elsewhere (or damaged) must not index past the content or go backwards:
        # h5py would silently return a shorter slice and the padding would read other events.
        size = min((d.shape[0] for d in data.values()), default=None)
        if (
            offsets[0] < 0
            or np.any(np.diff(offsets) < 0)
            or (size is not None and offsets[-1] > size)
        ):
            raise EventFileError(
                f"{self.path}: dataset {where!r} is not non-decreasing within [0, {size}] "
                f"(content length) for events {start}:{stop}"
            )
        lo, hi = int(offsets[0]), int(offsets[-1])
        content = {f: self._load(d, f"jagged/{group}/{f}", slice(lo, hi)) for f, d in data.items()}
        return offsets - lo, content

    def read_meta(self, name: str) -> np.ndarray:
        """A per-file constant; ``name`` with or without the ``meta/`` prefix."""
        full = name if _is_meta(name) else META_PREFIX + name
        return self._load(self._dataset(full), full)


def _dataset_names(f: h5py.File) -> tuple[tuple[str, ...], dict[str, str]]:
    """The file's datasets (a sparse dataset by its own name) and its sparse datasets' masks,
    in one walk of the file."""
    datasets: list[str] = []
    sparse: dict[str, str] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            datasets.append(name)
        elif (mask := _sparse.mask_of(obj)) is not None:
            sparse[name] = mask

    f.visititems(visit)
    inside = tuple(f"{g}/" for g in sparse)
    return tuple(sorted([*sparse, *(n for n in datasets if not n.startswith(inside))])), sparse


def _validate(
    path: Path,
    f: h5py.File,
    names: tuple[str, ...],
    sparse: Mapping[str, str],
    kind: str | None,
    require: Iterable[str],
) -> None:
    def fail(problem: str) -> EventFileError:
        return EventFileError(f"{path}: {problem}")

    version = f.attrs.get("schema_version")
    if version is None:
        raise fail("no 'schema_version' attribute; not an event file written by pipeline.events")
    if int(version) not in _READABLE_VERSIONS:
        raise fail(
            f"schema_version {int(version)} found, but this code reads schema_version "
            f"{' and '.join(map(str, _READABLE_VERSIONS))}; regenerate the file or use a "
            "matching reco version"
        )
    if "n_events" not in f.attrs:
        raise fail("no 'n_events' attribute")
    file_kind = h5attrs.plain(f.attrs.get("kind"))
    if kind is not None and file_kind != kind:
        raise fail(f"kind {file_kind!r} found, but {kind!r} was expected")
    for name in require:
        if name not in names:
            raise fail(f"required dataset {name!r} is missing")
    n_events = int(f.attrs["n_events"])
    for name in names:
        if _is_meta(name):
            continue
        if name in sparse:
            problem = _sparse.check_group(f, name, sparse[name], names)
            if problem:
                raise fail(problem)
            continue
        if _is_jagged(name):
            if name.endswith("/offsets") and f[name].shape != (n_events + 1,):
                raise fail(
                    f"dataset {name!r} has shape {f[name].shape}, but the file has "
                    f"n_events={n_events} (needs n_events + 1 offsets)"
                )
            continue
        shape = f[name].shape
        if not shape or shape[0] != n_events:
            raise fail(f"dataset {name!r} has shape {shape}, but the file has n_events={n_events}")


def open_events(path: Path, kind: str | None = None, require: Iterable[str] = ()) -> EventFile:
    """Open and validate an event file.

    Args:
        path: the ``.h5`` file.
        kind: expected ``kind`` attribute (e.g. ``"airshower"``); None accepts any.
        require: dataset paths that must be present (e.g. the feature sources and targets).

    A *manifest* (a split written in shards, :mod:`pipeline.shards`) opens as an
    ``EventFileSet``, which reads like one file over all its shards.

    Raises:
        EventFileError: missing file; not HDF5, truncated or corrupt; other schema version; wrong
            kind; a required dataset missing; a dataset whose length is not ``n_events``; a
            manifest whose shard is missing (named).
    """
    path = Path(path)
    if not path.exists():
        raise EventFileError(f"{path}: event file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise EventFileError(
            f"{path}: cannot be read as HDF5 (truncated, corrupt or not an HDF5 file): {err}"
        ) from err
    try:
        if "shard_files" not in handle.attrs:  # else a manifest: the split is in several files
            names, sparse = _dataset_names(handle)
            _validate(path, handle, names, sparse, kind, tuple(require))
            return EventFile(path, handle, names, sparse)
    except EventFileError:
        handle.close()
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as err:
        # Damage past the superblock surfaces only when metadata is walked (or as attributes that
        # no longer decode).
        handle.close()
        raise EventFileError(f"{path}: corrupt event file: {err}") from err
    from pipeline.shards import EventFileSet

    handle.close()
    return EventFileSet.open(path, kind=kind, require=tuple(require))  # type: ignore[return-value]
