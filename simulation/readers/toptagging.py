"""The top-tagging reference dataset ("TopLandscape") to our jets event files.

Kasieczka et al., "The Machine Learning Landscape of Top Taggers", SciPost Phys. 7, 014 (2019);
Zenodo 2603256: ``train.h5`` (1.2M jets), ``val.h5`` and ``test.h5`` (0.4M each), 14 TeV
Pythia 8 + Delphes (ATLAS card), anti-kT R = 0.8 jets with 550 < pT < 650 GeV, |eta| < 2.

Layout. pandas ``HDFStore.put("table", df, format="table")`` (PyTables): the group ``/table``
holds the table ``/table/table``, a compound dataset with an ``index`` column and one or more
value blocks ``values_block_N``, each a (k,) sub-array of one dtype (pandas groups the columns by
dtype). PyTables stores an attribute that HDF5 cannot represent natively (a Python list) as a
protocol-0 pickle in a scalar string attribute; that is how pandas's column names reach the file:
``values_block_N_kind`` on ``/table/table`` holds the block's column names (and ``non_index_axes``
on ``/table`` all of them). The names are decoded here with an unpickler that refuses every global
(a list of strings needs none), so a file cannot make the reader run code. If the name attributes
are absent or undecodable, the documented column order is used, and only for one block of
exactly 806 columns: ``E_0, PX_0, PY_0, PZ_0, ..., E_199, ..., PZ_199`` (200 constituents,
pT-ordered, zero-padded), then ``truthE, truthPX, truthPY, truthPZ, ttv, is_signal_new``. Only the
constituents and ``is_signal_new`` (1 top, 0 QCD) are read; the top-quark four-momentum
``truth*`` and the original split flag ``ttv`` are not stored.

Output. A :class:`~simulation.readers.jetclass.JetClassSample` in the toy's layout, so the same
writers take it (``pipeline.events.write_events``, ``write_jetclass_root``):

- particles: the constituents with E > 0 in the stored order; ``part_px, part_py, part_pz,
  part_energy`` (GeV) as stored; ``part_deta = (eta - eta_jet) sign(eta_jet)`` (sign 0 taken as
  +1) and ``part_dphi = phi - phi_jet`` wrapped into [-pi, pi), relative to the jet axis; the jet
  is the sum of its constituents. The format has no charge, particle ID or track information:
  ``part_d0val, part_d0err, part_dzval, part_dzerr, part_charge`` and the five ``part_is*`` flags
  are written as 0 (:data:`ABSENT_FIELDS`), so only feature sets without them (the JetClass "kin"
  set) describe these jets.
- jets: ``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass, jet_nparticles`` of the constituent sum;
  ``jet_sdmass`` and ``jet_tau1..4`` with the toy's approximate soft-drop and N-subjettiness
  (``simulation.jets.substructure``, R0 = 0.8), as in the toy's own files.
- labels: classes ``("QCD", "Tbqq")`` (the JetClass names; QCD = 0, top = 1 = ``is_signal_new``),
  always both, so train / val / test files agree.

This follows the reference conversion of the ParT authors (particle_transformer,
``utils/convert_top_datasets.py``), except that it keeps the last jet of each file (theirs,
``iloc[0:-1]``, drops it). Every problem raises :class:`TopTaggingFileError` naming the file and,
for values, the jet (row) and column.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import config_hash
from pipeline.events import JaggedGroup, check_split, write_events
from simulation.jets.kinematics import invariant_mass, pt_eta_phi, wrap_phi

# The toy's substructure over flat constituents (bucketed padding); shared so that converted and
# simulated files carry the same soft-drop / N-subjettiness approximations.
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS, jet_substructure
from simulation.readers.jetclass import JetClassSample

HDF_KEY = "table"  # the pandas key: group /table, table /table/table
N_CONSTITUENTS = 200  # constituent slots per jet in the reference files
MOMENTA = ("E", "PX", "PY", "PZ")  # column prefixes of a constituent, in file order
CONSTITUENT_COLUMNS: tuple[str, ...] = tuple(
    f"{q}_{i}" for i in range(N_CONSTITUENTS) for q in MOMENTA
)
LABEL_COLUMN = "is_signal_new"
DOCUMENTED_COLUMNS: tuple[str, ...] = (
    *CONSTITUENT_COLUMNS, "truthE", "truthPX", "truthPY", "truthPZ", "ttv", LABEL_COLUMN,
)  # fmt: skip
TOPTAGGING_CLASSES: tuple[str, ...] = ("QCD", "Tbqq")  # index = is_signal_new
READ_FIELDS = ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi")
ABSENT_FIELDS: tuple[str, ...] = tuple(f for f in PARTICLE_FIELDS if f not in READ_FIELDS)
JET_RADIUS = 0.8  # anti-kT R of the dataset; R0 of the N-subjettiness
_BLOCK = re.compile(r"values_block_\d+")
_CONSTITUENT = re.compile(r"(E|PX|PY|PZ)_(\d+)")
_ONEHOT = "truth/label_"


class TopTaggingFileError(ValueError):
    """A top-tagging HDF5 file is missing, unreadable or does not follow the reference layout."""


# ------------------------------------------------------------------------------------------
# the table and its column names


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain containers and strings only: any class or function is refused."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def decode_pytables_names(raw: object) -> list[str] | None:
    """Column names from a PyTables pickled attribute (``values_block_N_kind``), or None.

    PyTables writes a list attribute as ``pickle.dumps(value, 0)`` in a scalar string; h5py
    reads it as bytes (fixed-length ASCII) or str (variable-length). Python 2 pickles (``S``
    opcodes) decode as latin-1. Anything that is not a list of strings gives None.
    """
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw[()]
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes) or not raw:
        return None
    try:
        value = _NoGlobals(io.BytesIO(raw.rstrip(b"\x00")), encoding="latin1").load()
    except Exception:  # any malformed or hostile pickle just means "not decodable"
        return None
    if not isinstance(value, list | tuple):
        return None
    names = [v.decode("latin1") if isinstance(v, bytes) else v for v in value]
    return names if all(isinstance(v, str) for v in names) else None


def _block_width(path: Path, block: str, dtype: np.dtype) -> int:
    if dtype.base.kind not in "fiub":
        raise TopTaggingFileError(
            f"{path}: /{HDF_KEY}/{HDF_KEY} column {block!r} has dtype {dtype.base}; "
            f"the value blocks must be numeric"
        )
    return int(np.prod(dtype.shape)) if dtype.shape else 1


def _column_map(path: Path, table: h5py.Dataset) -> dict[str, tuple[str, int]]:
    """Column name -> (value block, position in the block)."""
    where = f"{path}: /{HDF_KEY}/{HDF_KEY}"
    fields = table.dtype.names or ()
    blocks = sorted((f for f in fields if _BLOCK.fullmatch(f)), key=lambda b: int(b[13:]))
    if not blocks:
        raise TopTaggingFileError(
            f"{where} has no values_block_N columns (it has {list(fields) or 'no fields'}); "
            f"not a pandas table-format file"
        )
    widths = {b: _block_width(path, b, table.dtype[b]) for b in blocks}
    decoded = {b: decode_pytables_names(table.attrs.get(f"{b}_kind")) for b in blocks}
    if all(names is not None for names in decoded.values()):
        columns: dict[str, tuple[str, int]] = {}
        for b in blocks:
            names = decoded[b] or []
            if len(names) != widths[b]:
                raise TopTaggingFileError(
                    f"{where}: {b}_kind names {len(names)} columns, but {b} is "
                    f"{widths[b]} wide; the file is corrupt"
                )
            for k, name in enumerate(names):
                if name in columns:
                    raise TopTaggingFileError(f"{where}: column {name!r} appears twice")
                columns[name] = (b, k)
        return columns
    undecoded = [b for b in blocks if decoded[b] is None]
    if len(blocks) != 1 or widths[blocks[0]] != len(DOCUMENTED_COLUMNS):
        found = ", ".join(f"{b} ({widths[b]} wide)" for b in blocks)
        raise TopTaggingFileError(
            f"{where}: the column names of {undecoded} cannot be decoded from their _kind "
            f"attributes, and the documented layout needs one value block of "
            f"{len(DOCUMENTED_COLUMNS)} columns (found {found})"
        )
    return {name: (blocks[0], k) for k, name in enumerate(DOCUMENTED_COLUMNS)}


def _constituent_count(path: Path, columns: dict[str, tuple[str, int]]) -> int:
    """The number of constituent slots; every slot needs all of E, PX, PY, PZ."""
    slots = {int(m[2]) for c in columns if (m := _CONSTITUENT.fullmatch(c))}
    n = max(slots, default=-1) + 1
    missing = [f"{q}_{i}" for i in range(n) for q in MOMENTA if f"{q}_{i}" not in columns]
    if LABEL_COLUMN not in columns:
        missing.append(LABEL_COLUMN)
    if n == 0:
        missing[:0] = [f"{q}_0" for q in MOMENTA]
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise TopTaggingFileError(
            f"{path}: /{HDF_KEY}/{HDF_KEY} lacks the columns {missing[:8]}{more}"
        )
    return n


@contextmanager
def _open_table(path: Path) -> Iterator[tuple[h5py.Dataset, dict[str, tuple[str, int]], int]]:
    """(table, column map, constituent slots) of a top-tagging file, checked."""
    if not path.is_file():
        raise TopTaggingFileError(f"{path}: file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise TopTaggingFileError(f"{path}: cannot be read as an HDF5 file: {err}") from err
    with f:
        try:
            table, columns, n_slots = _checked_table(path, f)
        except (OSError, RuntimeError, KeyError) as err:  # damage found when metadata is walked
            raise TopTaggingFileError(f"{path}: corrupt HDF5 file: {err}") from err
        yield table, columns, n_slots


def _checked_table(
    path: Path, f: h5py.File
) -> tuple[h5py.Dataset, dict[str, tuple[str, int]], int]:
    """The checked ``/table/table`` dataset, its column map and constituent slots."""
    group = f.get(HDF_KEY)
    if not isinstance(group, h5py.Group):
        # a damaged name that is not UTF-8 comes back from h5py as bytes
        found = ", ".join(k if isinstance(k, str) else repr(k) for k in f) or "nothing"
        raise TopTaggingFileError(
            f"{path}: no group /{HDF_KEY}; not a top-tagging file written by pandas "
            f"(it holds {found})"
        )
    table = group.get(HDF_KEY)
    if not isinstance(table, h5py.Dataset) or table.dtype.names is None:
        hint = (
            " (pandas 'fixed' format: rewrite it with format='table')"
            if "block0_values" in group
            else ""
        )
        raise TopTaggingFileError(
            f"{path}: /{HDF_KEY} has no compound table dataset /{HDF_KEY}/{HDF_KEY}{hint}"
        )
    if table.ndim != 1:
        raise TopTaggingFileError(f"{path}: /{HDF_KEY}/{HDF_KEY} is not a 1-D table")
    columns = _column_map(path, table)
    return table, columns, _constituent_count(path, columns)


# ------------------------------------------------------------------------------------------
# reading


_Plan = list[tuple[str, np.ndarray, np.ndarray]]


def _plan(columns: dict[str, tuple[str, int]], names: list[str]) -> _Plan:
    """Where ``names`` are: per value block, (block, columns in it, positions in ``names``)."""
    plan = []
    for b in sorted({columns[c][0] for c in names}):
        pos = np.array([j for j, c in enumerate(names) if columns[c][0] == b])
        plan.append((b, np.array([columns[names[j]][1] for j in pos]), pos))
    return plan


def _gather(data: dict[str, np.ndarray], plan: _Plan, width: int) -> np.ndarray:
    """The planned columns of one step as (n, width) float64."""
    if len(plan) == 1:  # one block holds them all (the reference files): one gather, no scatter
        b, cols, _ = plan[0]  # positions 0..width-1 in order
        return np.take(data[b], cols, axis=1).astype(np.float64)
    out = np.empty((next(iter(data.values())).shape[0], width))
    for b, cols, pos in plan:
        out[:, pos] = np.take(data[b], cols, axis=1)
    return out


def _check_step(
    path: Path, start: int, names: list[str], values: np.ndarray, label: np.ndarray
) -> None:
    """Raise on the first non-finite value, negative energy or label other than 0 / 1."""
    bad = ~np.isfinite(values)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise TopTaggingFileError(
            f"{path}: jet {start + i}: column {names[k]!r} is {values[i, k]} (non-finite)"
        )
    if not np.isfinite(label).all():
        i = int(np.argmin(np.isfinite(label)))
        raise TopTaggingFileError(f"{path}: jet {start + i}: {LABEL_COLUMN} is {label[i]}")
    energy = values[:, : len(names) // 4]
    if (energy < 0).any():
        i, k = np.argwhere(energy < 0)[0]
        raise TopTaggingFileError(
            f"{path}: jet {start + i}: column {names[k]!r} is {energy[i, k]} (negative energy)"
        )
    wrong = np.flatnonzero((label != 0) & (label != 1))
    if wrong.size:
        i = int(wrong[0])
        raise TopTaggingFileError(
            f"{path}: jet {start + i}: {LABEL_COLUMN} is {label[i]}; it must be 0 (QCD) or 1 "
            f"(top) ({wrong.size} such jets in rows {start}..{start + len(label) - 1})"
        )


def jets_from_constituents(
    energy: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Jets from zero-padded constituent slots (n, P), GeV: the slots with E > 0 are kept.

    Returns:
        jet arrays ``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass, jet_nparticles, jet_sdmass,
        jet_tau1..4`` (n,) float32 (GeV, rad); offsets (n + 1,) int64; and the flat (m,) float32
        fields of :data:`READ_FIELDS`, in slot order within a jet. The jet is the constituent sum.
    """
    mask = energy > 0
    counts = mask.sum(axis=1)
    n = counts.size
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    p_jet = np.stack([np.where(mask, x, 0.0).sum(axis=1) for x in (px, py, pz)], axis=-1)
    e_jet = np.where(mask, energy, 0.0).sum(axis=1)
    pt_j, eta_j, phi_j = pt_eta_phi(p_jet)
    p = np.stack([px[mask], py[mask], pz[mask]], axis=-1)
    e = energy[mask]
    jet = np.repeat(np.arange(n), counts)
    _, eta, phi = pt_eta_phi(p)
    deta = eta - eta_j[jet]
    dphi = wrap_phi(phi - phi_j[jet])
    sign = np.where(eta_j < 0, -1.0, 1.0)  # the reference's sign(eta_jet), with sign(0) = +1
    taus, sdmass = jet_substructure(offsets, p, deta, dphi, e, JET_RADIUS)
    jets = {
        "jet_pt": pt_j,
        "jet_eta": eta_j,
        "jet_phi": phi_j,
        "jet_energy": e_jet,
        "jet_mass": invariant_mass(p_jet, e_jet),
        "jet_nparticles": counts,
        "jet_sdmass": sdmass,
    } | {f"jet_tau{k + 1}": taus[:, k] for k in range(4)}
    content = {
        "part_px": p[:, 0],
        "part_py": p[:, 1],
        "part_pz": p[:, 2],
        "part_energy": e,
        "part_deta": deta * sign[jet],
        "part_dphi": dphi,
    }
    f32 = np.float32
    return (
        {k: v.astype(f32) for k, v in jets.items()},
        offsets,
        {k: v.astype(f32) for k, v in content.items()},
    )


