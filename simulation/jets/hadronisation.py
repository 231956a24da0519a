"""Hadronisation of final partons and heavy-flavour hadron decays (a toy, fully vectorised).

Light fragmentation: a parton of energy E gives n ~ max(1, Poisson(a ln(1 + E/GeV))) hadrons
(a x gluon_factor for gluons) sharing its momentum with flat-Dirichlet fractions plus Gaussian
transverse kicks whose sum is zero, so each parton's three-momentum is conserved exactly.
Species: photons (pi0 -> gamma gamma), long-lived neutral hadrons (K0L / n), a few leptons, the rest
charged pions. Heavy flavour: the b (c) quark gives a B (D) hadron carrying a Beta-distributed
fraction of its momentum (mean ~0.70 / 0.55), the rest fragments like a light quark; the heavy
hadron flies L = (p / M) c tau Exp(1) and decays isotropically in its rest frame into a few
charged pions, photons, K0L and, in semileptonic decays, a lepton and an invisible neutrino.
Long-lived light hadrons (V0s, off by default): fractions of the light hadrons are K0S or Lambda,
which fly (p / M) c tau Exp(1) and decay isotropically into two bodies: pi+ pi- (69.2 %) or
pi0 pi0 (each pi0 a photon here) for the K0S, p pi- (63.9 %) or n pi0 for the Lambda. Their
charged daughters are the displaced tracks (|d0| of millimetres) that Pythia's decays give.
Species codes: 0 charged hadron, 1 neutral hadron, 2 photon, 3 electron, 4 muon, 5 neutrino.
"""

from __future__ import annotations

import numpy as np

from simulation.jets.config import HadronisationConfig
from simulation.jets.decays import BOTTOM, CHARM, GLUON, two_body_decay
from simulation.jets.kinematics import (
    boost,
    group_sum,
    isotropic_directions,
    perpendicular_basis,
    rescale_to_mass,
)

CHARGED, NEUTRAL, PHOTON, ELECTRON, MUON, NEUTRINO = 0, 1, 2, 3, 4, 5
M_PION, M_K0L, M_NEUTRON, M_ELECTRON, M_MUON = 0.13957, 0.49761, 0.93957, 0.000511, 0.10566
M_B, M_D = 5.279, 1.867  # GeV, heavy-hadron masses (B0/B+, D0/D+ average)
M_K0S, M_LAMBDA, M_PROTON = 0.49761, 1.11568, 0.93827  # GeV (PDG)
K0S_CHARGED_BR, LAMBDA_CHARGED_BR = 0.692, 0.639  # K0S -> pi+ pi-, Lambda -> p pi- (PDG)


def _species(rng: np.random.Generator, k: int, cfg: HadronisationConfig) -> np.ndarray:
    u = rng.random(k)
    species = np.full(k, CHARGED, np.int8)
    c1 = cfg.photon_fraction
    c2 = c1 + cfg.neutral_fraction
    c3 = c2 + cfg.lepton_fraction
    species[u < c1] = PHOTON
    species[(u >= c1) & (u < c2)] = NEUTRAL
    species[(u >= c2) & (u < c3)] = np.where(
        rng.random(int(((u >= c2) & (u < c3)).sum())) < 0.5, ELECTRON, MUON
    )
    return species


def species_mass(rng: np.random.Generator, species: np.ndarray) -> np.ndarray:
    """Masses (GeV) of species codes; neutral hadrons are K0L or neutrons, half each."""
    mass = np.zeros(species.shape)
    mass[species == CHARGED] = M_PION
    neutral = species == NEUTRAL
    mass[neutral] = np.where(rng.random(int(neutral.sum())) < 0.5, M_K0L, M_NEUTRON)
    mass[species == ELECTRON] = M_ELECTRON
    mass[species == MUON] = M_MUON
    return mass


