"""Station time traces: log-normal pulses for the muonic and EM components, per station.

Each component arrives as a log-normal pulse starting at the front time, with median delay
m = t0 + t_r (r / 1 km) + k_geom (sqrt(L^2 + r^2) - L) / c, where r is the axis distance and L
the distance along the axis from the station's foot to the source: the muon production region
(the front's virtual origin) for muons, the shower maximum for the EM part. The geometric term
(~ r^2 / (2 c L) for r << L) scales the spread of path lengths, so pulses widen with r and as
Xmax nears the ground. Muons (small t0, t_r, k_geom and shape) arrive earlier
and sharper than the EM particles, which are delayed by multiple scattering. The pulse shape is
sampled per station (its median fluctuates log-normally), not per particle, which keeps the
simulation vectorised; the trace is normalised so that it integrates exactly to the station
signal.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from simulation.airshower.config import TraceConfig
from simulation.airshower.geometry import C_LIGHT


def geometric_delay(r: np.ndarray, source_distance: np.ndarray) -> np.ndarray:
    """Delay in ns of a path from a source at `source_distance` (m) up the axis to a point at
    axis distance r (m), behind a plane front: (sqrt(L^2 + r^2) - L) / c, ~ r^2 / (2 c L) for
    r << L, at most r / c (L < 0 is treated as 0)."""
    dist = np.maximum(source_distance, 0.0)
    return r * r / ((np.sqrt(dist * dist + r * r) + dist) * C_LIGHT)


def pulse_medians(
    r: np.ndarray, muon_source: np.ndarray, em_source: np.ndarray, traces: TraceConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Median delays behind the front (ns) of the (muon, EM) pulses, same shapes as the inputs.

    r: axis distance, m. muon_source: distance along the axis to the muon production region (the
    front's virtual origin), m. em_source: distance along the axis to Xmax, m.
    """
    r_km = r * 1e-3
    m_mu = (
        traces.muon_t0
        + traces.muon_t_r * r_km
        + traces.muon_t_geom * geometric_delay(r, muon_source)
    )
    m_em = traces.em_t0 + traces.em_t_r * r_km + traces.em_t_geom * geometric_delay(r, em_source)
    return m_mu, m_em


def _binned_lognormal(edges: np.ndarray, median: np.ndarray, sigma_ln: float) -> np.ndarray:
    """Fraction of a log-normal pulse in each bin, normalised to 1 over the window.

    edges: ns after the pulse start, shape (k, T + 1); median: ns, shape (k,). Returns (k, T).
    """
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(edges, 0.0)) - np.log(median)[:, None]) * (1.0 / sigma_ln)
    cdf = ndtr(z)  # ln(0) = -inf -> 0: no signal before the pulse starts
    inside = np.maximum(cdf[:, -1] - cdf[:, 0], 1e-12)
    return np.diff(cdf, axis=1) / inside[:, None]


def station_traces(
    rng: np.random.Generator,
    signal_mu: np.ndarray,
    signal_em: np.ndarray,
    r: np.ndarray,
    muon_source: np.ndarray,
    em_source: np.ndarray,
    pulse_start: np.ndarray,
    traces: TraceConfig,
) -> np.ndarray:
    """Time traces in VEM per bin, shape (k, T), for k stations (all inputs shape (k,)).

    Args:
        signal_mu, signal_em: component signals in VEM that the trace integrates to.
        r, muon_source, em_source: axis distance and distances along the axis to the muon
            production region and to Xmax, m (see :func:`pulse_medians`).
        pulse_start: ns from the start of the window to the front's arrival (nominally the
            pre-trigger time; the arrival-time jitter moves it). Clipped into the first half of
            the window so that every pulse is recorded.
        traces: bins, widths and pulse-shape parameters.
    """
    n_bins, width = traces.n_bins, traces.bin_width
    start = np.clip(pulse_start, 0.0, 0.5 * n_bins * width)
    edges = np.arange(n_bins + 1) * width - start[:, None]  # ns after the pulse start
    m_mu, m_em = pulse_medians(r, muon_source, em_source, traces)
    fluct = np.exp(traces.shape_fluct * rng.standard_normal((2, r.size)))
    mu = _binned_lognormal(edges, m_mu * fluct[0], traces.muon_sigma_ln)
    em = _binned_lognormal(edges, m_em * fluct[1], traces.em_sigma_ln)
    return signal_mu[:, None] * mu + signal_em[:, None] * em
