"""Chunk reads outside h5py's lock: the same arrays as h5py, h5py's own path where the storage
is not one zlib stream per chunk, damaged chunks named, and reads from several threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.chunks import ChunkReader
from pipeline.events import EventFileError, open_events, write_events

N = 203  # not a multiple of any chunk length below: a partial last chunk
RANGES = [(0, N), (0, 1), (5, 6), (7, 40), (16, 32), (31, 33), (100, N), (N - 1, N), (9, 9)]


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    trigger = rng.random((N, 3, 4)) < 0.3
    return {  # signals 0 off the triggered stations: gzip-compressed; the noise traces raw
        "station/signal": np.where(trigger, rng.exponential(10, (N, 3, 4)), 0).astype(np.float32),
        "station/trace": rng.random((N, 3, 4, 6)).astype(np.float16),
        "station/trigger": trigger,
        "truth/xmax": rng.normal(750, 60, N),
        "truth/mass_number": rng.integers(1, 57, N).astype(np.int16),
        "truth/id": rng.integers(0, 2**62, N).astype(np.uint64),
        "meta/station_x": np.arange(12.0).reshape(3, 4),
    }


def test_event_file_slices_equal_h5py(tmp_path: Path) -> None:
    arrays = _arrays(np.random.default_rng(0))
    path = write_events(tmp_path / "a.h5", arrays, {"kind": "airshower"})
    with open_events(path) as f, h5py.File(path) as h:
        assert f.chunk_events < N
        for name in arrays:
            for a, b in RANGES:
                got = f.read(name, slice(a, b))
                want = h[name][()] if name.startswith("meta/") else h[name][a:b]
                assert got.dtype == want.dtype, name
                np.testing.assert_array_equal(got, want, err_msg=f"{name}[{a}:{b}]")
        # the event datasets were read from their chunks, not through h5py
        reader = ChunkReader(h)
        try:
            for name in arrays:
                if not name.startswith("meta/"):
                    assert reader.read(h[name], 3, 50) is not None, name
        finally:
            reader.close()


def test_other_storage_is_left_to_h5py(tmp_path: Path) -> None:
    """Every storage h5py can write reads the same; only whole-event chunks of raw or gzip
    bytes are read directly."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(N, 5, 3)).astype(np.float32)
    path = tmp_path / "b.h5"
    direct = {"raw": {"chunks": (16, 5, 3)}, "gzip": {"chunks": (16, 5, 3), "compression": "gzip"}}
    other = {
        "contiguous": {},
        "inner_chunks": {"chunks": (16, 5, 1), "compression": "gzip"},
        "shuffle": {"chunks": (16, 5, 3), "compression": "gzip", "shuffle": True},
        "lzf": {"chunks": (16, 5, 3), "compression": "lzf"},
        "fletcher32": {"chunks": (16, 5, 3), "fletcher32": True},
        "scaleoffset": {"chunks": (16, 5, 3), "scaleoffset": 3},
    }
    with h5py.File(path, "w") as h:
        for name, kw in {**direct, **other}.items():
            h.create_dataset(name, data=data, **kw)
        partly = h.create_dataset("unwritten", (N, 5, 3), np.float32, chunks=(16, 5, 3))
        partly[:40] = data[:40]  # later chunks never allocated: h5py knows their fill value
        h.create_dataset("compound", data=np.zeros(N, "i4,f8"), chunks=(16,))
    with h5py.File(path) as h:
        reader = ChunkReader(h)
        try:
            for name in (*direct, *other, "unwritten", "compound"):
                for a, b in RANGES:
                    got = reader.read(h[name], a, b)
                    if name in direct and b > a:
                        np.testing.assert_array_equal(got, h[name][a:b], err_msg=name)
                    else:
                        assert got is None or name == "unwritten", name
                    if name == "unwritten" and got is not None:  # only written chunks
                        assert b <= 48
                        np.testing.assert_array_equal(got, h[name][a:b])
        finally:
            reader.close()


def test_threads_read_parts_of_one_range(tmp_path: Path) -> None:
    arrays = _arrays(np.random.default_rng(2))
    path = write_events(tmp_path / "c.h5", arrays, {"kind": "airshower"})
    with open_events(path) as f:
        whole = f.read("station/trace", slice(0, N))
        ranges = [(0, 32), (32, 64), (64, 128), (128, 160), (160, N)]
        with ThreadPoolExecutor(4) as pool:
            parts = list(pool.map(lambda r: f.read("station/trace", slice(*r)), ranges))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_a_damaged_chunk_names_file_and_dataset(tmp_path: Path) -> None:
    arrays = _arrays(np.random.default_rng(3))
    path = write_events(tmp_path / "d.h5", arrays, {"kind": "airshower"})
    with h5py.File(path) as h:
        assert h["station/signal"].compression == "gzip"  # raw chunks carry no check
        info = h["station/signal"].id.get_chunk_info(1)  # the second chunk
        events = h["station/signal"].chunks[0]
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 2 : info.byte_offset + info.size] = bytes(info.size - 2)  # zeroed
    path.write_bytes(bytes(raw))
    with open_events(path) as f:
        np.testing.assert_array_equal(f.read("station/signal", slice(0, events)), arrays[
            "station/signal"][:events])  # fmt: skip
        with pytest.raises(EventFileError, match=r"d\.h5: dataset 'station/signal'.*chunk 1"):
            f.read("station/signal", slice(0, 2 * events))
