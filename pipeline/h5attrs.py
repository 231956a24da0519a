"""HDF5 attributes of reco's files: strings written fixed-length, read back as plain Python.

h5py writes a ``str`` attribute as a variable-length string, whose bytes live in the file's global
heap behind a reference. Fuzzing event files (random truncations and bit flips) showed HDF5 2.0
looping forever, or crashing the process, when it followed a damaged reference while reading such
an attribute, before Python could see an error. A fixed-length string is stored in the attribute
message itself, where a damaged byte is only a wrong character (or a checked header). So every
string attribute reco writes is fixed-length UTF-8; lists of strings become fixed-length string
arrays. Readers get ``str`` and ``list[str]`` back through :func:`plain`, whichever way a file
stored them (files written before this change keep their variable-length strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np


def fixed(value: Any) -> Any:
    """An attribute value with its strings (alone or in a list/tuple) made fixed-length UTF-8.

    Anything else is returned unchanged (h5py stores numbers, bools and numeric arrays as they
    are). HDF5 has no zero-length string type, so the length is at least one byte; empty strings
    read back empty.
    """
    if isinstance(value, str):
        raw = value.encode()
        return np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, len(raw))))
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        raws = [v.encode() for v in value]
        return np.array(raws, dtype=h5py.string_dtype("utf-8", max(1, *map(len, raws))))
    return value


def write(obj: h5py.File | h5py.Group, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on a file or group, strings fixed-length; ``None`` values are left out."""
    for key, value in attrs.items():
        if value is not None:
            obj.attrs[key] = fixed(value)


def plain(value: Any) -> Any:
    """HDF5 attribute value -> plain Python (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
