"""Jagged per-event lists in event files: validation and writing of ``jagged/<group>/``.

The layout (``offsets`` and one flat dataset per field, the awkward ``form`` attribute) is described
in :mod:`pipeline.events`, which reads the groups back and re-exports :class:`JaggedGroup`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from pipeline import h5attrs

JAGGED_PREFIX = "jagged/"
# The compression of the event datasets that compress (compression_for). gzip level 1 without byte
# shuffle, measured on 50k sparse 11x11 air-shower images (signal, time, trigger; ~15% of stations
# triggered): 12 MB vs 55 MB raw, read 240k events/s in 512-event chunks, write 0.4 s. gzip 4 (15
# MB, 180k/s), lzf (22 MB, 150k/s) and byte shuffle (17 MB, 165k/s) were all worse on both counts;
# lzf is also unreadable outside h5py.
GZIP: dict[str, Any] = {"compression": "gzip", "compression_opts": 1}
# gzip only where it stores a dataset in at most 1/1.5 of its size. Noise-like values barely
# compress (the triggered stations' float16 traces 1.24x, jet kinematics 1.06-1.09x) and inflating
# them cost the most of a first epoch's reading (the CNN's loader 49k -> 79k events/s on one
# thread with the traces raw, for 21% more file; docs/benchmarks.md).
MIN_GZIP_RATIO = 1.5


def compression_for(arr: np.ndarray, chunk_rows: int) -> dict[str, Any]:
    """:data:`GZIP` if gzip stores ``arr`` in at most 1/:data:`MIN_GZIP_RATIO` of its size, else
    no filter (raw chunks). Judged on its first chunk (``chunk_rows`` rows along axis 0)."""
    sample = np.ascontiguousarray(arr[:chunk_rows]).tobytes()
    if not sample:
        return GZIP
    return GZIP if MIN_GZIP_RATIO * len(zlib.compress(sample, 1)) <= len(sample) else {}


_AWKWARD_PRIMITIVES = {
    "f4": "float32", "f8": "float64", "f2": "float16", "i1": "int8", "i2": "int16",
    "i4": "int32", "i8": "int64", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
    "b1": "bool",
}  # fmt: skip


@dataclass(frozen=True)
class JaggedGroup:
    """Per-event lists of records: event i owns content rows offsets[i]:offsets[i + 1].

    Attributes:
        offsets: (n + 1,) int64, starting at 0, non-decreasing, ending at the content length.
        content: field name (e.g. ``"part_px"``) -> flat (offsets[-1],) numeric array.
    """

    offsets: np.ndarray
    content: Mapping[str, np.ndarray]

    @property
    def n_events(self) -> int:
        return int(len(self.offsets)) - 1


def check_jagged(group: str, jag: JaggedGroup) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validate one jagged group; return (offsets int64, content arrays)."""
    if "/" in group or not group:
        raise ValueError(f"jagged group name {group!r} must be a plain non-empty name")
    offsets = np.asarray(jag.offsets)
    if offsets.ndim != 1 or offsets.size < 1 or offsets.dtype.kind not in "iu":
        raise ValueError(f"jagged {group!r}: offsets must be a 1-d integer array of length n + 1")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0:
        raise ValueError(f"jagged {group!r}: offsets must start at 0, got {offsets[0]}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError(f"jagged {group!r}: offsets must be non-decreasing")
    if not jag.content:
        raise ValueError(f"jagged {group!r}: needs at least one content field")
    content = {}
    for field, arr in jag.content.items():
        arr = np.asarray(arr)
        if "/" in field or field == "offsets":
            raise ValueError(f"jagged {group!r}: invalid field name {field!r}")
        if arr.ndim != 1 or arr.shape[0] != offsets[-1]:
            raise ValueError(
                f"jagged {group!r}: field {field!r} has shape {arr.shape}, but offsets end at "
                f"{offsets[-1]}"
            )
        if arr.dtype.str[1:] not in _AWKWARD_PRIMITIVES:
            raise ValueError(f"jagged {group!r}: field {field!r} has unsupported dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"jagged {group!r}: field {field!r} contains {n_bad} non-finite values (NaN/inf)"
            )
        content[field] = arr
    return offsets, content


def jagged_form(content: Mapping[str, np.ndarray]) -> str:
    """Awkward form JSON of a ListOffsetArray(RecordArray) whose buffers are named by field.

    Form keys are the dataset names inside ``jagged/<group>/`` (``offsets`` and the field names),
    so ``awkward.from_buffers(form, n, buffers, buffer_key="{form_key}")`` reads them directly.
    """
    contents = [
        {
            "class": "NumpyArray",
            "primitive": _AWKWARD_PRIMITIVES[np.asarray(a).dtype.str[1:]],
            "inner_shape": [],
            "parameters": {},
            "form_key": name,
        }
        for name, a in content.items()
    ]
    record = {
        "class": "RecordArray",
        "fields": list(content),
        "contents": contents,
        "parameters": {},
        "form_key": None,
    }
    form = {
        "class": "ListOffsetArray",
        "offsets": "i64",
        "content": record,
        "parameters": {},
        "form_key": "offsets",
    }
    return json.dumps(form)


def write_jagged(
    f: h5py.File, group: str, offsets: np.ndarray, content: dict[str, np.ndarray]
) -> None:
    g = f.create_group(JAGGED_PREFIX + group)
    g.create_dataset("offsets", data=offsets)
    for field, arr in content.items():
        if arr.size == 0:
            g.create_dataset(field, data=arr)
        else:
            # Content chunks of ~64k entries: a few hundred jets of ~100 particles.
            chunk = min(arr.size, 1 << 16)
            g.create_dataset(field, data=arr, chunks=(chunk,), **compression_for(arr, chunk))
    h5attrs.write(g, {"form": jagged_form(content), "fields": json.dumps(list(content))})
