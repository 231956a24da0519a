"""Loader: determinism, coverage, padding, sharding, prefetch thread errors and shutdown."""

import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.events import EventFile, open_events, write_events
from pipeline.features import FeatureConfig, FeatureStats, fit_stats
from pipeline.loader import Loader, LoaderConfig

N, R, C = 1000, 5, 5
TARGETS = ("log10_energy", "xmax")


def _arrays(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trig = rng.random((n, R, C)) < 0.3
    return {
        "station/signal": np.where(trig, 10 ** rng.normal(1, 0.6, (n, R, C)), 0).astype(np.float32),
        "station/time": np.where(trig, rng.normal(0, 300, (n, R, C)), 0).astype(np.float32),
        "station/trigger": trig,
        # the event index itself, so batches can be checked against their `index`
        "truth/log10_energy": np.arange(n, dtype=np.float32),
        "truth/xmax": rng.normal(750, 60, n).astype(np.float32),
        "truth/n_triggered": trig.sum(axis=(1, 2)).astype(np.int16),
    }


@pytest.fixture
def efile(tmp_path: Path) -> EventFile:
    path = write_events(tmp_path / "train.h5", _arrays(), {"kind": "airshower"})
    with open_events(path) as f:
        yield f


@pytest.fixture
def stats(efile: EventFile) -> FeatureStats:
    return fit_stats(FeatureConfig(), efile, TARGETS)


def _make(efile: EventFile, stats: FeatureStats, **kw) -> Loader:
    args = dict(batch_size=64, shuffle=True, seed=3, shuffle_block=64)
    args.update(kw)
    return Loader(efile, FeatureConfig(), stats, TARGETS, **args)


def _indices(loader: Loader, epoch: int) -> np.ndarray:
    return np.concatenate([b["index"] for b in loader.epoch(epoch)])


def test_batch_shapes_and_contents(efile: EventFile, stats: FeatureStats) -> None:
    loader = _make(efile, stats, observers=("n_triggered",))
    assert loader.input_spec == {"image": (R, C, 3)}
    assert len(loader) == -(-N // 64)
    truth = _arrays()
    n_seen = 0
    for batch in loader.epoch(0):
        assert batch["image"].shape == (64, R, C, 3) and batch["image"].dtype == np.float32
        assert batch["target"].shape == (64, 2) and batch["target"].dtype == np.float32
        assert batch["valid"].dtype == np.float32 and batch["index"].dtype == np.int64
        real = batch["index"] >= 0
        idx = batch["index"][real]
        np.testing.assert_array_equal(batch["target"][real, 0], idx)  # raw truth, right event
        np.testing.assert_array_equal(batch["target"][real, 1], truth["truth/xmax"][idx])
        np.testing.assert_array_equal(
            batch["observer/n_triggered"][real], truth["truth/n_triggered"][idx]
        )
        np.testing.assert_array_equal(batch["image"][real, ..., 2], truth["station/trigger"][idx])
        n_seen += real.sum()
    assert n_seen == N


def test_every_event_once_and_deterministic(efile: EventFile, stats: FeatureStats) -> None:
    a = _make(efile, stats)
    e0 = _indices(a, 0)
    real = e0[e0 >= 0]
    assert sorted(real.tolist()) == list(range(N))
    np.testing.assert_array_equal(_indices(_make(efile, stats), 0), e0)  # same seed, same order
    e1 = _indices(a, 1)
    assert sorted(e1[e1 >= 0].tolist()) == list(range(N))
    assert not np.array_equal(e0, e1)  # new order every epoch
    assert not np.array_equal(_indices(_make(efile, stats, seed=4), 0), e0)
    # shuffled within blocks too: the first 32 events come from one block (blocks >= 40 events)
    assert np.any(np.diff(real[:32]) < 0)
    # __iter__ walks the epochs
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in a]), e0)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in a]), e1)


