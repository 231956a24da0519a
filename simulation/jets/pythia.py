"""Pythia 8 engine of the jet simulator (``simulation.engine: pythia``; docs/jets.md).

Each class is its own pp process at ``pythia.ecm`` (13 TeV), with the hard process's pT-hat in
``JetsConfig.pthat_window`` (default 0.9 pt_min .. 1.1 pt_max of ``kinematics``):

- QCD: ``HardQCD:all`` (2 -> 2 QCD dijets);
- Tbqq: ``Top:gg2ttbar`` + ``Top:qqbar2ttbar``, W forced to quarks (t -> bW -> bqq');
- Wqq / Zqq: W + jet / Z + jet (``WeakBosonAndParton``, Z without the photon), W / Z -> quarks;
- Hbb / Hcc: H + jet (``HiggsSM:gg2Hg(l:t)``, ``qg2Hq(l:t)``, ``qqbar2Hg(l:t)``), H forced to
  bb / cc.

Pythia's default tune (Monash 2013) with ISR, FSR, MPI and hadronisation on, and Pythia's
default decays (K0S, Lambda and the other weakly decaying strange baryons decay; pi+-, K+-, K0L,
n stay); with ``tau0_max`` set (CMS uses 10 mm), hadrons of c tau0 above it stay stable. The
visible final-state particles (no neutrinos) with |eta| < ``particle_eta_max`` and pT >
``particle_pt_min`` (and a finite, non-zero pT: FastJet's rapidity of pT = 0 is NaN) are clustered
with FastJet anti-kT (E-scheme, R = ``kinematics.radius``). Jets with pt_min <= pT < pt_max and
|eta| < eta_max are kept, at most ``max_jets_per_event`` per event, the hardest first; for the
signal classes only jets to which a hadronically decaying resonance is matched: its last copy
(the one that decays) and all its decay quarks (through the W for the top) within Delta R <
``match_radius`` (default R) of the jet axis. QCD jets need no match. ``truth/gen_*`` is the
matched resonance, for QCD the nearer outgoing parton of the hard process.

Per constituent, the 16 JetClass fields with the toy's conventions (docs/jets.md), from the PDG
id and charge; tracks (charged particles) get straight-track impact parameters from Pythia's
production vertex (mm; displaced for b / c hadron decay products) smeared with the toy's
resolution model (``detector.d0_res_*``, ``dz_res_*``), whose sigma is stored as d0err / dzerr;
neutral particles have zeros. Momenta are not smeared (generator level). Jet substructure uses
the toy's definitions (:func:`simulation.jets.simulate.jet_substructure`).

Reproducibility and parallelism: every class is generated in shards of ``shard_size`` jets, each
its own Pythia instance seeded from (split seed, seed_offset, JetClass index of the class, shard
index), so a sample does not depend on the number of worker processes (``workers``; spawned
processes, one Pythia each). Labels cycle through ``cfg.classes`` as in the toy.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import awkward as ak
import numpy as np

from pipeline.events import JaggedGroup
from simulation.jets.clustering import antikt, require_fastjet
from simulation.jets.config import JETCLASS_LABELS, JetsConfig
from simulation.jets.detector import impact_parameters, ip_resolution
from simulation.jets.kinematics import group_sum, pt_eta_phi, wrap_phi
from simulation.jets.simulate import (
    PARTICLE_FIELDS,
    JetSample,
    concatenate,
    jet_arrays,
    jet_substructure,
)

TOP, Z, W, HIGGS = 6, 23, 24, 25  # PDG ids of the resonances
RESONANCE: dict[str, int | None] = {
    "QCD": None, "Hbb": HIGGS, "Hcc": HIGGS, "Wqq": W, "Zqq": Z, "Tbqq": TOP,
}  # fmt: skip
_HIGGS_JET = ("HiggsSM:gg2Hg(l:t) = on", "HiggsSM:qg2Hq(l:t) = on", "HiggsSM:qqbar2Hg(l:t) = on")
_W_TO_QUARKS = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")
# Pythia settings of the hard process of each class (Pythia 8.3 manual, "Process Selection").
PROCESSES: dict[str, tuple[str, ...]] = {
    "QCD": ("HardQCD:all = on",),
    "Hbb": (*_HIGGS_JET, "25:onMode = off", "25:onIfMatch = 5 -5"),
    "Hcc": (*_HIGGS_JET, "25:onMode = off", "25:onIfMatch = 4 -4"),
    "Wqq": ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", *_W_TO_QUARKS),
    "Zqq": (
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",  # Z only, no photon
        "23:onMode = off",
        "23:onIfAny = 1 2 3 4 5",
    ),
    "Tbqq": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_W_TO_QUARKS),
}
PHOTON, ELECTRON, MUON = 22, 11, 13
_QUARKS = (1, 2, 3, 4, 5)
_HARD_OUTGOING = 23  # |status| of the outgoing partons of the hard process
_WHO = "simulation.engine: pythia"  # named in the error when fastjet is missing
PYTHIA_SEED_MAX = 900_000_000  # Pythia's Random:seed range (0 means "from the clock": avoided)


class PythiaEfficiencyError(ValueError):
    """A shard made too few jets in its allowed number of events (window and pT-hat at odds)."""


def _pythia8():
    try:
        import pythia8mc
    except ImportError as err:
        raise ImportError(
            "simulation.engine: pythia needs Pythia 8's Python bindings: pip install 'reco[pythia]' "
            "(the pythia8mc package)"
        ) from err
    return pythia8mc


def pythia_version() -> str:
    """The installed pythia8mc version (written to the event files)."""
    return importlib.metadata.version("pythia8mc")


def pythia_settings(cfg: JetsConfig, label: str, seed: int) -> list[str]:
    """Pythia ``readString`` lines of class ``label`` (a JetClass name) seeded with ``seed``."""
    if label not in PROCESSES:
        raise ValueError(f"label: no Pythia process for {label!r}; known: {', '.join(PROCESSES)}")
    if not 0 < seed <= PYTHIA_SEED_MAX:
        raise ValueError(f"seed: Pythia seeds are in [1, {PYTHIA_SEED_MAX}], got {seed}")
    lo, hi = cfg.pthat_window
    tau0_max = cfg.pythia.tau0_max
    lifetime = (
        ()
        if tau0_max is None
        else ("ParticleDecays:limitTau0 = on", f"ParticleDecays:tau0Max = {tau0_max}")
    )
    return [
        f"Beams:eCM = {cfg.pythia.ecm}",
        *PROCESSES[label],
        f"PhaseSpace:pTHatMin = {lo}",
        f"PhaseSpace:pTHatMax = {hi}",
        *lifetime,
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Print:quiet = on",
        "Next:numberCount = 0",
    ]


# ------------------------------------------------------------------------------------------
# one batch of events: flat numpy arrays


@dataclass(frozen=True)
class _Events:
    """A batch of Pythia event records, flat. offsets (e + 1,) int64; per particle (k,):
    pid, status, daughter1, daughter2 (event-local indices), p (k, 3) and energy GeV, mass GeV,
    vertex (k, 3) mm (production vertex; 0 where Pythia sets none)."""

    offsets: np.ndarray
    pid: np.ndarray
    status: np.ndarray
    daughter1: np.ndarray
    daughter2: np.ndarray
    p: np.ndarray
    energy: np.ndarray
    mass: np.ndarray
    vertex: np.ndarray


def _flat(x: ak.Array, dtype: type) -> np.ndarray:
    return ak.to_numpy(ak.flatten(ak.fill_none(x, 0), axis=1)).astype(dtype, copy=False)


def _events(batch: ak.Array) -> _Events:
    """Flatten the awkward output of ``Pythia.nextBatch``."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt.id, axis=1)).astype(np.int64)
    mom, vtx = prt.p, prt.vProd
    return _Events(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        pid=_flat(prt.id, np.int64),
        status=_flat(prt.status, np.int64),
        daughter1=_flat(prt.daughter1, np.int64),
        daughter2=_flat(prt.daughter2, np.int64),
        p=np.stack([_flat(mom[k], np.float64) for k in ("px", "py", "pz")], axis=1),
        energy=_flat(mom.e, np.float64),
        mass=_flat(prt.m, np.float64),
        vertex=np.stack([_flat(vtx[k], np.float64) for k in ("px", "py", "pz")], axis=1),
    )