def fragment(
    rng: np.random.Generator,
    p: np.ndarray,
    is_gluon: np.ndarray,
    scale: np.ndarray,
    cfg: HadronisationConfig,
) -> dict[str, np.ndarray]:
    """Light fragmentation of partons p (m, 3) GeV into hadrons.

    The multiplicity grows with ln(1 + scale * E / hadron_e0); `scale` (m,) maps the parton energy
    to that of its colour-singlet system's frame (1 for partons already in that frame).

    Returns parent (k,) parton index, p (k, 3) GeV (sum per parent = parent momentum), species
    (k,) int8, mass (k,) GeV.
    """
    e = np.linalg.norm(p, axis=-1)
    mean = (
        cfg.hadrons_per_log_e
        * np.log1p(scale * e / cfg.hadron_e0)
        * np.where(is_gluon, cfg.gluon_factor, 1.0)
    )
    n = np.maximum(rng.poisson(mean), 1)
    parent = np.repeat(np.arange(len(p)), n)
    w = rng.gamma(cfg.fragmentation_shape, size=parent.size)
    x = w / group_sum(w, parent, len(p))[parent]
    u, v = perpendicular_basis(p / np.maximum(e, 1e-12)[:, None])
    kick = rng.normal(0.0, cfg.kick_sigma, (parent.size, 2))
    kick -= (group_sum(kick, parent, len(p)) / n[:, None])[parent]  # zero sum per parton
    hadron_p = x[:, None] * p[parent] + kick[:, :1] * u[parent] + kick[:, 1:] * v[parent]
    species = _species(rng, parent.size, cfg)
    return {"parent": parent, "p": hadron_p, "species": species, "mass": species_mass(rng, species)}


def heavy_hadron_decay(
    rng: np.random.Generator, p: np.ndarray, flavour: np.ndarray, cfg: HadronisationConfig
) -> dict[str, np.ndarray]:
    """Decay heavy hadrons of momenta p (h, 3) GeV, flavour BOTTOM or CHARM (h,).

    Returns parent (k,) index, p (k, 3) GeV, species, mass (GeV) of the decay products, and
    per product the proper decay length c t (mm, Exp(c tau)) and mass (GeV) of its parent; the
    decay vertex follows from the parent's final momentum (:func:`decay_vertices`).
    """
    h = len(p)
    is_b = flavour == BOTTOM
    m_had = np.where(is_b, M_B, M_D)
    mean = np.where(is_b, cfg.b_decay_products, cfg.c_decay_products)
    semi = rng.random(h) < cfg.semileptonic_fraction
    n = 2 + rng.poisson(mean - 2.0) + semi  # + the neutrino of a semileptonic decay
    n = np.minimum(n, np.where(is_b, 12, 6))
    parent = np.repeat(np.arange(h), n)
    first = np.repeat(np.cumsum(n) - n, n)
    slot = np.arange(parent.size) - first
    species = _species(rng, parent.size, cfg)
    species[species >= ELECTRON] = CHARGED  # leptons only from the semileptonic slot below
    lepton = semi[parent] & (slot == 0)
    species[lepton] = np.where(rng.random(int(lepton.sum())) < 0.5, ELECTRON, MUON)
    species[semi[parent] & (slot == 1)] = NEUTRINO
    mass = species_mass(rng, species)
    mass[species == NEUTRAL] = M_K0L
    # Kinematically closed decays: turn neutrals into photons where the masses would not fit.
    heavy = group_sum(mass, parent, h) > 0.8 * m_had
    to_photon = heavy[parent] & (species == NEUTRAL)
    species[to_photon], mass[to_photon] = PHOTON, 0.0
    # Isotropic momenta with zero sum, scaled to the hadron mass in its rest frame.
    q = rng.exponential(size=parent.size)[:, None] * isotropic_directions(rng, parent.size)
    q -= (group_sum(q, parent, h) / n[:, None])[parent]
    q, e_rest = rescale_to_mass(q, mass, parent, m_had)
    e_had = np.sqrt(np.sum(p * p, axis=-1) + m_had**2)
    q_lab, _ = boost(q, e_rest, (p / e_had[:, None])[parent])
    # Decay length: (p / M) c tau Exp(1); c hadrons pick D0 / D+ / Ds lifetimes.
    c_ctau = np.asarray(cfg.c_ctau)[
        rng.choice(
            len(cfg.c_ctau), h, p=np.asarray(cfg.c_species_fractions) / sum(cfg.c_species_fractions)
        )
    ]
    ctau = np.where(is_b, cfg.b_ctau, c_ctau)
    proper = ctau * rng.exponential(size=h)
    return {
        "parent": parent,
        "p": q_lab,
        "species": species,
        "mass": mass,
        "proper_length": proper[parent],
        "heavy_mass": m_had[parent],
    }


