"""Expected station signals: S1000 of the muonic and EM components and their lateral distributions.

Signals are in VEM for a 10 m^2 station, distances r in m from the shower axis (shower plane),
depths in g/cm^2, energies in EeV. Pure, elementwise functions over broadcastable numpy arrays.

Model (a parametrisation, not a cascade simulation):
- muons: S_mu(1000) = S_mu,p(10 EeV) (E / 10 EeV)^beta A^(1 - beta) exp(-(X - X_38) / L_mu) with
  Heitler-Matthews scaling (beta ~ 0.9: Fe/p ~ 1.5), a weak attenuation with the ground's slant
  depth X (L_mu ~ 3000 g/cm^2; X_38 is the slant depth at 38 deg) and a per-shower log-normal
  fluctuation of relative RMS 13% (p) ... 5% (Fe), linear in lnA;
- EM: S_em(1000) = S_em,peak (E / 10 EeV) h(DX), with DX = X - Xmax the depth the shower has
  travelled past its maximum, h a Gaisser-Hillas-like curve peaking at DX_peak (~150 g/cm^2,
  where the lateral spread at 1000 m has grown) and falling with L_em ~ 230 g/cm^2 beyond: deeper
  showers arrive larger and younger. Its zenith dependence reproduces the shape of Auger's
  constant-intensity curve (S(0)/S(38) ~ 1.2, S(60)/S(38) ~ 0.45);
- LDF: S(r) = S1000 (r/1000)^b ((r + 700)/1700)^(b + g) per component; the EM slope flattens with
  the shower age at the ground, the muonic one (flatter) with sec(zenith).
"""

from __future__ import annotations

import numpy as np

from simulation.airshower.config import LDFConfig, ShowerConfig

LN_FE = float(np.log(56.0))
ENERGY_REF_EEV = 10.0  # EeV, the reference energy of the S1000 normalisations
COS_38 = float(np.cos(np.radians(38.0)))


def muon_fluctuation_rms(ln_a: np.ndarray, rms_p: float, rms_fe: float) -> np.ndarray:
    """Relative RMS of the muon number at fixed energy and mass, linear in lnA from p to Fe."""
    return rms_p + (rms_fe - rms_p) * np.asarray(ln_a) / LN_FE


def lognormal_unit_mean(rng: np.random.Generator, rel_rms: np.ndarray) -> np.ndarray:
    """Log-normal factors with mean 1 and relative RMS `rel_rms` (dimensionless), same shape."""
    s = np.sqrt(np.log1p(rel_rms * rel_rms))
    return np.exp(s * rng.standard_normal(np.shape(rel_rms)) - 0.5 * s * s)


def muon_s1000(
    energy_eev: np.ndarray,
    mass_number: np.ndarray,
    ground_slant_depth: np.ndarray,
    ground_vertical_depth: float,
    shower: ShowerConfig,
) -> np.ndarray:
    """Mean muonic S1000 in VEM (before shower-to-shower fluctuations), elementwise."""
    beta = shower.muon_beta
    x38 = ground_vertical_depth / COS_38
    return (
        shower.muon_s1000
        * (np.asarray(energy_eev) / ENERGY_REF_EEV) ** beta
        * np.asarray(mass_number, dtype=np.float64) ** (1.0 - beta)
        * np.exp(-(ground_slant_depth - x38) / shower.muon_atten_length)
    )


def em_development(dx: np.ndarray, dx_peak: float, atten_length: float) -> np.ndarray:
    """EM signal at 1000 m relative to its peak, h(DX) = (DX/p)^(p/L) exp((p - DX)/L), <= 1.

    DX (g/cm^2) is clipped at 1 g/cm^2: the curve vanishes at DX = 0 and a shower whose maximum
    sits at the ground still has its full particle number.
    """
    dx = np.maximum(dx, 1.0)
    k = dx_peak / atten_length
    return np.exp(k * np.log(dx / dx_peak) + (dx_peak - dx) / atten_length)


def em_s1000(energy_eev: np.ndarray, dx: np.ndarray, shower: ShowerConfig) -> np.ndarray:
    """EM S1000 in VEM for energy (EeV) and depth past Xmax DX (g/cm^2), elementwise."""
    return (
        shower.em_s1000
        * (np.asarray(energy_eev) / ENERGY_REF_EEV)
        * em_development(dx, shower.em_dx_peak, shower.em_atten_length)
    )


def shower_age(depth: np.ndarray, xmax: np.ndarray) -> np.ndarray:
    """Longitudinal shower age s = 3 X / (X + 2 Xmax) (1 at the maximum), depths in g/cm^2."""
    return 3.0 * depth / (depth + 2.0 * xmax)


def em_ldf_beta(age: np.ndarray, ldf: LDFConfig) -> np.ndarray:
    """EM LDF slope b: flatter for older showers (NKG: slope ~ 2 s - 6.5 far from the axis)."""
    return np.clip(ldf.em_beta + ldf.em_beta_age * (age - 1.2), -3.5, -1.2)


def muon_ldf_beta(cos_zenith: np.ndarray, ldf: LDFConfig) -> np.ndarray:
    """Muonic LDF slope b: flatter for inclined showers (longer, more divergent muon paths)."""
    return ldf.muon_beta + ldf.muon_beta_sec * (1.0 / np.asarray(cos_zenith) - 1.0)


def ldf_log_terms(r: np.ndarray, r_min: float) -> tuple[np.ndarray, np.ndarray]:
    """(ln(r/1000), ln((r + 700)/1700)) with r clipped at r_min; shared by both components."""
    r = np.maximum(r, r_min)
    return np.log(r * 1e-3), np.log((r + 700.0) * (1.0 / 1700.0))


def ldf(
    s1000: np.ndarray,
    log_terms: tuple[np.ndarray, np.ndarray],
    beta: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """S(r) = S1000 (r/1000)^b ((r + 700)/1700)^(b + g) in VEM.

    Args:
        s1000: VEM, shape (n, 1) (per event).
        log_terms: from :func:`ldf_log_terms`, each (n, S).
        beta: slope b, shape (n, 1) or (n, S).
        gamma: g, dimensionless.
    """
    ln_r, ln_rr = log_terms
    return s1000 * np.exp(beta * ln_r + (beta + gamma) * ln_rr)
