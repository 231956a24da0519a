"""Sampling of the primary cosmic rays: energy, arrival direction, core position, mass."""

from __future__ import annotations

import numpy as np

from simulation.airshower.config import SPECIES_MASS, AirshowerConfig, PrimaryConfig


def sample_log10_energy(
    rng: np.random.Generator, n: int, lg_min: float, lg_max: float, spectral_index: float
) -> np.ndarray:
    """log10(E/eV), shape (n,), from dN/dE ~ E^-gamma on [10^lg_min, 10^lg_max] eV (inverse CDF).

    gamma = 1 is uniform in log10 E; the general case is computed in units of E_min so that
    large exponents cannot overflow.
    """
    u = rng.random(n)
    span = lg_max - lg_min
    k = 1.0 - spectral_index  # exponent of the CDF in E
    if abs(k) * span * np.log(10.0) < 1e-9:
        return lg_min + u * span
    # x = E / E_min; x^k = 1 + u (R^k - 1), R = E_max / E_min.
    ln_x = np.log1p(u * np.expm1(k * span * np.log(10.0))) / k
    return lg_min + ln_x / np.log(10.0)


def sample_zenith(
    rng: np.random.Generator, n: int, zenith_max_deg: float, zenith_min_deg: float = 0.0
) -> np.ndarray:
    """Zenith angles in radians, shape (n,), with pdf ~ sin(t) cos(t) on [t_min, t_max].

    That is an isotropic flux through a flat horizontal array: cos^2(t) is uniform in
    [cos^2(t_max), cos^2(t_min)].
    """
    c2_lo = np.cos(np.radians(zenith_max_deg)) ** 2
    c2_hi = np.cos(np.radians(zenith_min_deg)) ** 2
    return np.arccos(np.sqrt(c2_lo + (c2_hi - c2_lo) * rng.random(n)))


def sample_core(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Core positions (x, y) in m, each shape (n,), uniform in a disk of `radius` m at the origin."""
    r = radius * np.sqrt(rng.random(n))
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


def sample_mass(rng: np.random.Generator, n: int, primaries: PrimaryConfig) -> np.ndarray:
    """Mass numbers A, shape (n,) int16, drawn from the configured composition fractions."""
    names, fractions = primaries.fractions()
    masses = np.array([SPECIES_MASS[k] for k in names], dtype=np.int16)
    return masses[rng.choice(len(names), size=n, p=np.asarray(fractions))]


def sample_primaries(
    rng: np.random.Generator, cfg: AirshowerConfig, n: int
) -> dict[str, np.ndarray]:
    """All primary quantities for `n` events, each of shape (n,).

    Keys: log10_energy (log10(E/eV)), zenith, azimuth (rad), core_x, core_y (m),
    mass_number (int16).
    """
    p = cfg.primaries
    radius = 0.5 * cfg.array.grid_spacing if p.core_radius is None else p.core_radius
    core_x, core_y = sample_core(rng, n, radius)
    return {
        "log10_energy": sample_log10_energy(
            rng, n, p.log10_energy_min, p.log10_energy_max, p.spectral_index
        ),
        "zenith": sample_zenith(rng, n, p.zenith_max_deg, p.zenith_min_deg),
        "azimuth": rng.uniform(0.0, 2.0 * np.pi, n),
        "core_x": core_x,
        "core_y": core_y,
        "mass_number": sample_mass(rng, n, p),
    }
