"""Delphes ROOT files -> anti-kT jets of particle-flow candidates, in the JetClass layout.

Delphes (de Favereau et al., JHEP 02 (2014) 057) writes one TTree ``Delphes`` entry per event.
The JetClass dataset was built from its particle-flow ("EFlow") collections, which this reader
reads (branch names as Delphes writes them, ``<collection>.<field>``):

- ``EFlowTrack``: ``PT, Eta, Phi, Charge, PID, D0, DZ, ErrorD0, ErrorDZ`` (GeV, rad, mm);
  a track gets the charged-pion mass;
- ``EFlowPhoton`` and ``EFlowNeutralHadron`` (calorimeter towers): ``ET, Eta, Phi``, massless.

A candidate whose four-momentum is not finite or whose pT is not positive is dropped before
clustering: Delphes writes placeholder tracks with ``PT = 0, Eta = 999.9`` (374 of the 818 tracks
of the 10-event test file), and FastJet crashes on the NaNs they would produce. Every event's
remaining candidates are clustered with FastJet's anti-kT (E-scheme) of radius ``radius``
(JetClass: 0.8; Delphes' own ``Jet`` collection uses 0.5 in the CMS card). The jets above
``min_jet_pt`` (and below ``max_jet_pt``) with ``|eta| < max_abs_eta`` are taken in decreasing
pT, at most ``max_jets_per_event`` per event.

Output (:class:`DelphesSample`, a :class:`~simulation.readers.jetclass.JetClassSample`, so the
JetClass writers take it): per jet ``jet/jet_pt, jet_eta, jet_phi, jet_energy, jet_mass`` of
FastJet's jet four-momentum, ``jet/jet_nparticles``, and ``jet/jet_sdmass, jet_tau1..4`` with
the approximations of :mod:`simulation.jets.substructure` (the same definitions as the toy's
files, R0 = ``radius``); per constituent, pT-ordered, the 16 JetClass ``part_*`` fields with the
toy's conventions (docs/jets.md): ``part_deta = (eta - eta_jet) sign(eta_jet)`` (sign(0) = +1),
``part_dphi`` wrapped into [-pi, pi), ``part_charge`` the track charge, ``part_isElectron`` /
``part_isMuon`` for tracks with abs(PID) 11 / 13, ``part_isChargedHadron`` for the other tracks,
``part_isPhoton`` / ``part_isNeutralHadron`` by collection, d0/dz values and errors (mm) of
tracks and 0 for neutral candidates, as in JetClass.

Labels: Delphes files carry no jet label, and no truth matching is done. Every jet of a read gets
the class ``label`` that the caller names (e.g. ``Tbqq`` for a hadronic-top sample); in an
inclusive ttbar file most jets are not hadronic-top jets, so labelling all of them ``Tbqq`` is
only right for a sample selected as such (or for evaluation studies that accept it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline.config import config_hash
from pipeline.events import JaggedGroup, check_split, write_events
from simulation.jets.clustering import antikt, require_fastjet
from simulation.jets.kinematics import invariant_mass, pt_eta_phi, pt_eta_phi_m_to_p4, wrap_phi
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS, jet_substructure
from simulation.readers.jetclass import JetClassSample, check_classes
from simulation.readers.rootfiles import as_paths, iterate_tree

TREE_NAME = "Delphes"
TRACKS, PHOTONS, NEUTRAL_HADRONS = "EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron"
COLLECTION_FIELDS: dict[str, tuple[str, ...]] = {
    TRACKS: ("PT", "Eta", "Phi", "Charge", "PID", "D0", "DZ", "ErrorD0", "ErrorDZ"),
    PHOTONS: ("ET", "Eta", "Phi"),
    NEUTRAL_HADRONS: ("ET", "Eta", "Phi"),
}
BRANCHES: tuple[str, ...] = tuple(f"{c}.{f}" for c, fs in COLLECTION_FIELDS.items() for f in fs)
PION_MASS = 0.13957039  # GeV, charged pion (PDG 2022): the mass given to every track
ELECTRON_PID, MUON_PID = 11, 13
# What uproot raises on damaged files (header, TTree metadata, baskets).
_TRACK_INFO = {  # part_* field <- EFlowTrack field, for tracks (0 for neutral candidates)
    "part_d0val": "D0",
    "part_d0err": "ErrorD0",
    "part_dzval": "DZ",
    "part_dzerr": "ErrorDZ",
}
_KIND = {TRACKS: 0, PHOTONS: 1, NEUTRAL_HADRONS: 2}


class DelphesFileError(ValueError):
    """A Delphes ROOT file is missing, unreadable or lacks the TTree or branches read."""


@dataclass(frozen=True)
class DelphesSample(JetClassSample):
    """Jets clustered from Delphes files: a :class:`JetClassSample` plus what the read dropped.

    Attributes (besides those of :class:`JetClassSample`; ``arrays`` also holds
    ``jet/jet_mass`` (n,) float32 GeV):
        n_events: Delphes events read (all files).
        n_candidates: EFlow candidates in them (tracks, photons, neutral hadrons).
        n_dropped: candidates dropped before clustering (pT <= 0 or a non-finite four-momentum).
        radius: the anti-kT radius parameter R used.
    """

    n_events: int
    n_candidates: int
    n_dropped: int
    radius: float


# ------------------------------------------------------------------------------------------
# opening files


def _read_blocks(
    path: Path, entry_stop: int | None, step_size: int
) -> Iterator[tuple[int, dict[str, ak.Array]]]:
    """(first entry, branch -> jagged (events, candidates) array) per uproot step of one file."""
    yield from iterate_tree(
        path, TREE_NAME, BRANCHES, DelphesFileError, "Delphes", entry_stop, step_size
    )


# ------------------------------------------------------------------------------------------
# candidates and clustering


@dataclass(frozen=True)
class _Candidates:
    """The kept EFlow candidates of a block of events, flat, grouped by event.

    offsets (events + 1,) int64; p (k, 3), energy, pt, eta, phi (k,) float64 (GeV, rad);
    kind (k,) int8 (0 track, 1 photon, 2 neutral hadron); pid, charge (k,) int (0 for neutral
    candidates); track: ``part_d0val, part_d0err, part_dzval, part_dzerr`` -> (k,) float64 mm
    (0 for neutral candidates); n_read, n_dropped: candidates read and dropped in the block.
    """

    offsets: np.ndarray
    p: np.ndarray
    energy: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    kind: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    track: dict[str, np.ndarray]
    n_read: int
    n_dropped: int


def _flat(x: ak.Array, dtype: type) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=1)).astype(dtype, copy=False)


def _candidates(path: Path, start: int, block: dict[str, ak.Array]) -> _Candidates:
    """Merge the three collections per event (tracks, photons, neutral hadrons) and drop the
    candidates that FastJet must not see; non-finite track parameters of kept tracks raise."""
    n_events = len(block[f"{TRACKS}.PT"])
    event, pt, eta, phi, kind, mass = [], [], [], [], [], []
    for coll in COLLECTION_FIELDS:
        momentum = "PT" if coll == TRACKS else "ET"
        counts = ak.to_numpy(ak.num(block[f"{coll}.{momentum}"], axis=1))
        event.append(np.repeat(np.arange(n_events), counts))
        pt.append(_flat(block[f"{coll}.{momentum}"], np.float64))
        eta.append(_flat(block[f"{coll}.Eta"], np.float64))
        phi.append(_flat(block[f"{coll}.Phi"], np.float64))
        kind.append(np.full(counts.sum(), _KIND[coll], np.int8))
        mass.append(np.full(counts.sum(), PION_MASS if coll == TRACKS else 0.0))
    n_tracks = len(pt[0])
    # Per event: its tracks, then photons, then neutral hadrons (a stable sort by event).
    order = np.argsort(np.concatenate(event), kind="stable")
    event_all = np.concatenate(event)[order]
    pt_all, eta_all, phi_all = (np.concatenate(x)[order] for x in (pt, eta, phi))
    with np.errstate(over="ignore", invalid="ignore"):  # placeholders: 0 * sinh(999.9) = nan
        p, energy = pt_eta_phi_m_to_p4(pt_all, eta_all, phi_all, np.concatenate(mass)[order])
        keep = (pt_all > 0) & np.isfinite(p).all(axis=1) & np.isfinite(energy)
    src = order[keep]  # index into the concatenation (tracks first) of the kept candidates
    is_track = src < n_tracks
    track_src = src[is_track]
    track = {}
    for out, field in _TRACK_INFO.items():
        values = _flat(block[f"{TRACKS}.{field}"], np.float64)[track_src]
        if not np.isfinite(values).all():
            bad = int(np.argmin(np.isfinite(values)))
            entry = start + int(event_all[keep][is_track][bad])
            raise DelphesFileError(
                f"{path}: entry {entry}: branch '{TRACKS}.{field}' is {values[bad]} (non-finite) "
                f"for a track with PT {pt_all[keep][is_track][bad]:.4g} GeV"
            )
        track[out] = np.zeros(len(src))
        track[out][is_track] = values
    pid, charge = np.zeros(len(src), np.int64), np.zeros(len(src), np.int64)
    pid[is_track] = _flat(block[f"{TRACKS}.PID"], np.int64)[track_src]
    charge[is_track] = _flat(block[f"{TRACKS}.Charge"], np.int64)[track_src]
    counts = np.bincount(event_all[keep], minlength=n_events)
    return _Candidates(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        p=p[keep],
        energy=energy[keep],
        pt=pt_all[keep],
        eta=eta_all[keep],
        phi=phi_all[keep],
        kind=np.concatenate(kind)[src],
        pid=pid,
        charge=charge,
        track=track,
        n_read=len(order),
        n_dropped=int((~keep).sum()),
    )


def _cluster(
    cand: _Candidates, radius: float, min_pt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`simulation.jets.clustering.antikt` of the candidates of every event."""
    return antikt(cand.p, cand.energy, cand.offsets, radius, min_pt, "the Delphes reader")


