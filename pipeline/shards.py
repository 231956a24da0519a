"""One split written as several event files (shards, e.g. by a SLURM job array), read as one.

A simulation split of ``n`` events is made of chunks (each with its own seed), so any contiguous
range of chunks can be simulated on its own: shard ``i`` of ``S`` holds the chunks of
:func:`shard_chunks` and is written to ``<split>.shard-<i>-of-<S>.h5``. Concatenated in order,
the shards hold exactly the events of the unsharded file.

The *manifest* is a small HDF5 file at the split's usual path (``train.h5``) with the split's
attributes (``kind``, ``config_hash``, ``n_events`` = the sum, ...) and ``shard_files``, the shard
file names relative to its folder. :func:`pipeline.events.open_events` opens a manifest as an
:class:`EventFileSet`: the reading interface of ``EventFile`` over the concatenation of the
shards, so the loader, the feature statistics and evaluation read sharded splits unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from pipeline import h5attrs
from pipeline.atomic import atomic_path
from pipeline.sparse import MaskedRows

if TYPE_CHECKING:
    from pipeline.events import EventFile

MANIFEST_ATTR = "shard_files"  # on a manifest: JSON list of the shard files, in order


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` of a split."""
    return f"{split}.shard-{index:03d}-of-{count:03d}.h5"


