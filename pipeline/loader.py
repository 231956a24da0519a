"""Batches from an event file: block-shuffled, padded to static shapes, prefetched in a thread.

HDF5 reads are fast only for contiguous, chunk-aligned ranges, so the loader never reads single
events: the file is cut into chunk-aligned *blocks*; an epoch visits the blocks in a shuffled order
(deterministic in ``(seed, epoch)``), shuffles the events inside each block, builds the inputs of a
whole block at once and cuts batches, carrying leftovers over to the next block. With several
processes (hosts), the blocks of an epoch are dealt round-robin so processes read disjoint events,
and every process yields the same number of batches (padding batches where it has fewer events).

A batch is ``dict[str, np.ndarray]`` with the same shapes every time (jit needs static shapes):
the input groups of the feature spec (with ``<group>_mask`` for set and jagged groups; a jagged
group's lists are read per block with ``EventFile.read_jagged``), ``target`` (B, n_targets) float32 (raw ``truth/<t>``),
``valid`` (B,) float32 (0 for padding), ``index`` (B,) int64 (-1 for padding) and
``observer/<name>`` (B,) for each observer.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.events import EventFile, open_events
from pipeline.features import (
    FeatureConfig,
    FeatureStats,
    build_inputs,
    input_spec,
    jagged_groups,
    row_sources,
    sources,
)
from pipeline.jet_features import read_block
from pipeline.symmetry import apply_symmetry, lattice_symmetries


@dataclass(frozen=True)
class LoaderConfig:
    """How event files are cut into batches."""

    batch_size: int = 256  # events per batch (per process)
    shuffle_block: int = 4096  # events per shuffled block, rounded to whole HDF5 chunks
    prefetch: int = 2  # batches prepared ahead by the background thread; 0 = no thread
    drop_last: bool = False  # drop the last partial batch instead of padding it (training)
    cache: bool = False  # keep the built inputs in memory after the first epoch (split must fit)
    trim_buckets: tuple[int, ...] = ()  # crop jagged groups to the batch's longest list, rounded
    # up to one of these lengths (e.g. [32, 64, 96, 128]); () = always the full padded length
    trim_quantile: float = 1.0  # training batches: the crop holds this quantile of the batch's
    # list lengths (< 1 drops the softest particles of the longest jets); evaluation: always 1
    augment: Literal["none", "lattice"] = "none"  # training batches: "lattice" moves each
    # event's image groups by a random symmetry of the station grid (pipeline.symmetry)
    build_threads: int = 0  # threads that read and build each block, in parts of whole chunks;
    # 0 = one per core this process may use, at most 8

    def __post_init__(self) -> None:
        if not 0.0 < self.trim_quantile <= 1.0:
            raise ValueError(f"trim_quantile must be in (0, 1], got {self.trim_quantile}")
        if any(b < 1 for b in self.trim_buckets) or list(self.trim_buckets) != sorted(
            set(self.trim_buckets)
        ):
            raise ValueError(
                f"trim_buckets must be increasing positive lengths, got {list(self.trim_buckets)}"
            )


_AUTO_THREADS = 8  # build_threads 0: one per core, at most this many
_STOP_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


class Loader:
    """Iterates over the events of one file in padded batches (see the module docstring).

    Args:
        file: an open event file or its path (then opened here and closed by :meth:`close`).
        features: the feature spec; ``stats`` its statistics fitted on the training file.
        targets: target names; batch ``target[:, i]`` is ``truth/<targets[i]>``.
        batch_size: events per batch on this process.
        shuffle: shuffle blocks and events within blocks (training); False keeps file order.
        seed: with ``epoch``, fixes the order; all processes must pass the same seed.
        drop_last: drop the last partial batch instead of padding it.
        prefetch: batches prepared ahead in a background thread; 0 runs in the caller's thread.
        process_index, process_count: this process's share of the blocks (multi-host).
        observers: extra per-event quantities, ``truth/<name>`` (or a dataset path containing a
            "/"), yielded as ``observer/<last path part>``.
        shuffle_block: events per block, rounded to whole chunks of the file.
        cache: keep each block's built inputs in memory once read, so later epochs neither read
            nor transform (trace summaries cost more than a CNN step); the shuffle is applied to
            the cached arrays, so batches are identical with and without the cache.
        trim_buckets: sequence trimming (the reference ParT's ``SequenceTrimmer`` at inference):
            every jagged group of a batch is cropped along the particle axis to the smallest
            bucket that holds the batch's longest list (over all jagged groups; lists are padded
            at the end, so nothing real is cut), capped at the group's padded length. A model
            then sees a handful of shapes (one XLA compilation each) instead of always 128.
            With ``trim_quantile`` = 1 no particle is ever dropped.
        augment: "lattice": every event of a batch has its image groups moved by a random
            symmetry of the station grid (rotations by 60 degrees and reflections on a triangular
            array; :mod:`pipeline.symmetry`), stations moved off the array become empty (the
            variables' ``fill``). Only for targets that do not depend on the orientation (energy,
            Xmax, mass); ``from_config`` enables it for training (shuffled) loaders only.
        trim_quantile: the crop length is the bucket that holds this quantile of the batch's list
            lengths: below 1 the longest jets lose their softest particles (lists are pT-ordered),
            like the reference's training-time trimming (which crops at a random quantile in
            [0.9, 1.02] and drops randomly chosen particles). Use it for training loaders only.
        build_threads: read and build each block in this many parts of whole chunks, on a pool of
            threads (the same batches: features are per event); 0 = one per core this process
            may use (its CPU affinity), at most 8. The chunks are read and inflated outside
            h5py's lock (:mod:`pipeline.chunks`) and numpy releases the GIL, so parts run on
            separate cores.
    """

    def __init__(
        self,
        file: EventFile | Path,
        features: FeatureConfig,
        stats: FeatureStats,
        targets: tuple[str, ...],
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        prefetch: int = 2,
        process_index: int = 0,
        process_count: int = 1,
        observers: tuple[str, ...] = (),
        shuffle_block: int = LoaderConfig.shuffle_block,
        cache: bool = False,
        trim_buckets: tuple[int, ...] = (),
        trim_quantile: float = 1.0,
        augment: str = "none",
        build_threads: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if build_threads < 0:
            raise ValueError(f"build_threads must be >= 0 (0 = one per core), got {build_threads}")
        self.build_threads = int(build_threads) or min(_AUTO_THREADS, _usable_cores())
        self._pool: ThreadPoolExecutor | None = None
        self._observer_paths = {
            f"observer/{o.rsplit('/', 1)[-1]}": (o if "/" in o else f"truth/{o}") for o in observers
        }
        self._target_paths = tuple(f"truth/{t}" for t in targets)
        self._own_file = isinstance(file, str | os.PathLike)
        if not self._own_file:  # an open EventFile (or the EventFileSet of a sharded split)
            self.file = file
            missing = [
                p
                for p in (*self._target_paths, *self._observer_paths.values())
                if p not in file.names
            ]
            if missing:
                raise ValueError(f"{file.path}: missing dataset(s) {missing}")
        else:
            self.file = open_events(
                file, require=(*self._target_paths, *self._observer_paths.values())
            )
        self.features, self.stats, self.targets = features, stats, tuple(targets)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.prefetch = drop_last, prefetch
        self.process_index, self.process_count = process_index, process_count
        try:
            self.input_spec = input_spec(features, self.file)  # also validates sources, shapes
        except Exception:
            self.close()
            raise
        self._sources = sources(features)
        # sparse datasets read as stored (their rows) where the features use no more
        not_inputs = {*self._target_paths, *self._observer_paths.values()}
        self._rows = row_sources(features, getattr(self.file, "sparse", {})) - not_inputs
        self._epoch = 0
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None
        LoaderConfig(trim_buckets=tuple(trim_buckets), trim_quantile=trim_quantile)  # validates
        self.trim_buckets = tuple(int(b) for b in trim_buckets)
        self.trim_quantile = float(trim_quantile)
        self._trimmed = tuple(g.name for g in features.groups if g.layout == "jagged")
        try:
            self._symmetries = self._lattice_symmetries(augment)
        except Exception:
            self.close()
            raise

        n, chunk = self.file.n_events, self.file.chunk_events
        self.block_events = max(1, round(shuffle_block / chunk)) * chunk
        self._block_starts = np.arange(0, n, self.block_events, dtype=np.int64)
        self._events_per_process = [
            sum(self._block_size(b) for b in self._process_blocks(p, self._all_blocks()))
            for p in range(process_count)
        ]
        self.n_events = self._events_per_process[process_index]
        if drop_last:
            self._n_batches = min(self._events_per_process) // batch_size
        else:
            self._n_batches = math.ceil(max(self._events_per_process) / batch_size)

    def _lattice_symmetries(self, augment: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Image group -> (symmetry index maps, blank station values), for ``augment``."""
        if augment == "none":
            return {}
        if augment != "lattice":
            raise ValueError(f"augment must be 'none' or 'lattice', got {augment!r}")
        images = [g for g in self.features.groups if g.layout == "image"]
        if not images:
            raise ValueError("augment 'lattice' needs an image input group; the features have none")
        missing = [p for p in ("meta/station_x", "meta/station_y") if p not in self.file.names]
        if missing:
            raise ValueError(
                f"{self.file.path}: augment 'lattice' needs the station positions {missing}"
            )
        x, y = self.file.read_meta("station_x"), self.file.read_meta("station_y")
        source = lattice_symmetries(x, y)
        out = {}
        for g in images:
            if self.input_spec[g.name][:-1] != x.shape:
                raise ValueError(
                    f"augment 'lattice': image group {g.name!r} has shape "
                    f"{self.input_spec[g.name][:-1]}, the station grid {x.shape}"
                )
            out[g.name] = (source, np.array([v.fill for v in g.variables], np.float32))
        return out

    @classmethod
    def from_config(
        cls,
        file: EventFile | Path,
        cfg: LoaderConfig,
        features: FeatureConfig,
        stats: FeatureStats,
        targets: tuple[str, ...],
        *,
        shuffle: bool,
        seed: int,
        **kwargs: object,
    ) -> Loader:
        """A loader with the batch settings of ``cfg`` (``kwargs``: process and observer args)."""
        return cls(
            file,
            features,
            stats,
            targets,
            batch_size=cfg.batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=cfg.drop_last,
            prefetch=cfg.prefetch,
            shuffle_block=cfg.shuffle_block,
            cache=cfg.cache,
            trim_buckets=cfg.trim_buckets,
            trim_quantile=cfg.trim_quantile if shuffle else 1.0,  # lossless unless training
            augment=cfg.augment if shuffle else "none",  # training loaders only
            build_threads=cfg.build_threads,
            **kwargs,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ block bookkeeping

    def _all_blocks(self) -> np.ndarray:
        return np.arange(len(self._block_starts))

    def _block_size(self, b: int) -> int:
        start = int(self._block_starts[b])
        return min(self.block_events, self.file.n_events - start)

    def _process_blocks(self, p: int, order: np.ndarray) -> np.ndarray:
        """Blocks of process ``p``: full blocks dealt round-robin, the partial last block always
        to the same process, so every process has the same number of events in every epoch."""
        last = len(self._block_starts) - 1
        partial = last >= 0 and self._block_size(last) < self.block_events
        full = order[order != last] if partial else order
        mine = full[p :: self.process_count]
        if partial and p == len(full) % self.process_count:
            mine = np.append(mine, last)
        return mine

    def _epoch_blocks(self, e: int) -> tuple[np.ndarray, np.random.Generator | None]:
        if not self.shuffle:
            return self._process_blocks(self.process_index, self._all_blocks()), None
        rng = np.random.default_rng([self.seed, e])  # the same on every process
        order = rng.permutation(len(self._block_starts))
        mine = self._process_blocks(self.process_index, order)
        # Move the partial block (appended last) to a random place in this process's order.
        return rng.permutation(mine), np.random.default_rng([self.seed, e, self.process_index])

    # ------------------------------------------------------------------ batches

    def __len__(self) -> int:
        """Batches per epoch (the same on every process)."""
        return self._n_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """The next epoch (0, 1, 2, ... on successive calls)."""
        e, self._epoch = self._epoch, self._epoch + 1
        return self.epoch(e)

    def epoch(self, e: int) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``e``; the order depends only on ``(seed, e)``."""
        if self.prefetch <= 0:
            return self._batches(e, threading.Event())
        return self._prefetched(e)

    def _batches(self, e: int, stop: threading.Event) -> Iterator[dict[str, np.ndarray]]:
        """The finished batches: augmented (training) and trimmed, in the producer thread."""
        rng = np.random.default_rng([self.seed, e, self.process_index, 1])
        for batch in self._raw_batches(e, stop):
            if self._symmetries:
                batch = self._augment(batch, rng)
            if self.trim_buckets and self._trimmed:
                batch = self.trim(batch)
            yield batch

    def _augment(
        self, batch: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Each event's image groups moved by a random symmetry of the station lattice."""
        out = dict(batch)
        n = len(batch["valid"])
        for name, (source, blank) in self._symmetries.items():
            image = batch[name]
            choice = rng.integers(len(source), size=n)
            flat = image.reshape(n, -1, image.shape[-1])
            out[name] = apply_symmetry(flat, source, choice, blank).reshape(image.shape)
        return out

    def trim(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch`` with its jagged groups cropped to the bucket of its longest list."""
        lengths = np.max([batch[f"{g}_mask"].sum(axis=1) for g in self._trimmed], axis=0)
        if self.trim_quantile < 1.0:
            longest = int(np.ceil(np.quantile(lengths, self.trim_quantile)))
        else:
            longest = int(lengths.max(initial=0))
        out = dict(batch)
        for g in self._trimmed:
            full = batch[g].shape[1]
            length = next((b for b in self.trim_buckets if b >= longest), full)
            length = min(max(length, 1), full)
            if length < full:
                out[g] = batch[g][:, :length]
                out[f"{g}_mask"] = batch[f"{g}_mask"][:, :length]
        return out

    def _built_block(self, b: int) -> dict[str, np.ndarray]:
        """All events of block ``b`` in file order as one (unpadded) batch dict: built in parts
        of whole chunks on ``build_threads`` threads (per-event features: the same arrays)."""
        if self._cache is not None and b in self._cache:
            return self._cache[b]
        start, size = int(self._block_starts[b]), self._block_size(b)
        chunk = self.file.chunk_events
        parts = min(self.build_threads, -(-size // chunk))
        if parts > 1:
            edges = sorted({start + round(k * size / parts / chunk) * chunk for k in range(parts)})
            edges = [e for e in edges if e < start + size]
            ranges = list(zip(edges, [*edges[1:], start + size], strict=True))
            out = _concat(list(self._builders().map(lambda r: self._build(*r), ranges)))
        else:
            out = self._build(start, start + size)
        if self._cache is not None:
            self._cache[b] = out
        return out

    def _builders(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.build_threads, thread_name_prefix="reco-build")
        return self._pool

    def _build(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Events ``start:stop`` read from the file and built into inputs, targets and index."""
        sel = slice(start, stop)
        paths = (*self._sources, *self._target_paths, *self._observer_paths.values())
        raw = {
            p: self.file.read_rows(p, sel) if p in self._rows else self.file.read(p, sel)
            for p in dict.fromkeys(paths)
        }
        jagged = jagged_groups(self.features)
        if jagged:  # one contiguous read per field of the range
            raw.update(read_block(jagged, self.file, sel))
        size = stop - start
        index = np.arange(start, stop, dtype=np.int64)
        try:
            out = build_inputs(self.features, self.stats, raw, event_index=index)
        except ValueError as err:
            raise ValueError(f"{self.file.path}: {err}") from err
        target = np.empty((size, len(self.targets)), np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: caught just below
            for i, p in enumerate(self._target_paths):
                target[:, i] = raw[p]
        self._check_finite("target", target, self._target_paths, index)
        out["target"] = target
        out["valid"] = np.ones(size, np.float32)
        out["index"] = index
        for key, p in self._observer_paths.items():
            out[key] = raw[p]
            if raw[p].dtype.kind == "f":
                self._check_finite(key, raw[p][:, None], (p,), index)
        return out

    def _check_finite(
        self, key: str, values: np.ndarray, paths: tuple[str, ...], index: np.ndarray
    ) -> None:
        """Bad truth must stop a run, not become a NaN loss: name the file, dataset and event."""
        finite = np.isfinite(values)
        if finite.all():
            return
        event, column = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{self.file.path}: dataset {paths[column]!r} (batch key {key!r}) is NaN or inf "
            f"(as float32) at event index {int(index[event])}"
        )

    def _block_events(
        self, b: int, rng: np.random.Generator | None
    ) -> Callable[[int, int], dict[str, np.ndarray]]:
        """``(lo, hi) ->`` events ``lo:hi`` of block ``b`` as an (unpadded) batch dict, in an
        order shuffled by ``rng`` if given.

        Features are per event, so shuffling the built arrays equals building shuffled events.
        Unshuffled, a batch is a view into the block; shuffled, it is gathered batch by batch
        (one batch-sized copy, which the allocator reuses, not a shuffled copy of the block).
        """
        out = self._built_block(b)
        if rng is None:
            return lambda lo, hi: {k: v[lo:hi] for k, v in out.items()}
        perm = rng.permutation(self._block_size(b))
        return lambda lo, hi: {k: v[perm[lo:hi]] for k, v in out.items()}

    def _raw_batches(self, e: int, stop: threading.Event) -> Iterator[dict[str, np.ndarray]]:
        """Batches cut from the blocks in order (:meth:`_block_events`), or (for a batch that
        spans two blocks) the leftover of one joined to the head of the next."""
        blocks, rng = self._epoch_blocks(e)
        bs, pending, n_pending, yielded = self.batch_size, [], 0, 0
        for b in blocks:
            if stop.is_set() or yielded == self._n_batches:
                return
            events, size = self._block_events(int(b), rng), self._block_size(int(b))
            pos = min(bs - n_pending, size) if n_pending else 0  # completes the pending batch
            if pos:
                pending.append(events(0, pos))
                n_pending += pos
                if n_pending < bs:
                    continue
                yield _concat(pending)
                yielded, pending, n_pending = yielded + 1, [], 0
            while size - pos >= bs:
                if yielded == self._n_batches or stop.is_set():
                    return
                yield events(pos, pos + bs)
                yielded, pos = yielded + 1, pos + bs
            if pos < size:
                pending, n_pending = [events(pos, size)], size - pos
        template = self._template()
        while yielded < self._n_batches and not stop.is_set():
            # The partial last batch, then all-padding batches where other processes have more.
            yield _pad(_concat(pending) if pending else None, template, bs)
            pending = []
            yielded += 1

    def _template(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-event shape and dtype of every batch key (for padding)."""
        shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for g in self.features.groups:
            shapes[g.name] = (self.input_spec[g.name], np.dtype(np.float32))
            if g.layout in ("set", "jagged"):
                shapes[f"{g.name}_mask"] = (self.input_spec[g.name][:1], np.dtype(bool))  # entries
        shapes["target"] = ((len(self.targets),), np.dtype(np.float32))
        shapes["valid"] = ((), np.dtype(np.float32))
        shapes["index"] = ((), np.dtype(np.int64))
        for key, p in self._observer_paths.items():
            shapes[key] = ((), self.file.dtype(p))
        return shapes

    def _prefetched(self, e: int) -> Iterator[dict[str, np.ndarray]]:
        q: queue.Queue[object] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_STOP_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self._batches(e, stop):
                    if not put(batch):
                        return
                put(_DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
                put(_Failure(exc))

        thread = threading.Thread(target=produce, name=f"reco-loader-epoch{e}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item  # type: ignore[misc]
        finally:
            # Also runs when the consumer stops early (generator closed): release the producer.
            stop.set()
            thread.join()

    def close(self) -> None:
        """Stop the build threads; close the file if this loader opened it."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._own_file:
            self.file.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pad(
    part: dict[str, np.ndarray] | None,
    template: dict[str, tuple[tuple[int, ...], np.dtype]],
    bs: int,
) -> dict[str, np.ndarray]:
    """A full batch of ``bs``: the events of ``part`` followed by zeros (valid 0, index -1)."""
    out = {}
    n = 0 if part is None else len(part["valid"])
    for key, (shape, dtype) in template.items():
        arr = np.zeros((bs, *shape), dtype)
        if part is not None:
            arr[:n] = part[key]
        out[key] = arr
    out["index"][n:] = -1
    return out