def _select(
    pt: np.ndarray,
    eta: np.ndarray,
    event: np.ndarray,
    max_jet_pt: float | None,
    max_abs_eta: float,
    max_jets_per_event: int | None,
) -> np.ndarray:
    """Indices of the chosen jets: by event, in decreasing pT, the first ones passing the cuts."""
    order = np.lexsort((-pt, event))
    passing = np.abs(eta[order]) < max_abs_eta
    if max_jet_pt is not None:
        passing &= pt[order] < max_jet_pt
    order = order[passing]
    if max_jets_per_event is None or order.size == 0:
        return order
    ev = event[order]
    first = np.concatenate([[0], np.flatnonzero(np.diff(ev)) + 1])  # first jet of each event
    rank = np.arange(order.size) - np.repeat(first, np.diff(np.append(first, order.size)))
    return order[rank < max_jets_per_event]


def _gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat element indices of the lists ``rows`` (in that order) and their new offsets."""
    counts = offsets[rows + 1] - offsets[rows]
    new = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.repeat(offsets[rows] - new[:-1], counts) + np.arange(new[-1]), new


def _jets(
    cand: _Candidates,
    radius: float,
    min_jet_pt: float,
    max_jet_pt: float | None,
    max_abs_eta: float,
    max_jets_per_event: int | None,
) -> tuple[dict[str, np.ndarray], JaggedGroup]:
    """The selected jets of one block: ``jet_*`` (n,) arrays and their constituents."""
    p4, event, const_offsets, const = _cluster(cand, radius, min_jet_pt)
    pt_j, eta_j, phi_j = pt_eta_phi(p4[:, :3])
    chosen = _select(pt_j, eta_j, event, max_jet_pt, max_abs_eta, max_jets_per_event)
    elems, offsets = _gather(const_offsets, chosen)
    idx = const[elems]
    jet = np.repeat(np.arange(chosen.size), np.diff(offsets))  # output jet of each constituent
    by_pt = np.lexsort((-cand.pt[idx], jet))  # pT-ordered within each jet
    idx = idx[by_pt]
    pt_j, eta_j, phi_j, p4 = pt_j[chosen], eta_j[chosen], phi_j[chosen], p4[chosen]
    deta = cand.eta[idx] - eta_j[jet]
    dphi = wrap_phi(cand.phi[idx] - phi_j[jet])
    kind, apid = cand.kind[idx], np.abs(cand.pid[idx])
    track = kind == _KIND[TRACKS]
    content = {
        "part_px": cand.p[idx, 0],
        "part_py": cand.p[idx, 1],
        "part_pz": cand.p[idx, 2],
        "part_energy": cand.energy[idx],
        "part_deta": deta * np.where(eta_j[jet] < 0, -1.0, 1.0),
        "part_dphi": dphi,
        **{k: v[idx] for k, v in cand.track.items()},
        "part_charge": cand.charge[idx],
        "part_isChargedHadron": track & (apid != ELECTRON_PID) & (apid != MUON_PID),
        "part_isNeutralHadron": kind == _KIND[NEUTRAL_HADRONS],
        "part_isPhoton": kind == _KIND[PHOTONS],
        "part_isElectron": track & (apid == ELECTRON_PID),
        "part_isMuon": track & (apid == MUON_PID),
    }
    content = {k: np.asarray(content[k], np.float32) for k in PARTICLE_FIELDS}
    taus, sdmass = jet_substructure(offsets, cand.p[idx], deta, dphi, cand.energy[idx], radius)
    arrays = {
        "jet_pt": pt_j,
        "jet_eta": eta_j,
        "jet_phi": phi_j,
        "jet_energy": p4[:, 3],
        "jet_mass": invariant_mass(p4[:, :3], p4[:, 3]),
        "jet_nparticles": np.diff(offsets),
        "jet_sdmass": sdmass,
    } | {f"jet_tau{k + 1}": taus[:, k] for k in range(4)}
    return {k: np.asarray(v, np.float32) for k, v in arrays.items()}, JaggedGroup(offsets, content)


# ------------------------------------------------------------------------------------------
# reading and conversion


def _check_label(label: str, classes: Sequence[str] | None) -> tuple[str, ...]:
    names = (label,) if classes is None else tuple(classes)
    check_classes((label, *names) if label not in names else names, "classes")
    if label not in names:
        raise ValueError(f"label {label!r} is not among classes {list(names)}")
    return names


def read_delphes(
    paths: Path | str | Sequence[Path | str],
    *,
    label: str,
    classes: Sequence[str] | None = None,
    radius: float = 0.8,
    min_jet_pt: float = 20.0,
    max_jet_pt: float | None = None,
    max_abs_eta: float = 2.5,
    max_jets_per_event: int | None = 2,
    entry_stop: int | None = None,
    step_size: int = 1_000,
) -> DelphesSample:
    """Cluster the EFlow candidates of Delphes files into jets of the JetClass layout.

    Args:
        paths: one file or several; their jets are concatenated in order (file, event, pT).
        label: the class of every jet read (a JetClass label, e.g. ``Tbqq``). Delphes files
            carry no jet label and no truth matching is done: the caller vouches for it.
        classes: label names in the index order of ``truth/label`` (must contain ``label``),
            e.g. a tagger's six classes so that its evaluation reads the file; None ->
            ``(label,)``.
        radius: anti-kT radius parameter R (JetClass: 0.8; Delphes' ``Jet`` collection: 0.5).
        min_jet_pt: jets below this pT (GeV) are not kept (FastJet's inclusive-jet threshold).
        max_jet_pt: jets at or above this pT (GeV) are not kept; None -> no upper cut.
            JetClass selected 500 < pT < 1000 GeV and |eta| < 2.
        max_abs_eta: jets with |eta| at or above this are not kept (2.5: the tracker's reach,
            so that charged constituents carry tracks).
        max_jets_per_event: keep at most this many of the passing jets of an event, the hardest
            first; None -> all.
        entry_stop: read at most this many events of each file; None -> all.
        step_size: events read and clustered per uproot step (bounds memory).

    Returns:
        :class:`DelphesSample`: ``jet/jet_*`` (n,) float32 (with ``jet_mass``), ``truth/label``
        (n,) int16 and ``truth/label_<class>`` (n,) int8, and the 16 ``part_*`` fields (flat,
        float32, pT-ordered within a jet); the constituents' four-momenta sum to the jet's.

    Raises:
        DelphesFileError: naming the file: missing, not ROOT, no TTree ``Delphes`` (what it holds
            is listed), missing branches (all listed); a non-finite D0/DZ/error of a kept track
            (entry and branch named).
        ValueError: a bad argument (a label or class that is not a JetClass label, ...).
        ImportError: fastjet is not installed (``pip install 'reco[jets]'``).
    """
    files = as_paths(paths, "Delphes files")
    classes = _check_label(label, classes)
    if not radius > 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    if not min_jet_pt >= 0:
        raise ValueError(f"min_jet_pt: must be >= 0 GeV, got {min_jet_pt}")
    if max_jet_pt is not None and not max_jet_pt > min_jet_pt:
        raise ValueError(f"max_jet_pt: must be > min_jet_pt ({min_jet_pt}), got {max_jet_pt}")
    if not max_abs_eta > 0:
        raise ValueError(f"max_abs_eta: must be > 0, got {max_abs_eta}")
    if max_jets_per_event is not None and max_jets_per_event < 1:
        raise ValueError(f"max_jets_per_event: must be >= 1 or None, got {max_jets_per_event}")
    if step_size < 1:
        raise ValueError(f"step_size: must be >= 1, got {step_size}")
    require_fastjet("the Delphes reader")  # fail before reading anything without it
    jets: list[dict[str, np.ndarray]] = []
    parts: list[JaggedGroup] = []
    n_events = n_candidates = n_dropped = 0
    for path in files:
        for start, block in _read_blocks(path, entry_stop, step_size):
            cand = _candidates(path, start, block)
            n_events += len(cand.offsets) - 1
            n_candidates += cand.n_read
            n_dropped += cand.n_dropped
            arrays, group = _jets(
                cand, radius, min_jet_pt, max_jet_pt, max_abs_eta, max_jets_per_event
            )
            jets.append(arrays)
            parts.append(group)
    names = (*JET_FIELDS, "jet_mass")
    arrays = {
        f"jet/{k}": np.concatenate([j[k] for j in jets] or [np.zeros(0, np.float32)]) for k in names
    }
    counts = np.concatenate([np.diff(g.offsets) for g in parts] or [np.zeros(0, np.int64)])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    content = {
        k: np.concatenate([g.content[k] for g in parts] or [np.zeros(0, np.float32)])
        for k in PARTICLE_FIELDS
    }
    n = len(counts)
    index = classes.index(label)
    arrays["truth/label"] = np.full(n, index, np.int16)
    arrays |= {f"truth/label_{c}": np.full(n, k == index, np.int8) for k, c in enumerate(classes)}
    return DelphesSample(
        arrays=arrays,
        particles=JaggedGroup(offsets, content),
        classes=classes,
        sources=tuple(files),
        n_events=n_events,
        n_candidates=n_candidates,
        n_dropped=n_dropped,
        radius=float(radius),
    )


def convert_delphes(
    paths: Path | str | Sequence[Path | str],
    out_h5: Path | str,
    *,
    label: str,
    classes: Sequence[str] | None = None,
    radius: float = 0.8,
    min_jet_pt: float = 20.0,
    max_jet_pt: float | None = None,
    max_abs_eta: float = 2.5,
    max_jets_per_event: int | None = 2,
    split: str = "test",
    entry_stop: int | None = None,
    step_size: int = 1_000,
) -> Path:
    """Delphes ROOT files -> one jets event file (``pipeline.events``) for training/evaluation.

    The arguments of :func:`read_delphes` select and label the jets. The file has the layout of
    :func:`simulation.readers.jetclass.convert_jetclass` and the attributes kind = "jets",
    ``split``, ``classes``, ``source`` (the input file names), ``jet_radius``, ``delphes_events``,
    ``dropped_candidates`` and ``config_hash`` (a hash of the input names and sizes and of the
    selection). The whole selection is held in memory.

    Raises:
        DelphesFileError / ValueError / ImportError: as :func:`read_delphes`; no jets passed the
            selection; a ``split`` not in train / val / test.
    """
    check_split(split)
    sample = read_delphes(
        paths,
        label=label,
        classes=classes,
        radius=radius,
        min_jet_pt=min_jet_pt,
        max_jet_pt=max_jet_pt,
        max_abs_eta=max_abs_eta,
        max_jets_per_event=max_jets_per_event,
        entry_stop=entry_stop,
        step_size=step_size,
    )
    if sample.n_jets == 0:
        raise ValueError(
            f"{[str(p) for p in sample.sources]}: no jets passed the selection "
            f"(pT >= {min_jet_pt} GeV, |eta| < {max_abs_eta}) in {sample.n_events} events"
        )
    selection = {
        "sources": [[p.name, p.stat().st_size] for p in sample.sources],
        "label": label,
        "classes": list(sample.classes),
        "radius": radius,
        "min_jet_pt": min_jet_pt,
        "max_jet_pt": max_jet_pt,
        "max_abs_eta": max_abs_eta,
        "max_jets_per_event": max_jets_per_event,
        "entry_stop": entry_stop,
    }
    attrs = {
        "kind": "jets",
        "split": split,
        "classes": list(sample.classes),
        "source": [p.name for p in sample.sources],
        "jet_radius": sample.radius,
        "delphes_events": sample.n_events,
        "dropped_candidates": sample.n_dropped,
        "config_hash": config_hash({"delphes": selection}),
    }
    return write_events(Path(out_h5), sample.arrays, attrs, jagged=sample.jagged)