class _ParticleTable:
    """Charge and visibility by PDG id from Pythia's particle data, cached per id."""

    def __init__(self, particle_data) -> None:
        self._data = particle_data
        self._cache: dict[int, tuple[float, bool]] = {}

    def lookup(self, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge (k,) in units of e, visible (k,) bool) of PDG ids (k,)."""
        ids, inverse = np.unique(pid, return_inverse=True)
        for i in ids.tolist():
            if i not in self._cache:
                self._cache[i] = (self._data.charge(i), self._data.isVisible(i))
        table = np.array([self._cache[i] for i in ids.tolist()], dtype=np.float64).reshape(-1, 2)
        return table[inverse, 0], table[inverse, 1] > 0


# ------------------------------------------------------------------------------------------
# truth: resonances and their decay quarks


def _daughters(i: int, d1: np.ndarray, d2: np.ndarray) -> list[int]:
    """Event-local daughter indices of particle i (Pythia's daughter1/daughter2 convention)."""
    a, b = int(d1[i]), int(d2[i])
    if a <= 0:
        return []
    if b <= 0 or b == a:
        return [a]
    return list(range(a, b + 1)) if a < b else [a, b]


def _last_copy(i: int, pid: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> int:
    """Follow the carbon copies (recoil, shower) of particle i down to the one that decays."""
    while True:
        kids = _daughters(i, d1, d2)
        if len(kids) != 1 or pid[kids[0]] != pid[i]:
            return i
        i = kids[0]


def _decay_quarks(i: int, pid: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> list[int] | None:
    """Decay products of resonance i, through intermediate resonances (t -> bW -> bqq');
    None when one of them is not a quark (a leptonic decay)."""
    out: list[int] = []
    for k in _daughters(_last_copy(i, pid, d1, d2), d1, d2):
        if abs(pid[k]) in (TOP, Z, W, HIGGS):
            sub = _decay_quarks(k, pid, d1, d2)
            if sub is None:
                return None
            out += sub
        elif abs(pid[k]) in _QUARKS:
            out.append(k)
        else:
            return None
    return out if len(out) >= 2 else None


def _resonance_candidates(ev: _Events, e: int, pdg: int) -> list[tuple[int, list[int]]]:
    """(last copy, decay quarks) (event-local) of the hadronically decaying resonances |id| =
    pdg of event e."""
    lo, hi = ev.offsets[e], ev.offsets[e + 1]
    pid, d1, d2 = ev.pid[lo:hi], ev.daughter1[lo:hi], ev.daughter2[lo:hi]
    found = []
    for i in np.flatnonzero(np.abs(pid) == pdg).tolist():
        if i != _last_copy(i, pid, d1, d2) or not _daughters(i, d1, d2):
            continue  # only the copy that decays
        quarks = _decay_quarks(i, pid, d1, d2)
        if quarks is not None:
            found.append((i, quarks))
    return found


def _delta_r(p: np.ndarray, eta_j: float, phi_j: float) -> np.ndarray:
    _, eta, phi = pt_eta_phi(np.atleast_2d(p))
    return np.hypot(eta - eta_j, wrap_phi(phi - phi_j))


# ------------------------------------------------------------------------------------------
# clustering, selection, jet fields


def _cluster(
    p: np.ndarray, energy: np.ndarray, offsets: np.ndarray, radius: float, min_pt: float
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Anti-kT jets (:func:`simulation.jets.clustering.antikt`): their four-momenta (j, 4), event
    (j,) and per jet its constituents' flat indices; ordered by event, then by pT."""
    p4, event, const_offsets, const = antikt(p, energy, offsets, radius, min_pt, _WHO)
    members = np.split(const, const_offsets[1:-1]) if len(event) else []
    order = np.lexsort((-np.hypot(p4[:, 0], p4[:, 1]), event))
    return p4[order], event[order], [members[i] for i in order]


def _select(
    ev: _Events, p4: np.ndarray, jet_event: np.ndarray, cfg: JetsConfig, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """The kept jets of a batch: their indices (by event, then pT) and generator truth.

    Jets in the pT / eta window of ``cfg.kinematics``, at most ``max_jets_per_event`` per event,
    the hardest first; for a signal class each jet matched to a distinct resonance whose last
    copy and decay quarks all lie within Delta R < match radius of the jet axis.

    Returns:
        indices (n,) into p4, and truth (n, 4) = (pT GeV, eta, phi rad, mass GeV) of the matched
        resonance, or for QCD of the nearer outgoing parton of the hard process.
    """
    kin, py = cfg.kinematics, cfg.pythia
    radius = kin.radius if py.match_radius is None else py.match_radius
    pt_j, eta_j, phi_j = pt_eta_phi(p4[:, :3])
    passing = (pt_j >= kin.pt_min) & (pt_j < kin.pt_max) & (np.abs(eta_j) < kin.eta_max)
    pdg = RESONANCE[label]
    kept: list[int] = []
    truth: list[tuple[float, float, float, float]] = []

    def keep(j: int, k: int) -> None:
        pt, eta, phi = pt_eta_phi(ev.p[k])
        kept.append(j)
        truth.append((float(pt), float(eta), float(phi), float(ev.mass[k])))

    for e in np.unique(jet_event[passing]).tolist():
        lo, hi = int(ev.offsets[e]), int(ev.offsets[e + 1])
        jets = np.flatnonzero(passing & (jet_event == e)).tolist()  # hardest first
        if pdg is None:
            outgoing = lo + np.flatnonzero(np.abs(ev.status[lo:hi]) == _HARD_OUTGOING)
            for j in jets[: py.max_jets_per_event]:
                keep(j, int(outgoing[np.argmin(_delta_r(ev.p[outgoing], eta_j[j], phi_j[j]))]))
            continue
        taken: set[int] = set()
        for res, quarks in _resonance_candidates(ev, e, pdg):
            points = ev.p[lo + np.array([res, *quarks])]
            for j in jets:
                if j not in taken and np.all(_delta_r(points, eta_j[j], phi_j[j]) < radius):
                    taken.add(j)
                    keep(j, lo + res)
                    break
        # more than max_jets_per_event matched: keep the hardest
        drop = sorted(taken)[py.max_jets_per_event :]
        for j in drop:
            i = kept.index(j)
            del kept[i], truth[i]
    order = np.argsort(kept, kind="stable")
    return np.asarray(kept, np.int64)[order], np.array(truth, np.float64).reshape(-1, 4)[order]


def _jet_sample(
    ev: _Events,
    charge: np.ndarray,
    p4: np.ndarray,
    members: list[np.ndarray],
    truth: np.ndarray,
    shard: _Shard,
    rng: np.random.Generator,
) -> JetSample:
    """The JetClass fields of n jets (p4 (n, 4), constituent lists ``members``) of one class."""
    cfg, det = shard.cfg, shard.cfg.detector
    n = len(p4)
    counts = np.array([len(m) for m in members], np.int64)
    idx = np.concatenate(members) if n else np.zeros(0, np.int64)
    jet = np.repeat(np.arange(n), counts)
    pt = np.hypot(ev.p[idx, 0], ev.p[idx, 1])
    by_pt = np.lexsort((-pt, jet))  # pT-ordered within each jet
    idx, pt = idx[by_pt], pt[by_pt]
    p, energy, pid, q = ev.p[idx], ev.energy[idx], np.abs(ev.pid[idx]), charge[idx]
    # The jet four-momentum is the sum of its constituents (FastJet's E-scheme jet, summed here
    # in constituent order so that the stored fields add up exactly).
    p_jet, e_jet = group_sum(p, jet, n), group_sum(energy, jet, n)
    pt_j, eta_j, phi_j = pt_eta_phi(p_jet)
    _, eta, phi = pt_eta_phi(p)
    deta = eta - eta_j[jet]
    dphi = wrap_phi(phi - phi_j[jet])
    charged = q != 0
    d0, dz = impact_parameters(ev.vertex[idx], p)
    d0err = np.where(charged, ip_resolution(pt, det.d0_res_const, det.d0_res_msc), 0.0)
    dzerr = np.where(charged, ip_resolution(pt, det.dz_res_const, det.dz_res_msc), 0.0)
    noise = rng.standard_normal((len(idx), 2)).T  # per particle (d0, dz): prefix-stable
    lepton = (pid == ELECTRON) | (pid == MUON)
    content = {
        "part_px": p[:, 0],
        "part_py": p[:, 1],
        "part_pz": p[:, 2],
        "part_energy": energy,
        "part_deta": deta * np.where(eta_j[jet] < 0, -1.0, 1.0),
        "part_dphi": dphi,
        "part_d0val": np.where(charged, d0 + d0err * noise[0], 0.0),
        "part_d0err": d0err,
        "part_dzval": np.where(charged, dz + dzerr * noise[1], 0.0),
        "part_dzerr": dzerr,
        "part_charge": q,
        "part_isChargedHadron": charged & ~lepton,
        "part_isNeutralHadron": ~charged & (pid != PHOTON),
        "part_isPhoton": pid == PHOTON,
        "part_isElectron": pid == ELECTRON,
        "part_isMuon": pid == MUON,
    }
    content = {k: np.asarray(content[k], np.float32) for k in PARTICLE_FIELDS}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    taus, sdmass = jet_substructure(offsets, p, deta, dphi, energy, cfg.kinematics.radius)
    arrays = jet_arrays(pt_j, eta_j, phi_j, e_jet, counts, sdmass, p_jet, taus)
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    arrays["truth/label"] = np.full(n, shard.label, np.int16)
    for i, name in enumerate(cfg.classes):
        arrays[f"truth/label_{name}"] = np.full(n, i == shard.label, np.int8)
    for k, name in enumerate(("gen_pt", "gen_eta", "gen_phi", "gen_mass")):
        arrays[f"truth/{name}"] = truth[:, k].astype(np.float32)
    return JetSample(arrays, JaggedGroup(offsets, content))


# ------------------------------------------------------------------------------------------
# shards and the whole sample


@dataclass(frozen=True)
class _Shard:
    """One unit of work: n_jets jets of class index ``label`` of cfg.classes, seeded by entropy."""

    cfg: JetsConfig
    label: int
    n_jets: int
    entropy: tuple[int, ...]


def _seeds(shard: _Shard) -> tuple[int, np.random.Generator]:
    """The shard's Pythia seed (in [1, PYTHIA_SEED_MAX]) and its numpy generator (smearing)."""
    seeds = np.random.SeedSequence(list(shard.entropy))
    pythia_seed = int(seeds.generate_state(1)[0]) % PYTHIA_SEED_MAX + 1
    return pythia_seed, np.random.default_rng(seeds.spawn(1)[0])


def _visible(ev: _Events, table: _ParticleTable, cfg: JetsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the particles to cluster, charge (k,) of all particles in units of e).

    Final-state, visible (no neutrinos), finite, pT > particle_pt_min and > 0 (FastJet's rapidity
    of a pT = 0 particle is NaN), |eta| < particle_eta_max.
    """
    py = cfg.pythia
    charge, visible = table.lookup(ev.pid)
    finite = np.isfinite(ev.p).all(axis=1) & np.isfinite(ev.energy)
    with np.errstate(invalid="ignore"):
        pt, eta, _ = pt_eta_phi(np.where(finite[:, None], ev.p, 0.0))
    keep = (ev.status > 0) & visible & finite & (pt > 0) & (pt > py.particle_pt_min)
    keep &= np.abs(eta) < py.particle_eta_max
    return np.flatnonzero(keep), charge


def generate_shard(shard: _Shard) -> JetSample:
    """shard.n_jets jets of one class from a Pythia instance of its own (a worker's task).

    Raises:
        PythiaEfficiencyError: fewer jets than asked after max_tries x n_jets events.
        ValueError / RuntimeError: Pythia refused a setting / failed to initialise.
    """
    cfg, py = shard.cfg, shard.cfg.pythia
    label = cfg.classes[shard.label]
    pythia_seed, rng = _seeds(shard)
    pythia = _pythia8().Pythia("", False)
    for line in pythia_settings(cfg, label, pythia_seed):
        if not pythia.readString(line):
            raise ValueError(f"Pythia refused the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for class {label}")
    table = _ParticleTable(pythia.particleData)
    samples, n_done, n_events = [], 0, 0
    while n_done < shard.n_jets:
        if n_events >= py.max_tries * shard.n_jets:
            lo, hi = cfg.pthat_window
            kin = cfg.kinematics
            raise PythiaEfficiencyError(
                f"class {label}: {n_done} of {shard.n_jets} jets after {n_events} Pythia events "
                f"(pT-hat {lo:g}-{hi:g} GeV, jets {kin.pt_min:g}-{kin.pt_max:g} GeV, "
                f"|eta| < {kin.eta_max:g}); widen pythia.pthat_min / pthat_max or raise "
                f"pythia.max_tries ({py.max_tries})"
            )
        n_batch = min(py.batch_events, shard.n_jets - n_done)
        ev = _events(pythia.nextBatch(n_batch))
        n_events += n_batch
        flat, charge = _visible(ev, table, cfg)
        offsets = np.searchsorted(flat, ev.offsets).astype(np.int64)
        p4, jet_event, members = _cluster(
            ev.p[flat], ev.energy[flat], offsets, cfg.kinematics.radius, cfg.kinematics.pt_min
        )
        chosen, truth = _select(ev, p4, jet_event, cfg, label)
        chosen, truth = chosen[: shard.n_jets - n_done], truth[: shard.n_jets - n_done]
        if chosen.size:
            const = [flat[members[j]] for j in chosen.tolist()]
            samples.append(_jet_sample(ev, charge, p4[chosen], const, truth, shard, rng))
            n_done += chosen.size
    return concatenate(samples) if samples else _empty(shard)


def _empty(shard: _Shard) -> JetSample:
    """A sample of zero jets with every field (dtype and layout of real ones)."""
    ev = _Events(
        offsets=np.zeros(1, np.int64),
        pid=np.zeros(0, np.int64),
        status=np.zeros(0, np.int64),
        daughter1=np.zeros(0, np.int64),
        daughter2=np.zeros(0, np.int64),
        p=np.zeros((0, 3)),
        energy=np.zeros(0),
        mass=np.zeros(0),
        vertex=np.zeros((0, 3)),
    )
    rng = np.random.default_rng(0)  # draws nothing
    return _jet_sample(ev, np.zeros(0), np.zeros((0, 4)), [], np.zeros((0, 4)), shard, rng)


def _take(sample: JetSample, rows: np.ndarray) -> JetSample:
    """The jets ``rows`` of a sample, in that order."""
    offsets = sample.particles.offsets
    counts = offsets[rows + 1] - offsets[rows]
    new = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    elems = np.repeat(offsets[rows] - new[:-1], counts) + np.arange(new[-1])
    content = {k: v[elems] for k, v in sample.particles.content.items()}
    return JetSample({k: v[rows] for k, v in sample.arrays.items()}, JaggedGroup(new, content))


def _n_workers(workers: int | None) -> int:
    if workers is not None:
        return workers
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (batch slots)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run(shards: list[_Shard], workers: int) -> Iterator[tuple[int, JetSample]]:
    """(shard index, sample) as shards finish: in this process for one worker, else in spawned
    processes (fresh interpreters: no state of JAX or of another Pythia is inherited)."""
    if workers <= 1 or len(shards) <= 1:
        for i, shard in enumerate(shards):
            yield i, generate_shard(shard)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(shards))) as pool:
        yield from pool.imap_unordered(_indexed_shard, list(enumerate(shards)))


def _indexed_shard(item: tuple[int, _Shard]) -> tuple[int, JetSample]:
    return item[0], generate_shard(item[1])


def class_counts(n_jets: int, n_classes: int) -> list[int]:
    """Jets of each class when labels cycle (jet j has class j mod n_classes)."""
    return [len(range(c, n_jets, n_classes)) for c in range(n_classes)]


def simulate_pythia(
    cfg: JetsConfig,
    n_jets: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> JetSample:
    """``n_jets`` Pythia jets of cfg.classes (labels cycling, as the toy's), reproducibly.

    Args:
        seed: the split's seed (>= 0); shard s of class c draws from SeedSequence((seed,
            pythia.seed_offset, JetClass index of c, s)).
        progress: called as progress(jets_done, n_jets) after every finished shard.

    Returns:
        A :class:`JetSample` with the toy's fields (see :func:`simulation.jets.simulate`):
        jet/* (n,) float32 (the jet four-momentum is the sum of its constituents), truth/label,
        truth/label_<Class>, truth/gen_{pt, eta, phi, mass} and the 16 part_* fields.

    Raises:
        ImportError: pythia8mc or fastjet is not installed (``pip install 'reco[pythia,jets]'``).
        PythiaEfficiencyError: a shard found too few jets (see ``pythia.max_tries``).
    """
    if n_jets < 0:
        raise ValueError(f"n_jets: must be >= 0, got {n_jets}")
    _pythia8()  # fail before starting workers when an optional package is missing
    require_fastjet(_WHO)
    counts = class_counts(n_jets, len(cfg.classes))
    size = cfg.pythia.shard_size
    shards = []
    for c, name in enumerate(cfg.classes):
        for k, start in enumerate(range(0, counts[c], size)):
            entropy = (seed, cfg.pythia.seed_offset, JETCLASS_LABELS.index(name), k)
            shards.append(_Shard(cfg, c, min(size, counts[c] - start), entropy))
    results: dict[int, JetSample] = {}
    done = 0
    for i, sample in _run(shards, _n_workers(cfg.pythia.workers)):
        results[i] = sample
        done += sample.n_jets
        if progress is not None:
            progress(done, n_jets)
    if not shards:
        return _empty(_Shard(cfg, 0, 0, (seed,)))
    by_class = concatenate([results[i] for i in range(len(shards))])  # class-major
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.arange(n_jets)
    return _take(by_class, first[j % len(cfg.classes)] + j // len(cfg.classes))