def read_toptagging(
    path: Path | str, *, entry_stop: int | None = None, step_size: int = 20_000
) -> JetClassSample:
    """Read a top-tagging reference file (train / val / test.h5) into memory, validated.

    Args:
        path: the pandas table-format HDF5 file (key ``table``).
        entry_stop: read the first this many jets; None -> all.
        step_size: jets read per step (bounds the dense (step, 806) block in memory).

    Returns:
        :class:`JetClassSample` with classes ``("QCD", "Tbqq")``: ``jet/jet_*`` (see
        :func:`jets_from_constituents`) and ``truth/label`` (n,) int16, ``truth/label_QCD``,
        ``truth/label_Tbqq`` (n,) int8; particles with all 16 ``part_*`` fields, float32, those
        of :data:`ABSENT_FIELDS` all 0. Jets without a constituent are kept (empty lists).

    Raises:
        TopTaggingFileError: naming the file: missing, not HDF5, no ``/table`` group or table,
            no value blocks, undecodable column names with a block that is not 806 wide, missing
            columns (listed); naming the jet and column: NaN/inf, a negative energy, an
            ``is_signal_new`` other than 0 or 1.
        ValueError: a negative ``entry_stop`` or a ``step_size`` < 1.
    """
    path = Path(path)
    if entry_stop is not None and entry_stop < 0:
        raise ValueError(f"entry_stop: must be >= 0 or None, got {entry_stop}")
    if step_size < 1:
        raise ValueError(f"step_size: must be >= 1, got {step_size}")
    jets: dict[str, list[np.ndarray]] = {f"jet/{b}": [] for b in (*JET_FIELDS, "jet_mass")}
    parts: dict[str, list[np.ndarray]] = {f: [] for f in READ_FIELDS}
    labels: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    with _open_table(path) as (table, columns, n_slots):
        names = [f"{q}_{i}" for q in MOMENTA for i in range(n_slots)]  # E_*, then PX_*, ...
        blocks = sorted({columns[c][0] for c in [*names, LABEL_COLUMN]})
        momenta, label_at = _plan(columns, names), _plan(columns, [LABEL_COLUMN])
        n_jets = table.shape[0] if entry_stop is None else min(entry_stop, table.shape[0])
        for start in range(0, n_jets, step_size):
            stop = min(start + step_size, n_jets)
            try:
                data = {b: table.fields(b)[start:stop].reshape(stop - start, -1) for b in blocks}
            except (OSError, RuntimeError) as err:
                raise TopTaggingFileError(
                    f"{path}: cannot read rows {start}..{stop - 1} of /{HDF_KEY}/{HDF_KEY} "
                    f"(corrupt, or compressed with a filter h5py lacks): {err}"
                ) from err
            values = _gather(data, momenta, len(names))
            label = _gather(data, label_at, 1)[:, 0]
            _check_step(path, start, names, values, label)
            jet, offsets, content = jets_from_constituents(*np.split(values, 4, axis=1))
            for k, v in jet.items():
                jets[f"jet/{k}"].append(v)
            for k, v in content.items():
                parts[k].append(v)
            labels.append(label.astype(np.int16))
            counts.append(np.diff(offsets))

    def cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)

    label = cat(labels, np.int16)
    arrays = {k: cat(v, np.float32) for k, v in jets.items()}
    arrays["truth/label"] = label
    arrays |= {_ONEHOT + c: (label == k).astype(np.int8) for k, c in enumerate(TOPTAGGING_CLASSES)}
    offsets = np.concatenate([[0], np.cumsum(cat(counts, np.int64))]).astype(np.int64)
    content = {f: cat(parts[f], np.float32) for f in READ_FIELDS}
    # One zeros array per absent field (calloc: pages stay shared until written).
    content |= {f: np.zeros(int(offsets[-1]), np.float32) for f in ABSENT_FIELDS}
    particles = JaggedGroup(offsets, {f: content[f] for f in PARTICLE_FIELDS})
    return JetClassSample(arrays, particles, TOPTAGGING_CLASSES, (path,))


