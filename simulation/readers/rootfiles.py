"""Opening ROOT files of external formats with uproot, with errors that name the file.

Shared by the JetClass (:mod:`simulation.readers.jetclass`) and Delphes
(:mod:`simulation.readers.delphes`) readers: every failure of uproot (not a ROOT file, truncated,
corrupt, the wrong object under the tree's name, missing branches) becomes the reader's own
error class with the file, the tree and what is missing in its message.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uproot

# What a damaged file makes uproot raise: I/O and deserialisation errors, and from its streamer
# and interpretation code whatever corrupt metadata leads to (unknown type codes as
# NotImplementedError, missing members as AttributeError, short buffers as IndexError or
# struct.error, ...; seen in the fuzz tests, and it depends on what uproot read before in the same
# process). The try blocks hold uproot calls only, so every failure there is the file's.
UPROOT_ERRORS = (Exception,)


def as_paths(paths: Path | str | Sequence[Path | str], what: str) -> list[Path]:
    """One path or a non-empty sequence of them, as a list of Paths (``what``: "JetClass files")."""
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError(f"paths: no {what} given")
    return out


@contextmanager
def open_tree(
    path: Path,
    tree_name: str,
    required: Collection[str],
    error: type[ValueError],
    fmt: str,
) -> Iterator[uproot.TTree]:
    """The TTree ``tree_name`` of ``path`` with every branch of ``required`` checked present.

    Args:
        path: the ROOT file.
        tree_name: the TTree's key.
        required: branch names (nested branches by their short names, e.g. ``EFlowTrack.PT``).
        error: the exception class raised (a ValueError subclass of the reader).
        fmt: the format's name in messages ("JetClass", "Delphes").
    """
    if not path.is_file():
        raise error(f"{path}: file does not exist")
    try:
        # A Path (not a str) so that uproot does not read "file.root:object" syntax into it.
        f = uproot.open(path)
    except UPROOT_ERRORS as err:
        raise error(
            f"{path}: cannot be read as a ROOT file (not ROOT, truncated or corrupt): {err}"
        ) from err
    with f:
        try:
            classes = {k.split(";")[0]: v for k, v in f.classnames(recursive=False).items()}
        except UPROOT_ERRORS as err:
            raise error(f"{path}: corrupt ROOT file: {err}") from err
        if tree_name not in classes:
            found = ", ".join(f"{k} ({v})" for k, v in classes.items()) or "nothing"
            raise error(f"{path}: no TTree {tree_name!r}; not a {fmt} file (it holds {found})")
        if classes[tree_name] != "TTree":
            raise error(f"{path}: {tree_name!r} is a {classes[tree_name]}, but {fmt} needs a TTree")
        try:
            tree = f[tree_name]
            names = set(tree.keys(recursive=True, full_paths=False))
        except UPROOT_ERRORS as err:
            raise error(f"{path}: cannot read TTree {tree_name!r}: {err}") from err
        missing = [b for b in required if b not in names]
        if missing:
            raise error(f"{path}: TTree {tree_name!r} lacks the {fmt} branches {missing}")
        yield tree


def iterate_tree(
    path: Path,
    tree_name: str,
    branches: Collection[str],
    error: type[ValueError],
    fmt: str,
    entry_stop: int | None,
    step_size: int,
) -> Iterator[tuple[int, dict]]:
    """(first entry, branch -> awkward array) per uproot step of the ``branches`` of one file,
    opened with :func:`open_tree` (same arguments); read errors become ``error``."""
    with open_tree(path, tree_name, branches, error, fmt) as tree:
        blocks = tree.iterate(
            filter_name=list(branches),
            step_size=step_size,
            entry_stop=entry_stop,
            library="ak",
            how=dict,
            report=True,
        )
        while True:
            try:
                block, report = next(blocks)
            except StopIteration:
                return
            except UPROOT_ERRORS as err:
                raise error(f"{path}: cannot read TTree {tree_name!r}: {err}") from err
            yield int(report.tree_entry_start), block
