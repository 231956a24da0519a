"""JetClass ROOT files (Qu, Li, Qian 2022; Zenodo 6619768) to and from our jets event files.

The schema (PART.md 3.3): TTree ``tree``, one entry per jet, with 16 jagged particle branches
``part_*``, 10 jet branches ``jet_*`` and 10 one-hot label branches ``label_*``. The branch types
are those that ``tree.show()`` prints for JetClass_example_100k.root (particle_transformer,
notebooks/JetClass101.ipynb): ``part_*`` std::vector<float>, except the five ``part_is*`` flags,
std::vector<int32_t>; ``jet_*`` float (``jet_nparticles`` too); ``label_QCD`` float,
``label_Hbb`` ... ``label_Hqql`` bool, ``label_Zqq`` ... ``label_Tbl`` int32_t. The writer uses
these types, so tools written for JetClass see what they expect. Real files also carry
``aux_genpart_{eta,phi,pid,pt}`` and ``aux_truth_match`` (truth for studies, never for training):
they are not written and are ignored when read.

uproot writes a variable-length branch as a C-style array with an int32 counter branch
(``part_px[npart]/F``), not as std::vector. The writer passes the 16 ``part_*`` branches as the
fields of one awkward record under the key ``part``, so they share one counter, named ``npart``
(``counter_name``: "n" + key); ``field_name`` keeps the field names as they are (uproot's default
would make ``part_part_px``). A written file therefore holds the 36 JetClass branches plus
``npart``. uproot reads std::vector and counted branches into the same jagged arrays, so the
reader takes both (tested on counted branches, shared and one counter per branch; uproot cannot
write std::vector, so no std::vector file is tested here).

In memory (:class:`JetClassSample`) and in converted event files the layout is the toy
simulator's (:func:`simulation.jets.simulate`): ``jet/jet_*`` (n,) float32, ``truth/label`` (n,)
int16 (index into ``classes``), ``truth/label_<class>`` (n,) int8 one-hot, and the particles as the
jagged group ``part`` (offsets (n + 1,) int64, the 16 ``part_*`` fields flat float32). Jets without
constituents are kept (two equal offsets). Every problem found raises an error naming the file,
the branch and the first bad entry: nothing half-valid reaches training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from pipeline.atomic import atomic_path
from pipeline.config import config_hash
from pipeline.events import JaggedGroup, check_split, open_events, write_events
from simulation.jets.config import JETCLASS_LABELS
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS, PARTICLE_GROUP, JetSample
from simulation.readers.rootfiles import as_paths, iterate_tree

TREE_NAME = "tree"
JETCLASS_CLASSES: tuple[str, ...] = JETCLASS_LABELS  # label names, in JetClass index order
PARTICLE_BRANCHES: tuple[str, ...] = PARTICLE_FIELDS
JET_BRANCHES: tuple[str, ...] = JET_FIELDS
LABEL_BRANCHES: tuple[str, ...] = tuple(f"label_{c}" for c in JETCLASS_CLASSES)
COUNTER_BRANCH = "n" + PARTICLE_GROUP  # "npart": the one counter of the written part_* branches

# Types of JetClass_example_100k.root (see the module docstring); the labels' mixed types are
# JetClass's own.
PARTICLE_DTYPES: dict[str, np.dtype] = {
    b: np.dtype(np.int32 if b.startswith("part_is") else np.float32) for b in PARTICLE_BRANCHES
}
LABEL_DTYPES: dict[str, np.dtype] = {
    b: np.dtype(np.float32 if i == 0 else bool if i <= 5 else np.int32)
    for i, b in enumerate(LABEL_BRANCHES)
}
_REQUIRED = (*PARTICLE_BRANCHES, *JET_BRANCHES, *LABEL_BRANCHES)
# What uproot raises on damaged files (header, TTree metadata, baskets).
_ONEHOT = "truth/label_"


class JetClassFileError(ValueError):
    """A JetClass ROOT file is missing, unreadable or does not follow the JetClass schema."""


@dataclass(frozen=True)
class JetClassSample(JetSample):
    """Jets read from JetClass files: a :class:`JetSample` (the toy's layout) with its classes
    and the files it came from.

    Attributes:
        arrays: ``jet/jet_*`` (n,) float32 (GeV, rad), ``truth/label`` (n,) int16 (index into
            ``classes``), ``truth/label_<class>`` (n,) int8 one-hot for each of ``classes``.
        particles: offsets (n + 1,) int64 and the 16 ``part_*`` fields, flat float32.
        classes: label names in index order.
        sources: the files read, in order.
    """

    classes: tuple[str, ...]
    sources: tuple[Path, ...]


# ------------------------------------------------------------------------------------------
# checks shared by the writer and the reader


def _first_problem(
    jets: dict[str, np.ndarray], offsets: np.ndarray, content: dict[str, np.ndarray]
) -> tuple[int, str] | None:
    """(jet index in the chunk, text) of the first non-finite value or particle-count mismatch."""
    for name, x in jets.items():
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            i = int(np.argmin(np.isfinite(x)))
            return i, f"branch {name!r} is {x[i]} (non-finite)"
    for name, x in content.items():
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            k = int(np.argmin(np.isfinite(x)))
            i = int(np.searchsorted(offsets, k, side="right")) - 1
            return i, f"branch {name!r} is {x[k]} at particle {k - offsets[i]} (non-finite)"
    counts = np.diff(offsets)
    mismatch = np.flatnonzero(jets["jet_nparticles"] != counts)
    if mismatch.size:
        i = int(mismatch[0])
        return i, (
            f"jet_nparticles is {jets['jet_nparticles'][i]}, but the particle branches hold "
            f"{counts[i]} particles ({mismatch.size} such jets in this block)"
        )
    return None


def _check_labels(onehot: np.ndarray, names: Sequence[str]) -> tuple[int, str] | None:
    """(jet index, text) of the first jet with no label or several labels set in (n, K) bool."""
    n_set = onehot.sum(axis=1)
    bad = np.flatnonzero(n_set != 1)
    if not bad.size:
        return None
    i = int(bad[0])
    set_names = [n for n, on in zip(names, onehot[i], strict=True) if on] or "none"
    return i, (
        f"{n_set[i]} labels set ({set_names}); every jet needs exactly one "
        f"({bad.size} such jets in this block)"
    )


def check_classes(classes: Sequence[str], where: str) -> None:
    """``classes`` must be distinct JetClass label names (errors start with ``where``)."""
    unknown = [c for c in classes if c not in JETCLASS_CLASSES]
    if unknown:
        raise ValueError(
            f"{where}: class {unknown[0]!r} is not a JetClass label; JetClass labels are "
            f"{', '.join(JETCLASS_CLASSES)}"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"{where}: duplicate classes in {list(classes)}")


# ------------------------------------------------------------------------------------------
# writing

_Read = Callable[[slice], tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]]


@contextmanager
def _open_source(
    source: JetSample | Path | str,
) -> Iterator[tuple[str, int, tuple[str, ...], _Read]]:
    """(name for messages, n_jets, class names of the one-hots, read(slice) -> block)."""
    jet_keys = [f"jet/{b}" for b in JET_BRANCHES]
    if isinstance(source, str | os.PathLike):
        with open_events(Path(source), kind="jets", require=jet_keys) as ev:
            where = str(source)
            classes = tuple(n.removeprefix(_ONEHOT) for n in ev.names if n.startswith(_ONEHOT))
            if PARTICLE_GROUP not in ev.jagged_groups():
                raise ValueError(f"{where}: no jagged group {PARTICLE_GROUP!r}")
            missing = sorted(set(PARTICLE_BRANCHES) - set(ev.jagged_fields(PARTICLE_GROUP)))
            if missing:
                raise ValueError(f"{where}: jagged group {PARTICLE_GROUP!r} lacks {missing}")
            keys = jet_keys + [_ONEHOT + c for c in classes]

            def read_h5(sl: slice) -> tuple[dict, np.ndarray, dict]:
                offsets, content = ev.read_jagged(PARTICLE_GROUP, PARTICLE_BRANCHES, sl)
                return {k: ev.read(k, sl) for k in keys}, offsets, content

            yield where, ev.n_events, classes, read_h5
        return
    arrays, part = source.arrays, source.particles
    classes = tuple(k.removeprefix(_ONEHOT) for k in arrays if k.startswith(_ONEHOT))
    missing = [k for k in jet_keys if k not in arrays]
    missing += [b for b in PARTICLE_BRANCHES if b not in part.content]
    if missing:
        raise ValueError(f"sample: missing {missing}")
    keys = jet_keys + [_ONEHOT + c for c in classes]
    offsets = np.asarray(part.offsets, dtype=np.int64)

    def read_memory(sl: slice) -> tuple[dict, np.ndarray, dict]:
        off = offsets[sl.start : sl.stop + 1]
        lo, hi = int(off[0]), int(off[-1])
        content = {b: np.asarray(part.content[b])[lo:hi] for b in PARTICLE_BRANCHES}
        return {k: np.asarray(arrays[k])[sl] for k in keys}, off - lo, content

    yield "sample", part.n_events, classes, read_memory


def _root_block(
    where: str,
    start: int,
    classes: tuple[str, ...],
    arrays: dict[str, np.ndarray],
    offsets: np.ndarray,
    content: dict[str, np.ndarray],
) -> dict[str, np.ndarray | ak.Array]:
    """One block of jets as the ``tree.extend`` argument, in JetClass types."""
    jets = {b: arrays[f"jet/{b}"] for b in JET_BRANCHES}
    onehot = np.stack([arrays[_ONEHOT + c] != 0 for c in classes], axis=1)
    problem = _first_problem(jets, offsets, content) or _check_labels(onehot, classes)
    if problem is not None:
        raise ValueError(f"{where}: jet {start + problem[0]}: {problem[1]}")
    n = len(offsets) - 1
    out: dict[str, np.ndarray | ak.Array] = {
        b: np.asarray(jets[b], dtype=np.float32) for b in JET_BRANCHES
    }
    out |= {b: np.zeros(n, LABEL_DTYPES[b]) for b in LABEL_BRANCHES}
    for k, c in enumerate(classes):
        out[f"label_{c}"] = onehot[:, k].astype(LABEL_DTYPES[f"label_{c}"])
    fields = []
    for b in PARTICLE_BRANCHES:
        x = content[b]
        y = x.astype(PARTICLE_DTYPES[b])
        if y.dtype.kind == "i" and not np.array_equal(y, x):
            raise ValueError(f"{where}: branch {b!r} has non-integer values; JetClass stores int32")
        fields.append(ak.contents.NumpyArray(y))
    record = ak.contents.RecordArray(fields, list(PARTICLE_BRANCHES))
    out[PARTICLE_GROUP] = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))
    return out


def _branch_types() -> dict[str, object]:
    parts = ", ".join(f"{b}: {PARTICLE_DTYPES[b].name}" for b in PARTICLE_BRANCHES)
    types: dict[str, object] = {PARTICLE_GROUP: f"var * {{{parts}}}"}
    types |= {b: np.dtype(np.float32) for b in JET_BRANCHES}
    types |= dict(LABEL_DTYPES)
    return types


def write_jetclass_root(
    path: Path | str,
    sample_or_h5: JetSample | Path | str,
    *,
    chunk_size: int = 20_000,
) -> Path:
    """Write jets as a JetClass ROOT file (TTree ``tree``), atomically; return its path.

    Args:
        path: the ``.root`` file to write; parent directories are created.
        sample_or_h5: a toy :class:`JetSample`, a :class:`JetClassSample`, or a jets event file
            (``kind = "jets"``, e.g. from :func:`simulation.jets.write_dataset`). The labels come
            from its ``truth/label_<class>`` one-hots; JetClass labels it lacks are written as 0.
        chunk_size: jets per ``tree.extend`` call (one ROOT basket per branch; bounds memory).

    Raises:
        ValueError: a class that is not a JetClass label (named); a jet without exactly one
            label, a NaN/inf value or ``jet_nparticles`` disagreeing with the particle count
            (branch and jet named); a missing dataset. No file is left behind on any error.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    path = Path(path)
    with _open_source(sample_or_h5) as (where, n_jets, classes, read):
        if not classes:
            raise ValueError(f"{where}: no {_ONEHOT}<class> one-hot datasets to take labels from")
        check_classes(classes, where)
        with atomic_path(path, "the ROOT file") as tmp, uproot.recreate(tmp) as f:
            tree = f.mktree(
                TREE_NAME,
                _branch_types(),
                counter_name=lambda counted: "n" + counted,
                field_name=lambda outer, inner: inner,
            )
            for start in range(0, n_jets, chunk_size):
                arrays, offsets, content = read(slice(start, min(start + chunk_size, n_jets)))
                tree.extend(_root_block(where, start, classes, arrays, offsets, content))
    return path


# ------------------------------------------------------------------------------------------
# reading


def _read_blocks(
    path: Path, entry_stop: int | None, step_size: int
) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Validated blocks of one file: (first entry, jets, JetClass label index, offsets, parts)."""
    blocks = iterate_tree(
        path, TREE_NAME, _REQUIRED, JetClassFileError, "JetClass", entry_stop, step_size
    )
    for start, block in blocks:
        counts = ak.to_numpy(ak.num(block["part_px"], axis=1)).astype(np.int64)
        content = {}
        for b in PARTICLE_BRANCHES:
            if b != "part_px":
                other = ak.to_numpy(ak.num(block[b], axis=1))
                bad = np.flatnonzero(other != counts)
                if bad.size:
                    i = int(bad[0])
                    raise JetClassFileError(
                        f"{path}: entry {start + i}: branch {b!r} has {other[i]} particles, "
                        f"but 'part_px' has {counts[i]}"
                    )
            content[b] = ak.to_numpy(ak.flatten(block[b], axis=1))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        jets = {b: ak.to_numpy(block[b]) for b in JET_BRANCHES}
        labels = {b: ak.to_numpy(block[b]) for b in LABEL_BRANCHES}
        problem = _first_problem(jets | labels, offsets, content)
        onehot = np.stack([labels[b] != 0 for b in LABEL_BRANCHES], axis=1)
        problem = problem or _check_labels(onehot, LABEL_BRANCHES)
        if problem is not None:
            raise JetClassFileError(f"{path}: entry {start + problem[0]}: {problem[1]}")
        yield start, jets, np.argmax(onehot, axis=1), offsets, content


def read_jetclass_root(
    paths: Path | str | Sequence[Path | str],
    *,
    classes: Sequence[str] | None = None,
    drop_unlisted: bool = False,
    entry_stop: int | None = None,
    step_size: int = 50_000,
) -> JetClassSample:
    """Read JetClass ROOT files into memory, validated, in the toy simulator's layout.

    Args:
        paths: one file or several; their jets are concatenated in order.
        classes: label names (JetClass names) in the index order of ``truth/label``, e.g. the
            toy's ``[QCD, Hbb, Hcc, Wqq, Zqq, Tbqq]``; None -> the JetClass labels set on some
            jet of the files, in JetClass order.
        drop_unlisted: with ``classes``, drop jets of other classes instead of raising.
        entry_stop: read at most this many jets of each file (JetClass has one class per file,
            so this keeps a multi-file read balanced); None -> all.
        step_size: jets read per uproot step (bounds the temporary awkward arrays).

    Returns:
        :class:`JetClassSample`; ``part_is*`` flags and ``jet_nparticles`` become float32, as in
        the toy's files. Jets without constituents are kept.

    Raises:
        JetClassFileError: naming the file: missing, not ROOT, no TTree ``tree``, missing
            branches (all listed), and naming the entry and branch: a jet with no label or
            several, NaN/inf, ``jet_nparticles`` or a ``part_*`` length disagreeing with
            ``part_px``, a label not in ``classes`` (unless ``drop_unlisted``).
        ValueError: ``classes`` with a name that is not a JetClass label.
    """
    files = as_paths(paths, "JetClass files")
    if classes is not None:
        classes = tuple(classes)
        check_classes(classes, "classes")
    if step_size < 1:
        raise ValueError(f"step_size: must be >= 1, got {step_size}")
    listed = None if classes is None else [JETCLASS_CLASSES.index(c) for c in classes]
    jets: dict[str, list[np.ndarray]] = {b: [] for b in JET_BRANCHES}
    parts: dict[str, list[np.ndarray]] = {b: [] for b in PARTICLE_BRANCHES}
    label_idx: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for path in files:
        for start, jet, lab, offsets, content in _read_blocks(path, entry_stop, step_size):
            if listed is not None and not np.isin(lab, listed).all():
                i = int(np.argmin(np.isin(lab, listed)))
                if not drop_unlisted:
                    raise JetClassFileError(
                        f"{path}: entry {start + i}: label {LABEL_BRANCHES[lab[i]]!r} is not "
                        f"among classes {list(classes or ())}; pass drop_unlisted=True to drop "
                        f"such jets"
                    )
                keep = np.isin(lab, listed)
                in_kept = np.repeat(keep, np.diff(offsets))
                jet = {b: x[keep] for b, x in jet.items()}
                content = {b: x[in_kept] for b, x in content.items()}
                lab, offsets = lab[keep], np.concatenate([[0], np.cumsum(np.diff(offsets)[keep])])
            for b in JET_BRANCHES:
                jets[b].append(jet[b].astype(np.float32, copy=False))
            for b in PARTICLE_BRANCHES:
                parts[b].append(content[b].astype(np.float32, copy=False))
            label_idx.append(lab)
            counts.append(np.diff(offsets))

    def cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)

    index = cat(label_idx, np.int64)
    if classes is None:
        classes = tuple(c for k, c in enumerate(JETCLASS_CLASSES) if (index == k).any())
    lut = np.full(len(JETCLASS_CLASSES), -1, dtype=np.int16)
    lut[[JETCLASS_CLASSES.index(c) for c in classes]] = np.arange(len(classes))
    label = lut[index]
    arrays = {f"jet/{b}": cat(jets[b], np.float32) for b in JET_BRANCHES}
    arrays["truth/label"] = label
    arrays |= {_ONEHOT + c: (label == k).astype(np.int8) for k, c in enumerate(classes)}
    offsets = np.concatenate([[0], np.cumsum(cat(counts, np.int64))]).astype(np.int64)
    particles = JaggedGroup(offsets, {b: cat(parts[b], np.float32) for b in PARTICLE_BRANCHES})
    return JetClassSample(arrays, particles, tuple(classes), tuple(files))


# ------------------------------------------------------------------------------------------
# conversion


def convert_jetclass(
    paths: Path | str | Sequence[Path | str],
    out_h5: Path | str,
    *,
    classes: Sequence[str] | None = None,
    drop_unlisted: bool = False,
    split: str = "test",
    entry_stop: int | None = None,
    step_size: int = 50_000,
) -> Path:
    """JetClass ROOT files -> one jets event file (``pipeline.events``) for training/evaluation.

    The arguments of :func:`read_jetclass_root` select the jets. The file has the toy's layout
    and the attributes kind = "jets", ``split``, ``classes`` (label names in index order),
    ``source`` (the input file names) and ``config_hash``: a hash of the input names and sizes
    and of the selection, identifying the converted data (there is no simulation config, seed
    or split seed; those attributes are left out). The whole selection is held in memory.

    Raises:
        JetClassFileError / ValueError: as :func:`read_jetclass_root`; no jets to convert; a
            ``split`` not in train / val / test.
    """
    check_split(split)
    sample = read_jetclass_root(
        paths,
        classes=classes,
        drop_unlisted=drop_unlisted,
        entry_stop=entry_stop,
        step_size=step_size,
    )
    if sample.n_jets == 0:
        raise ValueError(f"{[str(p) for p in sample.sources]}: no jets to convert")
    selection = {
        "sources": [[p.name, p.stat().st_size] for p in sample.sources],
        "classes": list(sample.classes),
        "drop_unlisted": drop_unlisted,
        "entry_stop": entry_stop,
    }
    attrs = {
        "kind": "jets",
        "split": split,
        "classes": list(sample.classes),
        "source": [p.name for p in sample.sources],
        "config_hash": config_hash({"jetclass": selection}),
    }
    return write_events(Path(out_h5), sample.arrays, attrs, jagged=sample.jagged)
