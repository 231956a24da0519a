"""Station response: particle counting (Poisson), trigger, saturation and arrival-time jitter.

A water-Cherenkov station of top area A and water height h measures signal in VEM (the charge of
one vertical through-going muon). Inclined muons cross more water per muon but fewer of them
cross the tank; EM particles (mostly photons of ~10 MeV) are absorbed and deposit a fraction of
a VEM each. Elementwise functions over numpy arrays.
"""

from __future__ import annotations

import numpy as np

from simulation.airshower.config import ArrayConfig, DetectorConfig


def muon_vem_per_particle(cos_zenith: np.ndarray, array: ArrayConfig) -> np.ndarray:
    """Mean signal of one muon in VEM at zenith cos `cos_zenith`: A_top / A_projected.

    The mean track length through a convex tank is V / A_proj, and one VEM is a vertical track
    of length h, so the mean per muon is (V / A_proj) / h = A_top / A_proj, with
    A_proj = A_top cos(t) + 2 R h sin(t) for a cylinder of radius R (1.0 vertical, ~1.15 at 60 deg).
    """
    cos_t = np.asarray(cos_zenith, dtype=np.float64)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0))
    radius = np.sqrt(array.station_area / np.pi)
    projected = array.station_area * cos_t + 2.0 * radius * array.station_height * sin_t
    return array.station_area / projected


def sample_counted_signal(
    rng: np.random.Generator, expected_vem: np.ndarray, vem_per_particle: np.ndarray | float
) -> np.ndarray:
    """Signal in VEM of a Poisson number of particles of `vem_per_particle` VEM each.

    The expected number is expected_vem / vem_per_particle (shapes broadcast); the result has the
    shape of `expected_vem`. Per-particle deposit fluctuations are left out.
    """
    return rng.poisson(expected_vem / vem_per_particle) * vem_per_particle


def trigger_and_saturate(
    total_vem: np.ndarray, detector: DetectorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(trigger, signal): trigger where total >= threshold; signal capped at saturation, 0 if not
    triggered. Both of the shape of `total_vem` (VEM)."""
    trigger = total_vem >= detector.trigger_vem
    signal = np.where(trigger, np.minimum(total_vem, detector.saturation_vem), 0.0)
    return trigger, signal


def time_sigma(
    pulse_width_ns: np.ndarray, n_particles: np.ndarray, detector: DetectorConfig
) -> np.ndarray:
    """Arrival-time resolution in ns: sqrt(floor^2 + (k width)^2 / (1 + n)).

    The start of a pulse of width ~ `pulse_width_ns` made of n particles scatters like the first
    of n arrival times, i.e. ~ width / n; the 1 + n form keeps it finite at n = 0 and is larger
    for small signals, as measured. The floor is the clock/GPS resolution.
    """
    jitter = detector.time_jitter_scale * pulse_width_ns
    return np.sqrt(detector.time_resolution**2 + jitter * jitter / (1.0 + n_particles))
