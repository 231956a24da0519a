"""Detector response: tracking and calorimeter smearing, thresholds, impact parameters.

A CMS-like parametrisation in the spirit of a Delphes card: charged particles (hadrons, e, mu) are
tracks with sigma(pT)/pT = a + b pT; photons and neutral hadrons are calorimeter deposits with
sigma(E)/E = s / sqrt(E) (+) c. Impact parameters of straight tracks from their production vertex
(the field's curvature is negligible over the ~mm flight of heavy hadrons), with resolutions
sigma = a (+) b / pT; neutral particles have d0 = dz = 0 and zero errors, as in JetClass.
"""

from __future__ import annotations

import numpy as np

from simulation.jets.config import DetectorConfig
from simulation.jets.hadronisation import CHARGED, ELECTRON, MUON, NEUTRAL, NEUTRINO, PHOTON


def is_charged(species: np.ndarray) -> np.ndarray:
    """True for species seen as tracks (charged hadrons, electrons, muons)."""
    return (species == CHARGED) | (species == ELECTRON) | (species == MUON)


def impact_parameters(vertex: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed transverse d0 and longitudinal dz (mm) of straight tracks to the beam line.

    A track from vertex (x, y, z) mm along p: d0 = (x p_y - y p_x) / pT (the point of closest
    transverse approach to the z axis), dz = z - (x p_x + y p_y) / pT * p_z / pT (its z there).
    """
    pt = np.maximum(np.hypot(p[:, 0], p[:, 1]), 1e-12)
    x, y, z = vertex[:, 0], vertex[:, 1], vertex[:, 2]
    d0 = (x * p[:, 1] - y * p[:, 0]) / pt
    dz = z - (x * p[:, 0] + y * p[:, 1]) / pt * p[:, 2] / pt
    return d0, dz


def ip_resolution(pt: np.ndarray, const: float, msc: float) -> np.ndarray:
    """Impact-parameter resolution sqrt(const^2 + (msc / pT)^2) in mm (pT in GeV)."""
    return np.hypot(const, msc / np.maximum(pt, 1e-3))


def detector_response(
    rng: np.random.Generator,
    p: np.ndarray,
    mass: np.ndarray,
    species: np.ndarray,
    vertex: np.ndarray,
    cfg: DetectorConfig,
) -> dict[str, np.ndarray]:
    """Smear particles (k,) and apply thresholds.

    Args:
        p: (k, 3) GeV true momenta; mass: (k,) GeV; species: (k,) codes; vertex: (k, 3) mm.

    Returns:
        keep (k,) bool (seen and above threshold; neutrinos never), smeared p (k, 3) and energy
        (k,) GeV, d0val, d0err, dzval, dzerr (k,) mm.
    """
    k = len(p)
    charged = is_charged(species)
    pt = np.hypot(p[:, 0], p[:, 1])
    energy = np.sqrt(np.sum(p * p, axis=-1) + mass * mass)
    rel = np.zeros(k)
    rel[charged] = cfg.track_res_const + cfg.track_res_slope * pt[charged]
    photon, neutral = species == PHOTON, species == NEUTRAL
    e_safe = np.maximum(energy, 1e-3)
    rel[photon] = np.hypot(cfg.ecal_stochastic / np.sqrt(e_safe[photon]), cfg.ecal_constant)
    rel[neutral] = np.hypot(cfg.hcal_stochastic / np.sqrt(e_safe[neutral]), cfg.hcal_constant)
    # Scale the three-momentum (direction kept); floor at 5% so no momentum flips sign.
    scale = np.maximum(1.0 + rel * rng.standard_normal(k), 0.05)
    p_s = p * scale[:, None]
    e_s = np.sqrt(np.sum(p_s * p_s, axis=-1) + mass * mass)
    pt_s = pt * scale
    keep = np.where(charged, pt_s > cfg.track_pt_min, False)
    keep |= photon & (e_s > cfg.photon_e_min)
    keep |= neutral & (e_s > cfg.neutral_e_min)
    keep &= species != NEUTRINO

    d0, dz = impact_parameters(vertex, p)
    d0err = np.where(charged, ip_resolution(pt_s, cfg.d0_res_const, cfg.d0_res_msc), 0.0)
    dzerr = np.where(charged, ip_resolution(pt_s, cfg.dz_res_const, cfg.dz_res_msc), 0.0)
    d0val = np.where(charged, d0 + d0err * rng.standard_normal(k), 0.0)
    dzval = np.where(charged, dz + dzerr * rng.standard_normal(k), 0.0)
    return {
        "keep": keep,
        "p": p_s,
        "energy": e_s,
        "d0val": d0val,
        "d0err": d0err,
        "dzval": dzval,
        "dzerr": dzerr,
    }