def shard_chunks(n_chunks: int, index: int, count: int) -> range:
    """The chunks of shard ``index``: ``n_chunks`` split into ``count`` contiguous ranges whose
    lengths differ by at most one (empty when there are fewer chunks than shards).

    Raises:
        ValueError: ``index`` not in ``[0, count)``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index} is not in [0, {count})")
    base, extra = divmod(n_chunks, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def chunk_count(n_events: int, chunk_size: int) -> int:
    """Chunks of a split of ``n_events`` (the simulators' ``range(0, max(n, 1), chunk_size)``)."""
    return len(range(0, max(n_events, 1), chunk_size))


def shard_plan(
    n_events: int, chunk_size: int, shard: tuple[int, int] | None
) -> tuple[range | None, int]:
    """``(chunks, events)`` of one shard of a split; ``(None, n_events)`` without sharding.

    A shard with no chunks (a split with fewer chunks than shards) has ``events == 0`` and is
    not written: the manifest lists the others.
    """
    if shard is None:
        return None, n_events
    chunks = shard_chunks(chunk_count(n_events, chunk_size), *shard)
    events = sum(min(chunk_size, n_events - i * chunk_size) for i in chunks)
    return chunks, max(events, 0)


def shard_attrs(shard: tuple[int, int] | None) -> dict[str, int]:
    """File attributes of a shard (none for an unsharded file)."""
    return {} if shard is None else {"shard_index": shard[0], "shard_count": shard[1]}


def split_path(out_dir: Path, split: str, shard: tuple[int, int] | None) -> Path:
    """``out_dir/<split>.h5``, or the shard's file."""
    return Path(out_dir) / (f"{split}.h5" if shard is None else shard_name(split, *shard))


def write_manifest(path: Path, shards: Sequence[Path], attrs: dict[str, Any]) -> Path:
    """Write the manifest of a split (atomically) and return its path.

    Args:
        path: the split's path (``out/train.h5``); the shards must be in the same folder.
        shards: the shard files in order (each a complete event file).
        attrs: the split's attributes (``kind``, ``split``, ``config_hash``, ``seed``, ...).

    Raises:
        EventFileError: a shard is missing or not a valid event file (named).
        ValueError: a shard in another folder, or shards that disagree in kind or datasets.
    """
    from pipeline.events import SCHEMA_VERSION, open_events

    path = Path(path)
    names, total = [], 0
    for shard in shards:
        shard = Path(shard)
        if shard.parent.resolve() != path.parent.resolve():
            raise ValueError(f"shard {shard} is not in the manifest's folder {path.parent}")
        with open_events(shard, kind=attrs.get("kind")) as ev:
            total += ev.n_events
        names.append(shard.name)
    with atomic_path(path, "the manifest", (OSError, RuntimeError)) as tmp:
        with h5py.File(tmp, "w") as f:
            h5attrs.write(
                f,
                {
                    **attrs,
                    "schema_version": SCHEMA_VERSION,
                    "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                    "n_events": total,
                    MANIFEST_ATTR: json.dumps(names),
                },
            )
    EventFileSet.open(path).close()  # the shards agree with each other (raises if not)
    return path


def shard_paths(path: Path) -> list[Path]:
    """The shard files a manifest lists, in order ([] for an ordinary event file, or a file
    that is not readable HDF5: opening it then says what is wrong)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            listed = f.attrs.get(MANIFEST_ATTR)
    except OSError:
        return []
    if listed is None:
        return []
    names = json.loads(str(h5attrs.plain(listed)))
    return [path.parent / n for n in names]


def missing_shards(path: Path) -> list[str]:
    """The shard files a manifest lists that do not exist ([] for an ordinary event file)."""
    return [p.name for p in shard_paths(path) if not p.is_file()]


class EventFileSet:
    """The shards of a manifest read as one event file (the reading interface of
    :class:`pipeline.events.EventFile`). Obtain one with :func:`pipeline.events.open_events`."""

    def __init__(self, path: Path, files: list[EventFile], attrs: dict[str, Any]) -> None:
        self.path, self.files, self.attrs = path, files, attrs
        first = files[0]
        self.names, self.sparse = first.names, first.sparse
        for ev in files[1:]:
            if ev.names != first.names:
                diff = sorted(set(ev.names) ^ set(first.names))
                raise ValueError(f"{path}: shard {ev.path.name} has other datasets: {diff}")
            if ev.sparse != first.sparse:
                raise ValueError(
                    f"{path}: shard {ev.path.name} stores {sorted(ev.sparse)} sparse, "
                    f"{first.path.name} {sorted(first.sparse)}"
                )
            for name in ev.names:
                if ev.dtype(name) != first.dtype(name):
                    raise ValueError(
                        f"{path}: dataset {name!r} is {ev.dtype(name)} in {ev.path.name}, "
                        f"{first.dtype(name)} in {first.path.name}"
                    )
        sizes = np.array([ev.n_events for ev in files], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self.n_events = int(self._starts[-1])
        if self.n_events != int(attrs["n_events"]):
            raise ValueError(
                f"{path}: the manifest says {int(attrs['n_events'])} events, its shards hold "
                f"{self.n_events} (a shard was rewritten: write the manifest again)"
            )
        self.chunk_events = min(ev.chunk_events for ev in files)

    @classmethod
    def open(cls, path: Path, kind: str | None = None, require: Sequence[str] = ()) -> EventFileSet:
        """Open a manifest and its shards (each validated as an event file)."""
        from pipeline.events import EventFileError, open_events

        path = Path(path)
        with h5py.File(path, "r") as f:
            attrs = {k: h5attrs.plain(v) for k, v in f.attrs.items()}
        try:
            names = json.loads(attrs[MANIFEST_ATTR])
        except (KeyError, TypeError, ValueError) as err:
            raise EventFileError(f"{path}: not a shard manifest ({MANIFEST_ATTR}: {err})") from err
        if not names:
            raise EventFileError(f"{path}: the manifest lists no shards")
        files: list[EventFile] = []
        try:
            for name in names:
                shard = path.parent / name
                if not shard.is_file():
                    raise EventFileError(f"{path}: shard {name} does not exist in {path.parent}")
                files.append(open_events(shard, kind=kind, require=require))
            return cls(path, files, attrs)
        except BaseException:
            for ev in files:
                ev.close()
            raise

    def __enter__(self) -> EventFileSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ev in self.files:
            ev.close()

    def __repr__(self) -> str:
        return (
            f"EventFileSet({str(self.path)!r}, shards={len(self.files)}, n_events={self.n_events})"
        )

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self.files[0].shape(name)
        if name.startswith("meta/"):
            return shape
        return (self.n_events, *shape[1:])

    def dtype(self, name: str) -> np.dtype:
        return self.files[0].dtype(name)

    def _pieces(self, start: int, stop: int) -> list[tuple[int, slice]]:
        """(shard, local slice) covering the events [start, stop)."""
        out = []
        for i in range(len(self.files)):
            lo, hi = max(start, int(self._starts[i])), min(stop, int(self._starts[i + 1]))
            if lo < hi:
                base = int(self._starts[i])
                out.append((i, slice(lo - base, hi - base)))
        return out

    def read(self, name: str, sel: slice | np.ndarray | None = None) -> np.ndarray:
        """As ``EventFile.read``, over the concatenated shards."""
        if name.startswith("meta/"):
            return self.files[0].read(name)
        if sel is None:
            sel = slice(None)
        if isinstance(sel, slice):
            start, stop, step = sel.indices(self.n_events)
            if step != 1:
                return self.read(name, np.arange(start, stop, step))
            parts = [self.files[i].read(name, s) for i, s in self._pieces(start, max(stop, start))]
            if not parts:
                return np.empty((0, *self.shape(name)[1:]), self.dtype(name))
            return np.concatenate(parts)
        idx = np.asarray(sel)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_events):
            raise IndexError(f"{self.path}: index out of range for {name!r} ({self.n_events})")
        out = np.empty((idx.size, *self.shape(name)[1:]), self.dtype(name))
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for i in np.unique(shard):
            mine = shard == i
            out[mine] = self.files[i].read(name, idx[mine] - self._starts[i])
        return out

    def read_rows(self, name: str, sel: slice | None = None) -> MaskedRows:
        """As ``EventFile.read_rows``, over the concatenated shards."""
        start, stop, step = (sel or slice(None)).indices(self.n_events)
        if step != 1:
            raise ValueError("read_rows: sel must be a contiguous slice (step 1)")
        parts = [self.files[i].read_rows(name, s) for i, s in self._pieces(start, max(stop, start))]
        return MaskedRows.concat(parts) if parts else self.files[0].read_rows(name, slice(0, 0))

    def jagged_groups(self) -> tuple[str, ...]:
        return self.files[0].jagged_groups()

    def jagged_fields(self, group: str) -> tuple[str, ...]:
        return self.files[0].jagged_fields(group)

    def jagged_form(self, group: str) -> str:
        return self.files[0].jagged_form(group)

    def read_jagged(
        self, group: str, fields: Sequence[str] | None = None, sel: slice | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """As ``EventFile.read_jagged``: the lists of a contiguous range of events."""
        start, stop, step = (sel or slice(None)).indices(self.n_events)
        if step != 1:
            raise ValueError("read_jagged: sel must be a contiguous slice (step 1)")
        names = self.jagged_fields(group) if fields is None else tuple(fields)
        offsets, content = [np.zeros(1, np.int64)], {f: [] for f in names}
        for i, s in self._pieces(start, max(stop, start)):
            off, cont = self.files[i].read_jagged(group, names, s)
            offsets.append(off[1:] + offsets[-1][-1])
            for f in names:
                content[f].append(cont[f])
        dtypes = {f: self.files[0]._jagged(group)[f].dtype for f in names}
        return np.concatenate(offsets), {
            f: np.concatenate(v) if v else np.empty(0, dtypes[f]) for f, v in content.items()
        }

    def read_meta(self, name: str) -> np.ndarray:
        return self.files[0].read_meta(name)