@pytest.mark.parametrize("batch_size", [64, 48, 100, 300])
def test_no_shuffle_keeps_file_order(
    efile: EventFile, stats: FeatureStats, batch_size: int
) -> None:
    """Batches within a block, spanning two blocks, and larger than a block (blocks of 64)."""
    loader = _make(efile, stats, shuffle=False, batch_size=batch_size)
    assert loader.block_events == 64
    batches = list(loader.epoch(0))
    assert len(batches) == -(-N // batch_size)
    idx = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(idx[:N], np.arange(N))
    target = np.concatenate([b["target"][:, 0] for b in batches])  # log10_energy = index
    np.testing.assert_array_equal(target[:N], np.arange(N))


def test_last_batch_padded(efile: EventFile, stats: FeatureStats) -> None:
    batches = list(_make(efile, stats).epoch(0))
    last = batches[-1]
    n_real = N % 64
    assert last["valid"].sum() == n_real
    assert np.all(last["valid"][n_real:] == 0) and np.all(last["index"][n_real:] == -1)
    assert np.all(last["image"][n_real:] == 0) and np.all(last["target"][n_real:] == 0)
    assert all(b["valid"].all() for b in batches[:-1])


def test_drop_last(efile: EventFile, stats: FeatureStats) -> None:
    loader = _make(efile, stats, drop_last=True)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == N // 64
    assert all(b["valid"].all() for b in batches)
    assert len(np.unique(np.concatenate([b["index"] for b in batches]))) == N // 64 * 64


@pytest.mark.parametrize("drop_last", [False, True])
def test_processes_disjoint_and_covering(
    efile: EventFile, stats: FeatureStats, drop_last: bool
) -> None:
    shards = [
        _make(efile, stats, process_index=p, process_count=3, drop_last=drop_last) for p in range(3)
    ]
    assert len({len(s) for s in shards}) == 1  # same number of batches everywhere
    for e in (0, 1):
        seen = [_indices(s, e) for s in shards]
        assert len({len(s) for s in seen}) == 1
        real = [s[s >= 0] for s in seen]
        union = np.concatenate(real)
        assert len(np.unique(union)) == len(union)  # disjoint
        if not drop_last:
            assert sorted(union.tolist()) == list(range(N))  # covering


@pytest.mark.parametrize("build_threads", [1, 3])
def test_worker_exception_propagates(efile, stats, monkeypatch, build_threads) -> None:
    """A read failing in the producer thread, or in a build thread, reaches the consumer."""
    loader = _make(efile, stats, build_threads=build_threads, shuffle_block=256)
    original = Loader._build
    calls = []

    def failing(self, start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return original(self, start, stop)

    monkeypatch.setattr(Loader, "_build", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        for _ in loader.epoch(0):
            pass
    _wait_no_loader_threads()
    loader.close()


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reco-loader")]


def _wait_no_loader_threads() -> None:
    deadline = time.monotonic() + 5
    while _loader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _loader_threads() == []


def test_early_break_ends_thread(efile: EventFile, stats: FeatureStats) -> None:
    loader = _make(efile, stats, batch_size=8, prefetch=1)
    it = loader.epoch(0)
    next(it)
    time.sleep(0.05)  # let the producer fill the queue and block on put
    assert len(_loader_threads()) == 1
    it.close()
    assert _loader_threads() == []
    for _ in loader.epoch(1):  # implicit close on break
        break
    _wait_no_loader_threads()


def test_no_prefetch_same_batches(efile: EventFile, stats: FeatureStats) -> None:
    np.testing.assert_array_equal(
        _indices(_make(efile, stats, prefetch=0), 2), _indices(_make(efile, stats, prefetch=4), 2)
    )


def test_nan_in_source_names_variable(tmp_path: Path) -> None:
    a = _arrays()
    a["station/signal"][123, 1, 1] = np.nan
    a["station/trigger"][123, 1, 1] = True
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:  # bypass write_events' NaN guard
        for k, v in a.items():
            f.create_dataset(k, data=v, chunks=(50, *v.shape[1:]))
        f.attrs.update(schema_version=1, n_events=N, chunk_events=50)
    good = write_events(tmp_path / "good.h5", _arrays(), {})
    with open_events(good) as g:
        stats = fit_stats(FeatureConfig(), g, TARGETS)
    loader = Loader(path, FeatureConfig(), stats, TARGETS, batch_size=32, shuffle=True, seed=0)
    with pytest.raises(ValueError, match=r"'log_signal'.*event index 123"):
        list(loader.epoch(0))
    loader.close()
    _wait_no_loader_threads()


def test_from_config(efile: EventFile, stats: FeatureStats) -> None:
    cfg = LoaderConfig(batch_size=100, drop_last=True)
    loader = Loader.from_config(efile, cfg, FeatureConfig(), stats, TARGETS, shuffle=False, seed=0)
    assert len(loader) == N // 100
    assert loader.block_events % efile.chunk_events == 0


def test_missing_target_named(efile: EventFile, stats: FeatureStats) -> None:
    with pytest.raises(ValueError, match="truth/zenith"):
        Loader(efile, FeatureConfig(), stats, ("zenith",), batch_size=8, shuffle=False, seed=0)


def test_cache_gives_identical_batches_without_rereading(
    efile: EventFile, stats: FeatureStats, monkeypatch
) -> None:
    plain, cached = _make(efile, stats), _make(efile, stats, cache=True)
    for e in range(3):
        for a, b in zip(plain.epoch(e), cached.epoch(e), strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # after the first epoch every block is in memory: the file is not read again
    expected = np.sort(_indices(plain, 3))
    monkeypatch.setattr(efile, "read", lambda *a, **k: pytest.fail("cached loader read the file"))
    np.testing.assert_array_equal(np.sort(_indices(cached, 3)), expected)


def test_build_threads_give_identical_batches(
    efile: EventFile, stats: FeatureStats, monkeypatch
) -> None:
    """Blocks built in parts of whole chunks on several threads: the same batches, every epoch;
    the parts are read on the pool's threads; close() stops them."""
    parts = []
    build = Loader._build

    def spy(self, start, stop):
        parts.append((start, stop, threading.current_thread().name))
        return build(self, start, stop)

    monkeypatch.setattr(Loader, "_build", spy)
    one = _make(efile, stats, shuffle_block=512, build_threads=1)
    three = _make(efile, stats, shuffle_block=512, build_threads=3, cache=True)
    assert three.block_events > 2 * efile.chunk_events  # several parts per block
    for e in range(2):
        for a, b in zip(one.epoch(e), three.epoch(e), strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    threaded = [p for p in parts if p[2].startswith("reco-build")]
    assert len(threaded) > len(three._block_starts)
    # the parts of the threaded loader tile the file, each range read once (then cached)
    spans = sorted((s, t) for s, t, _ in threaded)
    assert spans[0][0] == 0 and spans[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    three.close()
    assert three._pool is None
    with pytest.raises(ValueError, match="build_threads"):
        _make(efile, stats, build_threads=-1)
    # 0 (the default): one thread per core this process may run on, at most 8
    assert _make(efile, stats).build_threads == min(8, len(os.sched_getaffinity(0)))