def v0_decays(
    rng: np.random.Generator, had: dict[str, np.ndarray], cfg: HadronisationConfig
) -> dict[str, np.ndarray]:
    """Turn fractions cfg.k0s_fraction / cfg.lambda_fraction of the light hadrons `had` (the
    output of :func:`fragment`) into K0S / Lambda and replace each by its two decay products.

    Returns `had`'s fields for the prompt hadrons followed by the daughters, plus v0_id (k,)
    (the V0 a daughter comes from, -1 if prompt), proper_length (k,) mm (c t, Exp(c tau)) and
    v0_mass (k,) GeV of that V0 (0 if prompt), for :func:`decay_vertices`. Each V0's
    three-momentum is its daughters' sum.
    """
    k = len(had["p"])
    u = rng.random(k)
    kind = np.where(u < cfg.k0s_fraction, 1, 0)
    kind[(u >= cfg.k0s_fraction) & (u < cfg.k0s_fraction + cfg.lambda_fraction)] = 2
    v0 = np.flatnonzero(kind > 0)
    prompt = np.flatnonzero(kind == 0)
    is_k = kind[v0] == 1
    m_v0 = np.where(is_k, M_K0S, M_LAMBDA)
    charged = rng.random(v0.size) < np.where(is_k, K0S_CHARGED_BR, LAMBDA_CHARGED_BR)
    # Daughters 1, 2: K0S -> pi pi (or two photons), Lambda -> p pi (or n and a photon).
    sp1 = np.where(charged, CHARGED, np.where(is_k, PHOTON, NEUTRAL)).astype(np.int8)
    sp2 = np.where(charged, CHARGED, PHOTON).astype(np.int8)
    m1 = np.where(is_k, np.where(charged, M_PION, 0.0), np.where(charged, M_PROTON, M_NEUTRON))
    m2 = np.where(charged, M_PION, 0.0)
    q1, q2 = two_body_decay(rng, m_v0, m1, m2)
    p_v0 = had["p"][v0]
    beta = p_v0 / np.sqrt(np.sum(p_v0 * p_v0, axis=-1) + m_v0 * m_v0)[:, None]
    d1, _ = boost(q1, np.sqrt(np.sum(q1 * q1, axis=-1) + m1 * m1), beta)
    d2, _ = boost(q2, np.sqrt(np.sum(q2 * q2, axis=-1) + m2 * m2), beta)
    ctau = np.where(is_k, cfg.k0s_ctau, cfg.lambda_ctau) * rng.exponential(size=v0.size)
    n_p, n_v = prompt.size, v0.size
    return {
        "parent": np.concatenate([had["parent"][prompt], had["parent"][v0], had["parent"][v0]]),
        "p": np.concatenate([had["p"][prompt], d1, d2]),
        "species": np.concatenate([had["species"][prompt], sp1, sp2]),
        "mass": np.concatenate([had["mass"][prompt], m1, m2]),
        "v0_id": np.concatenate([np.full(n_p, -1), np.arange(n_v), np.arange(n_v)]),
        "proper_length": np.concatenate([np.zeros(n_p), ctau, ctau]),
        "v0_mass": np.concatenate([np.zeros(n_p), m_v0, m_v0]),
    }


def decay_vertices(
    p: np.ndarray, heavy_id: np.ndarray, proper_length: np.ndarray, heavy_mass: np.ndarray
) -> np.ndarray:
    """Production vertices (k, 3) mm: heavy-hadron decay points, the origin for prompt particles.

    The heavy hadron's momentum is the sum of its decay products' momenta p (k, 3) GeV (grouped by
    heavy_id (k,), -1 for prompt particles); it flies (p_H / M_H) * proper_length.
    """
    vertex = np.zeros_like(p)
    sel = heavy_id >= 0
    if not sel.any():
        return vertex
    ids = heavy_id[sel]
    p_h = group_sum(p[sel], ids, int(ids.max()) + 1)[ids]
    vertex[sel] = p_h / heavy_mass[sel, None] * proper_length[sel, None]
    return vertex


