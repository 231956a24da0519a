"""Event ranges read as whole HDF5 chunks, outside h5py's lock, so threads read in parallel.

h5py holds one global lock for every call into HDF5, so threads that read parts of a block take
turns, and the inflation of gzip chunks (most of a read's time) runs on one core. The event
files this project writes (:func:`pipeline.events.write_events`) are chunked along the event axis
only, gzip-compressed or not, without byte shuffle or checksums: a chunk is then one contiguous
zlib stream in the file. :class:`ChunkReader` asks HDF5 only where each chunk lies (a cheap
metadata call), reads the bytes with ``os.pread`` and inflates them with libdeflate (the
``deflate`` package: 1.8x the speed of :mod:`zlib` on these chunks); both release the GIL, so
reads on several threads (``loader.build_threads``) use several cores.

Datasets stored any other way (other filters, chunks across the inner axes, unallocated chunks,
non-numeric types), files that h5py did not open with its default ``sec2`` driver, and systems
without ``os.pread`` (Windows) are left to h5py: :meth:`ChunkReader.read` returns None for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import deflate
import h5py
import numpy as np

_DEFLATE = h5py.h5z.FILTER_DEFLATE


@dataclass(frozen=True)
class _Layout:
    """How one dataset's chunks are stored: ``events`` per chunk, gzip or raw."""

    events: int
    chunk_shape: tuple[int, ...]
    chunk_bytes: int
    deflate: bool


class ChunkReader:
    """Reads contiguous event ranges of the chunked datasets of one open HDF5 file.

    Args:
        handle: the open file; its OS file descriptor is duplicated (closed by :meth:`close`).
    """

    def __init__(self, handle: h5py.File) -> None:
        self._layouts: dict[str, _Layout | None] = {}
        self._fd: int | None = None
        if handle.driver == "sec2" and handle.userblock_size == 0 and hasattr(os, "pread"):
            self._fd = os.dup(handle.id.get_vfd_handle())
            self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _layout(self, ds: h5py.Dataset) -> _Layout | None:
        """The dataset's chunk layout, or None where h5py must read it."""
        if ds.name not in self._layouts:
            self._layouts[ds.name] = _layout(ds)
        return self._layouts[ds.name]

    def read(self, ds: h5py.Dataset, start: int, stop: int) -> np.ndarray | None:
        """``ds[start:stop]`` (0 <= start <= stop <= len), or None where h5py must read it.

        Raises:
            OSError: a chunk that cannot be read or inflated (a damaged file), naming its events.
        """
        layout = None if self._fd is None else self._layout(ds)
        if layout is None or stop <= start:
            return None
        first, last = start // layout.events, (stop - 1) // layout.events
        places = []
        for c in range(first, last + 1):
            info = ds.id.get_chunk_info_by_coord((c * layout.events,) + (0,) * (ds.ndim - 1))
            if info.byte_offset is None:  # never written: h5py knows the fill value
                return None
            places.append((info.byte_offset, info.size, info.filter_mask))
        out = np.empty((stop - start, *ds.shape[1:]), ds.dtype)
        for c, (offset, size, mask) in zip(range(first, last + 1), places, strict=True):
            chunk = self._chunk(layout, c, offset, size, mask, ds.dtype)
            lo, hi = c * layout.events, (c + 1) * layout.events
            out[max(lo, start) - start : min(hi, stop) - start] = chunk[
                max(start - lo, 0) : min(stop, hi) - lo
            ]
        return out

    def _chunk(
        self, layout: _Layout, c: int, offset: int, size: int, mask: int, dtype: np.dtype
    ) -> np.ndarray:
        where = f"chunk {c} (events {c * layout.events}:{(c + 1) * layout.events})"
        if offset < 0 or size < 0 or offset + size > self._size:
            raise OSError(f"{where} lies past the end of the file ({offset} + {size} bytes)")
        data = os.pread(self._fd, size, offset)  # type: ignore[arg-type]
        if layout.deflate and not mask & 1:  # bit 0 set: the filter was skipped for this chunk
            try:  # a stream longer than the chunk fails too
                data = deflate.zlib_decompress(data, layout.chunk_bytes)
            except deflate.DeflateError as err:
                raise OSError(f"{where} cannot be inflated: {err}") from err
        if len(data) != layout.chunk_bytes:
            raise OSError(f"{where} holds {len(data)} bytes, expected {layout.chunk_bytes}")
        return np.frombuffer(data, dtype).reshape(layout.chunk_shape)


def _layout(ds: h5py.Dataset) -> _Layout | None:
    """A dataset chunked along its first axis only, with no filter or only deflate."""
    if ds.chunks is None or ds.ndim == 0 or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    if ds.dtype.kind not in "biuf" or ds.id.get_type().get_size() != ds.dtype.itemsize:
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters not in ([], [_DEFLATE]):
        return None
    chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
    return _Layout(int(ds.chunks[0]), tuple(ds.chunks), chunk_bytes, bool(filters))
