"""The toy jet simulator: class labels -> JetClass-like jets (docs/jets.md, PART.md schema).

Chain per chunk of jets, vectorised over all jets and particles: hard process (resonance decay
or a single QCD parton) -> angular-ordered shower -> hadronisation and heavy-hadron decays ->
resonance-mass restoration (rest-frame momentum rescaling, as parton showers do) -> detector
smearing and thresholds -> jet of the constituents within Delta R < R of the axis -> substructure.
Chunk i draws from SeedSequence(seed, spawn_key=(i,)), so the same seed gives identical jets.
Labels cycle through cfg.classes (jet j has class j mod K), so every sample is balanced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.events import JaggedGroup
from pipeline.jet_features import pad_jagged
from simulation.jets.config import JetsConfig
from simulation.jets.decays import BOTTOM, CHARM, hard_process
from simulation.jets.detector import detector_response, is_charged
from simulation.jets.hadronisation import (
    ELECTRON,
    MUON,
    NEUTRAL,
    PHOTON,
    decay_vertices,
    hadronise,
    underlying_event,
)
from simulation.jets.kinematics import (
    boost,
    group_sum,
    invariant_mass,
    pt_eta_phi,
    rescale_to_mass,
    wrap_phi,
)
from simulation.jets.shower import shower
from simulation.jets.substructure import nsubjettiness, softdrop_mass

PARTICLE_FIELDS = (
    "part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
    "part_d0val", "part_d0err", "part_dzval", "part_dzerr", "part_charge",
    "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
    "part_isMuon",
)  # fmt: skip
JET_FIELDS = (
    "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
    "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4",
)  # fmt: skip
PARTICLE_GROUP = "part"


@dataclass(frozen=True)
class JetSample:
    """Simulated jets: event arrays (``jet/*``, ``truth/*``, each (n,)) and the particle lists."""

    arrays: dict[str, np.ndarray]
    particles: JaggedGroup

    @property
    def n_jets(self) -> int:
        return self.particles.n_events

    @property
    def jagged(self) -> dict[str, JaggedGroup]:
        """The ``jagged=`` argument of :func:`pipeline.events.write_events`."""
        return {PARTICLE_GROUP: self.particles}


def generate_particles(
    rng: np.random.Generator, cfg: JetsConfig, label: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Generator-level particles of n jets of class indices `label` (n,).

    Returns the hard process (see decays.hard_process) and the particles: jet (k,) index,
    p (k, 3) GeV, mass (k,) GeV, species (k,) codes, vertex (k, 3) mm; the jet's own particles
    first (their four-momentum sums to the generated one), then the underlying event.
    """
    hp = hard_process(rng, cfg, label)
    m0 = len(hp["parton_p"])
    p, flav, origin = shower(
        rng, hp["parton_p"], hp["parton_flavour"], hp["parton_theta_max"], cfg.shower
    )
    heavy = (np.arange(len(p)) < m0) & np.isin(flav, (BOTTOM, CHARM))
    # Hadronise resonance decays in the resonance rest frame (string-like: soft hadrons follow the
    # colour-singlet system instead of spraying out in the lab), then restore the resonance mass
    # (rest-frame momentum rescaling, as showers do) and boost back to the jet momentum.
    beta = np.where(hp["resonance"][:, None], hp["p"] / hp["energy"][:, None], 0.0)
    parton_jet = hp["parton_jet"][origin]
    p_frame, _ = boost(p, np.linalg.norm(p, axis=-1), -beta[parton_jet])
    # QCD jets fragment in the lab (their colour partner is far away). The multiplicity scales
    # lab_energy_scale / resonance_energy_scale map a parton's lab / rest-frame energy to the
    # energy its hadron multiplicity grows with (both 1 by default; the Pythia tune raises the
    # resonance one, docs/jets.md).
    hcfg = cfg.hadronisation
    scale = np.where(
        hp["resonance"][parton_jet], hcfg.resonance_energy_scale, hcfg.lab_energy_scale
    )
    had = hadronise(rng, p_frame, flav, heavy, scale, hcfg)
    jet = parton_jet[had["parent"]]
    p_had = had["p"].copy()
    res_jets = np.flatnonzero(hp["resonance"])
    compact = np.full(len(label), -1)
    compact[res_jets] = np.arange(len(res_jets))
    in_res = compact[jet] >= 0
    p_rest, e_rest = rescale_to_mass(
        p_had[in_res], had["mass"][in_res], compact[jet[in_res]], hp["mass"][res_jets]
    )
    p_had[in_res], _ = boost(p_rest, e_rest, beta[jet[in_res]])
    vertex = decay_vertices(p_had, had["heavy_id"], had["proper_length"], had["heavy_mass"])
    ue = underlying_event(rng, hp["axis"], cfg.kinematics.radius, cfg.hadronisation)
    particles = {
        "jet": np.concatenate([jet, ue["jet"]]),
        "p": np.concatenate([p_had, ue["p"]]),
        "mass": np.concatenate([had["mass"], ue["mass"]]),
        "species": np.concatenate([had["species"], ue["species"]]),
        "vertex": np.concatenate([vertex, np.zeros_like(ue["p"])]),
    }
    return hp, particles


def _cluster(p: np.ndarray, jet: np.ndarray, axis: np.ndarray, radius: float) -> np.ndarray:
    """Constituents (bool (k,)) within Delta R < radius of the jet axis: a stable-cone iteration.

    Pass 1 uses the generated direction `axis` (n, 3), later passes the momentum sum of the
    previous pass (an anti-kT jet is a cone of radius R around its own axis for hard jets); a last
    pass only removes particles, so every constituent ends up within ~R of the final axis.
    """
    n = len(axis)
    _, eta, phi = pt_eta_phi(p)
    keep = np.ones(len(p), bool)
    ref = axis
    for i in range(4):
        _, eta_j, phi_j = pt_eta_phi(ref)
        inside = (eta - eta_j[jet]) ** 2 + wrap_phi(phi - phi_j[jet]) ** 2 < radius * radius
        keep = inside if i < 3 else keep & inside
        ref = group_sum(np.where(keep[:, None], p, 0.0), jet, n)
    return keep


def jet_substructure(
    offsets: np.ndarray,
    p: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    energy: np.ndarray,
    radius: float,
    n_buckets: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """tau_1..4 (n, 4) and soft-drop mass (n,) GeV of n jets from their flat constituents.

    Args:
        offsets: Int[Array, "n+1"] constituent offsets of the jets.
        p: Float[Array, "m 3"] constituent momenta (px, py, pz), GeV.
        deta, dphi: Float[Array, "m"] constituent eta and (wrapped) phi minus the jet's.
        energy: Float[Array, "m"] constituent energies, GeV.
        radius: jet radius R (the N-subjettiness normalisation R0).
        n_buckets: jets are padded in this many buckets of similar multiplicity, which keeps
            the padding small.

    The definitions of :mod:`simulation.jets.substructure`, shared by the toy and the readers of
    real files, so toy and real jets are compared on the same observables.
    """
    counts = np.diff(offsets)
    n = counts.size
    taus, sdmass = np.zeros((n, 4)), np.zeros(n)
    flat = {
        "pt": np.hypot(p[:, 0], p[:, 1]), "deta": deta, "dphi": dphi,
        "px": p[:, 0], "py": p[:, 1], "pz": p[:, 2], "e": energy,
    }  # fmt: skip
    order = np.argsort(counts, kind="stable")
    for rows in np.array_split(order, min(n_buckets, max(n, 1))):
        if rows.size == 0:
            continue
        sub_off = np.concatenate([[0], np.cumsum(counts[rows])])
        src = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows])
        pad = max(int(counts[rows].max()), 1)
        x, mask = pad_jagged(sub_off, {k: v[src] for k, v in flat.items()}, pad, list(flat))
        pt, de, dp = x[..., 0], x[..., 1], x[..., 2]
        taus[rows] = nsubjettiness(pt, de, dp, mask, 4, radius)
        sdmass[rows] = softdrop_mass(x[..., 3:7], pt, de, dp, mask)
    return taus, sdmass


def jet_arrays(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    energy: np.ndarray,
    counts: np.ndarray,
    sdmass: np.ndarray,
    p_jet: np.ndarray,
    taus: np.ndarray,
) -> dict[str, np.ndarray]:
    """The ``jet/*`` datasets of n jets: kinematics (n,) in GeV, constituent counts (n,),
    soft-drop mass (n,), momenta (n, 3) for the mass, and tau_1..4 (n, 4)."""
    mass = invariant_mass(p_jet, energy)
    return {
        "jet/jet_pt": pt,
        "jet/jet_eta": eta,
        "jet/jet_phi": phi,
        "jet/jet_energy": energy,
        "jet/jet_nparticles": counts,
        "jet/jet_sdmass": sdmass,
        "jet/jet_mass": mass,
    } | {f"jet/jet_tau{k + 1}": taus[:, k] for k in range(4)}


def _simulate_chunk(
    cfg: JetsConfig, start: int, n: int, seeds: np.random.SeedSequence
) -> JetSample:
    rng = np.random.default_rng(seeds)
    n_cls = len(cfg.classes)
    label = (start + np.arange(n)) % n_cls
    hp, gen = generate_particles(rng, cfg, label)
    det = detector_response(rng, gen["p"], gen["mass"], gen["species"], gen["vertex"], cfg.detector)
    jet, p, energy = gen["jet"], det["p"], det["energy"]
    seen = np.flatnonzero(det["keep"])
    in_jet = _cluster(p[seen], jet[seen], hp["axis"], cfg.kinematics.radius)
    idx = seen[in_jet]
    pt = np.hypot(p[idx, 0], p[idx, 1])
    idx = idx[np.lexsort((-pt, jet[idx]))]  # by jet, pT-ordered within a jet
    jet, p, energy, species = jet[idx], p[idx], energy[idx], gen["species"][idx]

    p_jet = group_sum(p, jet, n)
    e_jet = group_sum(energy, jet, n)
    pt_j, eta_j, phi_j = pt_eta_phi(p_jet)
    _, eta, phi = pt_eta_phi(p)
    counts = np.bincount(jet, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    charged = is_charged(species)
    charge = np.where(charged, np.where(rng.random(len(idx)) < 0.5, 1.0, -1.0), 0.0)
    f32 = np.float32
    content = {
        "part_px": p[:, 0],
        "part_py": p[:, 1],
        "part_pz": p[:, 2],
        "part_energy": energy,
        "part_deta": (eta - eta_j[jet]) * np.sign(eta_j[jet]),
        "part_dphi": wrap_phi(phi - phi_j[jet]),
        "part_d0val": det["d0val"][idx],
        "part_d0err": det["d0err"][idx],
        "part_dzval": det["dzval"][idx],
        "part_dzerr": det["dzerr"][idx],
        "part_charge": charge,
        "part_isChargedHadron": species == 0,
        "part_isNeutralHadron": species == NEUTRAL,
        "part_isPhoton": species == PHOTON,
        "part_isElectron": species == ELECTRON,
        "part_isMuon": species == MUON,
    }
    content = {k: np.asarray(v, dtype=f32) for k, v in content.items()}

    taus, sdmass = jet_substructure(
        offsets, p, eta - eta_j[jet], content["part_dphi"], energy, cfg.kinematics.radius
    )
    arrays = jet_arrays(pt_j, eta_j, phi_j, e_jet, counts, sdmass, p_jet, taus)
    arrays = {k: v.astype(f32) for k, v in arrays.items()}
    arrays["truth/label"] = label.astype(np.int16)
    for i, name in enumerate(cfg.classes):
        arrays[f"truth/label_{name}"] = (label == i).astype(np.int8)
    gen_pt, gen_eta, gen_phi = pt_eta_phi(hp["p"])
    arrays |= {
        "truth/gen_pt": gen_pt.astype(f32),
        "truth/gen_eta": gen_eta.astype(f32),
        "truth/gen_phi": gen_phi.astype(f32),
        "truth/gen_mass": hp["mass"].astype(f32),
    }
    return JetSample(arrays, JaggedGroup(offsets, content))


def simulate_chunks(
    cfg: JetsConfig, n_jets: int, seed: int, chunks: range | None = None
) -> Iterator[JetSample]:
    """Yield the jets in chunks of at most cfg.chunk_size; concatenated, they are :func:`simulate`.

    ``chunks`` (a range of chunk indices: a shard, pipeline.shards) yields just those chunks,
    identical to the same chunks of the whole (chunk i has its own seed).
    """
    if n_jets < 0:
        raise ValueError(f"n_jets: must be >= 0, got {n_jets}")
    for i, start in enumerate(range(0, max(n_jets, 1), cfg.chunk_size)):
        if chunks is not None and i not in chunks:
            continue
        n = min(cfg.chunk_size, n_jets - start)
        yield _simulate_chunk(cfg, start, n, np.random.SeedSequence(seed, spawn_key=(i,)))


def concatenate(samples: list[JetSample]) -> JetSample:
    """Join samples: arrays concatenated, particle offsets shifted."""
    arrays = {k: np.concatenate([s.arrays[k] for s in samples]) for k in samples[0].arrays}
    shifts = np.cumsum([0] + [int(s.particles.offsets[-1]) for s in samples[:-1]])
    offsets = np.concatenate(
        [[0]] + [s.particles.offsets[1:] + d for s, d in zip(samples, shifts, strict=True)]
    ).astype(np.int64)
    content = {
        k: np.concatenate([s.particles.content[k] for s in samples])
        for k in samples[0].particles.content
    }
    return JetSample(arrays, JaggedGroup(offsets, content))


def simulate(cfg: JetsConfig, n_jets: int, seed: int) -> JetSample:
    """Simulate `n_jets` jets (classes cycling through cfg.classes), reproducibly from `seed`.

    Returns:
        arrays: jet/jet_{pt, eta, phi, energy, mass, sdmass} (GeV, rad), jet/jet_nparticles,
        jet/jet_tau1..4 (n,) float32; truth/label (n,) int16 (index into cfg.classes),
        truth/label_<Class> (n,) int8 one-hot, truth/gen_{pt, eta, phi, mass} (n,) float32 of the
        generated resonance or parton. particles: offsets (n + 1,) and the PARTICLE_FIELDS (flat,
        float32; px, py, pz, energy GeV; deta, dphi rad; d0, dz values and errors mm), pT-ordered
        within each jet. The jet four-momentum is the sum of its constituents.
    """
    return concatenate(list(simulate_chunks(cfg, n_jets, seed)))