# ------------------------------------------------------------------------------------------
# conversion


def convert_toptagging(
    path: Path | str,
    out_h5: Path | str,
    *,
    split: str = "test",
    entry_stop: int | None = None,
    step_size: int = 20_000,
) -> Path:
    """A top-tagging reference file -> one jets event file (``pipeline.events``).

    The jets are those of :func:`read_toptagging`. The file has the toy's layout and the
    attributes kind = "jets", ``split``, ``classes`` = ["QCD", "Tbqq"], ``source`` (the input
    file name) and ``config_hash`` (a hash of the input name and size and of ``entry_stop``);
    there is no seed. The selection is held in memory (the six read particle fields take 24
    bytes per constituent; the absent ones are shared zero pages until written).

    Raises:
        TopTaggingFileError / ValueError: as :func:`read_toptagging`; no jets to convert; a
            ``split`` not in train / val / test.
    """
    check_split(split)
    path = Path(path)
    sample = read_toptagging(path, entry_stop=entry_stop, step_size=step_size)
    if sample.n_jets == 0:
        raise ValueError(f"{path}: no jets to convert")
    selection = {"source": [path.name, path.stat().st_size], "entry_stop": entry_stop}
    attrs = {
        "kind": "jets",
        "split": split,
        "classes": list(sample.classes),
        "source": [path.name],
        "config_hash": config_hash({"toptagging": selection}),
    }
    return write_events(Path(out_h5), sample.arrays, attrs, jagged=sample.jagged)
