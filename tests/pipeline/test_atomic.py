"""pipeline.atomic: whole files or none, the earlier file kept, the error naming the target."""

from __future__ import annotations

import errno
import os
import re

import pytest

from pipeline.atomic import atomic_path, temporary_for, temporary_owner, write_atomic


def test_writes_text_and_bytes_and_replaces_an_earlier_file(tmp_path):
    path = tmp_path / "sub" / "out.txt"  # the folder is created
    assert write_atomic(path, "first") == path
    write_atomic(path, b"second\x00")
    assert path.read_bytes() == b"second\x00"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_the_file_gets_the_usual_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_a_failing_writer_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.md"
    write_atomic(path, "kept")
    with pytest.raises(ZeroDivisionError), atomic_path(path) as tmp:
        tmp.write_text("half")
        1 / 0  # noqa: B018  (the writer fails after writing part of the file)
    assert path.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_a_disk_error_is_an_oserror_naming_the_target(tmp_path):
    path = tmp_path / "events.h5"
    with pytest.raises(OSError, match=re.escape(f"{path}: could not write the event file (")):
        with atomic_path(path, "the event file", (OSError, RuntimeError)) as tmp:
            tmp.write_text("x")
            raise RuntimeError("Can't decrement id ref count (unable to flush file)")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_full_disk_keeps_the_errno_and_the_earlier_file(full_disk):
    path = full_disk / "metrics.json"
    write_atomic(path, "{}")
    with pytest.raises(OSError, match=r"metrics.json: could not write the metrics \(No space") as e:
        write_atomic(path, "x" * 400_000, "the metrics")
    assert e.value.errno == errno.ENOSPC
    assert path.read_text() == "{}"
    assert [p.name for p in full_disk.iterdir()] == ["metrics.json"]


def test_the_temporary_names_its_writer(tmp_path):
    tmp = temporary_for(tmp_path / "train.h5")
    assert tmp.name.startswith(".train.h5.") and tmp.suffix == ".tmp"
    assert temporary_owner(tmp) == os.getpid()
    for other in ("train.h5", ".train.h5.tmp", ".train.h5.12.tmp", ".train.h5.x.12.tmp"):
        assert temporary_owner(tmp_path / other) is None
