"""Atomic file writes: every file a stage writes appears whole or not at all.

A writer fills a temporary file next to the target (same folder, so the rename cannot cross
file systems) and renames it over the target only when it is complete. On any failure (a full
or read-only disk, an exception in the writer, a KeyboardInterrupt) the temporary is removed
and an earlier file at the target stays as it was; disk errors are raised as ``OSError``
naming the target. A process killed mid-write leaves only a hidden
``.<name>.<pid>.<thread>.tmp`` beside the target, which no reader opens.

Unlike ``tempfile.mkstemp`` (mode 0600), the temporary is created with the usual mode
(0666 less the umask), so the files stay readable by the group as any other output.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "temporary_owner", "write_atomic"]


def temporary_for(path: Path) -> Path:
    """The temporary name used for ``path`` by this process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def temporary_owner(tmp: Path) -> int | None:
    """The process id that wrote the temporary ``tmp`` (None: not a name :func:`temporary_for`
    gives), so a later process can remove the temporaries of writers that died."""
    parts = Path(tmp).name.split(".")
    if len(parts) < 5 or parts[0] or parts[-1] != "tmp":
        return None
    pid, thread = parts[-3], parts[-2]
    return int(pid) if pid.isdigit() and thread.isdigit() else None


@contextlib.contextmanager
def atomic_path(
    path: Path | str,
    what: str = "file",
    disk_errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    Args:
        path: the target; its folder is created.
        what: how the error names the file ("the event file", "the plot", ...).
        disk_errors: the exceptions that mean the write failed on the disk (h5py raises
            ``RuntimeError`` when its flush on close fails); they are raised again as
            ``OSError`` naming ``path``. Other exceptions pass through unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except disk_errors as err:
        tmp.unlink(missing_ok=True)
        errno = getattr(err, "errno", None)
        message = f"{path}: could not write {what} ({getattr(err, 'strerror', None) or err}); "
        message += "nothing replaced"
        raise (OSError(errno, message) if errno else OSError(message)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: bytes | str, what: str = "file") -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, what) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path