def hadronise(
    rng: np.random.Generator,
    p: np.ndarray,
    flavour: np.ndarray,
    heavy: np.ndarray,
    scale: np.ndarray,
    cfg: HadronisationConfig,
) -> dict[str, np.ndarray]:
    """All final partons (m, 3) GeV -> hadrons.

    Args:
        flavour: (m,) codes; heavy: (m,) bool, True for the b / c quark that makes the heavy
            hadron (the leading heavy quark after the shower); scale: (m,) multiplicity energy
            scale (see :func:`fragment`).

    Returns:
        parent (k,) parton index, p (k, 3) GeV, species (k,) int8, mass (k,) GeV; heavy_id (k,)
        the decaying hadron (heavy hadron or V0) a particle comes from (-1 if prompt),
        proper_length (k,) mm and heavy_mass (k,) GeV of that hadron (0 if prompt), for
        :func:`decay_vertices`. Three-momentum is conserved parton by parton.
    """
    frac = np.zeros(len(p))
    is_b = heavy & (flavour == BOTTOM)
    is_c = heavy & (flavour == CHARM)
    for sel, mean in ((is_b, cfg.b_mean_fraction), (is_c, cfg.c_mean_fraction)):
        # Beta(a, b) with mean a / (a + b) and a + b = 10: a peaked, hard fragmentation.
        frac[sel] = rng.beta(10.0 * mean, 10.0 * (1.0 - mean), int(sel.sum()))
    light = fragment(rng, p * (1.0 - frac)[:, None], flavour == GLUON, scale, cfg)
    hv = np.flatnonzero(heavy)
    dec = heavy_hadron_decay(rng, p[hv] * frac[hv, None], flavour[hv], cfg)
    if cfg.k0s_fraction > 0 or cfg.lambda_fraction > 0:  # off: no draws, the default stream
        light = v0_decays(rng, light, cfg)
        # V0s are decaying hadrons numbered after the heavy ones.
        light_id = np.where(light["v0_id"] >= 0, light["v0_id"] + hv.size, -1)
        light_length, light_mass = light["proper_length"], light["v0_mass"]
    else:
        light_id = np.full(len(light["p"]), -1)
        light_length = light_mass = np.zeros(len(light["p"]))
    return {
        "parent": np.concatenate([light["parent"], hv[dec["parent"]]]),
        "p": np.concatenate([light["p"], dec["p"]]),
        "species": np.concatenate([light["species"], dec["species"]]),
        "mass": np.concatenate([light["mass"], dec["mass"]]),
        "heavy_id": np.concatenate([light_id, dec["parent"]]),
        "proper_length": np.concatenate([light_length, dec["proper_length"]]),
        "heavy_mass": np.concatenate([light_mass, dec["heavy_mass"]]),
    }


def underlying_event(
    rng: np.random.Generator, axis: np.ndarray, radius: float, cfg: HadronisationConfig
) -> dict[str, np.ndarray]:
    """Soft underlying-event particles, uniform in the eta-phi disc of `radius` around each axis.

    Args:
        axis: (n, 3) jet directions. Returns jet (k,) index, p (k, 3) GeV, species, mass (GeV).
    """
    n = len(axis)
    counts = rng.poisson(cfg.ue_density * np.pi * radius * radius, n)
    jet = np.repeat(np.arange(n), counts)
    eta_j = np.arcsinh(axis[:, 2] / np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-12))
    phi_j = np.arctan2(axis[:, 1], axis[:, 0])
    r = radius * np.sqrt(rng.random(jet.size))
    a = rng.uniform(0.0, 2.0 * np.pi, jet.size)
    eta = eta_j[jet] + r * np.cos(a)
    phi = phi_j[jet] + r * np.sin(a)
    pt = rng.exponential(cfg.ue_pt_mean, jet.size)
    p = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    species = _species(rng, jet.size, cfg)
    return {"jet": jet, "p": p, "species": species, "mass": species_mass(rng, species)}
