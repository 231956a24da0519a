"""Classical surface-detector (SD) reconstruction of air showers: the baseline the networks must beat.

Per event, vectorised over events (arrays (n, K) of K stations per event; batched fits with a fixed
number of iterations and masks, no Python loop over events):

1. **Axis**: weighted linear least-squares plane fit of the trigger times, then (``curved_front``)
   a Gauss-Newton fit of a spherical front centred on the axis through the LDF core (parameters
   t0, u, v and the curvature kappa = 1/R with a Gaussian prior on kappa around kappa0(theta)).
2. **LDF**: S(r) = S1000 (r/1000)^beta ((r + 700)/1700)^(beta + gamma), r the distance to the
   fitted axis; gamma fixed (-0.2; -0.2, 0 and +0.3 give the same energy resolution on the toy),
   beta = quadratic in (sec theta - 1) + linear in log10(S1000 / 30 VEM), fitted on the training
   split to free-beta fits of the events with >= 6 stations (the toy's LDF is the sum of a muonic
   and an EM part of different slopes, so the effective single slope depends on both). S1000 and
   the core (x, y) maximise a Poisson-like quasi-likelihood (variance proportional to the expected
   signal, as Auger's sigma^2 ~ a S; the scale a cancels from the estimate): triggered stations are
   measurements, silent stations upper limits at the trigger threshold and saturated ones lower
   limits (one-sided deviance terms). Batched Levenberg-Marquardt from the signal-weighted
   barycentre. Axis and LDF alternate ``n_passes`` times (the curved front needs the core, the LDF
   the axis; beta follows the new zenith and S1000 between passes).
3. **CIC**: S38 = S1000 / f_CIC(theta, S38), f_CIC = 1 + a x + b x^2 + c x^3,
   x = cos^2 theta - cos^2 38 deg, with a, b, c linear in log10(S38 / 40 VEM) (the energy-dependent
   CIC of Auger's 2020 spectrum; the toy's attenuation depends on the muon fraction and so on the
   energy), fitted on the training split by the constant-intensity method: in equal-exposure bins
   of cos^2 theta, the S1000 of the N-th largest event is a point of constant intensity; six
   intensities (true energies 0.3 ... 1.3 above the full-efficiency energy) are fitted jointly,
   each with its own S38. By default N in each bin is that bin's number of events above the
   intensity's true energy (simulation only: the classic equal count per bin, also available,
   adds the Poisson noise of the bin counts, ~4% per bin for the toy's flat log-energy spectrum).
   With a flat spectrum the method equalises the mean of log S at fixed energy, not its median:
   zenith bins with a skewed spread (vertical showers) keep a median bias of ~1.5%.
4. **Energy**: E = A S38^B, from a fit of log10 S38 against the true log10 E of the training
   events above the full-efficiency energy (a line through the medians in bins of true energy),
   inverted. This forward direction makes the estimator median-unbiased at every true energy
   whatever the spectrum; regressing log E on log S38 instead gives an estimate unbiased at fixed
   S38, which depends on the simulated spectrum and is pulled towards the centre of the range near
   its edges (an Eddington-like bias of the order of the resolution there).

Conventions (those of ``simulation/airshower``, docs/architecture.md; this module does not import
it): x east, y north, z up (m); the axis u = (sin t cos p, sin t sin p, cos t) points from the ground
to where the shower comes from; azimuth p from x, counter-clockwise, in [0, 2 pi); station times in
ns relative to the core-plane crossing; signals in VEM. The array must be flat (``meta/station_z``
constant, checked).

Events with fewer than ``min_stations`` triggered stations, or whose triggered stations are
(nearly) aligned, are not reconstructable: ``SDReconstruction.valid`` is False and their outputs
are 0 (never NaN). Predictions files (:func:`reconstruct_file`) hold only the reconstructed
events; ``observer/event_index`` gives their rows in the event file and the attributes
``n_events_input`` / ``n_not_reconstructed`` count what was left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import optimize

from pipeline.config import from_dict, to_dict
from pipeline.events import open_events, write_events

C_LIGHT = 0.299792458  # m/ns
COS2_38 = float(np.cos(np.radians(38.0)) ** 2)
STATION_DATASETS = ("station/signal", "station/time", "station/trigger")
META_DATASETS = ("meta/station_x", "meta/station_y", "meta/station_z")
CALIBRATION_VERSION = 1
MODEL_NAME = "classical_sd"
LDF_S_REF = 30.0  # VEM, reference S1000 of the S1000 dependence of the LDF beta
_SIN_MAX = float(np.sin(np.radians(89.0)))  # reconstructed axes are kept above the horizon


@dataclass(frozen=True)
class ReconstructionConfig:
    """Settings of the event reconstruction (not fitted; stored with the calibration)."""

    min_stations: int = 3  # triggered stations needed (fewer: not reconstructable)
    min_spread_m2: float = 1.0e4  # m^2, smallest eigenvalue of the triggered stations' position
    # covariance: below it they are aligned and the plane fit is degenerate
    n_silent: int = 18  # silent stations per event kept as upper limits (nearest the barycentre)
    trigger_vem: float = 3.0  # VEM, trigger threshold: the upper limit of silent stations
    saturation_vem: float | None = 4000.0  # VEM, signals at or above are lower limits; None: off
    r_min: float = 30.0  # m, axis distances are clipped here (the LDF diverges at 0)
    ldf_gamma: float = -0.2  # dimensionless, fixed gamma of the LDF
    n_passes: int = 2  # alternations of (LDF fit, axis fit) before the final LDF fit
    ldf_iterations: int = 40  # most Levenberg-Marquardt steps of the first LDF fit
    ldf_iterations_refit: int = 25  # most steps of the later (warm-started) LDF fits
    curved_front: bool = True  # refine the axis with a spherical front (else plane only)
    axis_iterations: int = 5  # Gauss-Newton steps of the curved-front fit
    # Time variance sigma_t^2 = floor^2 + (w0 + w1 r)^2 / (1 + S / q): the clock floor and the
    # first-particle spread of a pulse of width w0 + w1 r made of S/q particles (the form of the
    # toy's DetectorConfig.time_resolution and of its pulse widths, TraceConfig).
    time_floor_ns: float = 10.0  # ns, clock/GPS floor
    time_width_ns: float = 50.0  # ns, pulse width at the axis (w0)
    time_width_ns_per_km: float = 250.0  # ns per km of axis distance (w1)
    time_vem_per_particle: float = 0.3  # VEM per particle (q), muon/EM mix
    # Curvature prior: R0(theta) = curvature_radius_m * sec(theta)^curvature_sec_power, the
    # distance to the front's virtual origin ~300 g/cm^2 above Xmax; sigma(kappa) = rel * kappa0.
    curvature_radius_m: float = 4700.0  # m, R0 of a vertical shower
    curvature_sec_power: float = 2.0  # dimensionless
    curvature_prior_rel: float = 0.5  # dimensionless, relative width of the kappa prior
    chunk_size: int = 4096  # events reconstructed at once (bounds memory)

    def __post_init__(self) -> None:
        if self.min_stations < 3:
            raise ValueError(
                f"min_stations: needs >= 3 (3 fit parameters), got {self.min_stations}"
            )
        for name in ("n_passes", "ldf_iterations", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        positive = ("trigger_vem", "r_min", "curvature_radius_m", "curvature_prior_rel",
                    "time_vem_per_particle")  # fmt: skip
        bad = [name for name in positive if not getattr(self, name) > 0]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be positive")


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`calibrate` (the fits on the training split)."""

    zenith_max_deg: float = 60.0  # deg, CIC bins and calibration events below this (reconstructed)
    cic_bins: int = 8  # equal-exposure bins in cos^2(theta)
    # log10(E/eV) above the full-efficiency energy where the constant-intensity cuts are placed
    # (the intensity of the events above each energy); those above the sample's top are dropped
    cic_cut_offsets: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.1, 1.3)
    cic_energy_degree: int = 1  # degree of the CIC coefficients in log10(S38 / 40 VEM); 0: none
    # Intensity of a cut in each bin: "per_bin" counts the bin's events above the true energy
    # (simulation only; removes the Poisson noise of the bin counts, which for the toy's flat
    # log-energy spectrum moves a cut by ~4% per bin at 40k events); "equal_exposure" uses the
    # same count in every bin (the classic method, as on data)
    cic_intensity: Literal["per_bin", "equal_exposure"] = "per_bin"
    efficiency_target: float = 0.98  # fraction reconstructed that counts as fully efficient
    efficiency_bin_width: float = 0.1  # log10(E/eV), bins of the efficiency scan
    beta_min_stations: int = 6  # triggered stations of the events whose free-beta fits set beta(t)
    beta_degree: int = 2  # degree of the beta polynomial in (sec theta - 1)
    beta_s1000_dependence: bool = True  # fit a term linear in log10(S1000) too
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)  # settings


@dataclass(frozen=True)
class SDCalibration:
    """Everything the reconstruction fitted on the training split; JSON via :meth:`save`/:meth:`load`.

    The defaults are an uncalibrated starting point (beta from the toy's LDF defaults, no CIC,
    Auger's A and B), used by :func:`calibrate` for its first pass.
    """

    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)  # settings
    ldf_beta: tuple[float, ...] = (-2.4, 0.4)  # beta = sum_k b_k (sec t - 1)^k + ...
    ldf_beta_log_s: float = 0.0  # ... + this * log10(S1000 / 30 VEM)
    # f_CIC = 1 + a x + b x^2 + c x^3 with a, b, c polynomials in y = log10(S38 / cic_s38_ref):
    # (a0, b0, c0, a1, b1, c1, ...), the coefficients of y^0, y^1, ... (3 values: no y dependence)
    cic: tuple[float, ...] = (0.0, 0.0, 0.0)
    cic_s38_ref: float = 40.0  # VEM, reference S38 of y
    # y is clipped into this range: from the full-efficiency S38 to the highest intensity cut
    cic_y_range: tuple[float, float] = (0.0, 0.0)
    energy_a_eev: float = 0.186  # EeV, A of E = A S38^B
    energy_b: float = 1.031  # dimensionless, B of E = A S38^B
    lg_e_full_efficiency: float = 18.5  # log10(E/eV) above which the array is fully efficient
    s38_full_efficiency: float = 0.0  # VEM, S38 of the full-efficiency energy (A S38^B = E_full)
    zenith_max_deg: float = 60.0  # deg, zenith range of the CIC and energy fits
    cic_s38_cuts: tuple[float, ...] = ()  # VEM, S38 of the constant-intensity cuts
    n_train: int = 0  # events of the training split
    version: int = CALIBRATION_VERSION  # format of the JSON file

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> SDCalibration:
        """Strict: unknown keys or wrong types raise ``pipeline.config.ConfigError`` naming source."""
        version = data.get("version", CALIBRATION_VERSION)
        if version != CALIBRATION_VERSION:
            raise ValueError(
                f"{source}: calibration version {version}, expected {CALIBRATION_VERSION}"
            )
        return from_dict(cls, data, source=source)

    def save(self, path: Path) -> Path:
        """Write the calibration as JSON, atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> SDCalibration:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable calibration JSON file ({err})") from err
        return cls.from_dict(data, source=str(path))


@dataclass(frozen=True)
class SDReconstruction:
    """Per-event results, each of shape (n,); 0 where ``valid`` is False (never NaN)."""

    valid: np.ndarray  # bool, reconstructed (enough, non-aligned stations; finite fit)
    n_stations: np.ndarray  # int, triggered stations
    zenith: np.ndarray  # rad
    azimuth: np.ndarray  # rad, in [0, 2 pi)
    core_x: np.ndarray  # m
    core_y: np.ndarray  # m
    s1000: np.ndarray  # VEM, fitted S(1000 m)
    beta: np.ndarray  # LDF beta used (or fitted, with free_beta)
    curvature: np.ndarray  # 1/km, fitted front curvature (0 without the curved front)
    ldf_converged: np.ndarray  # bool, the LDF fit's step fell below tolerance (see _fit_ldf)
    ldf_deviance: np.ndarray  # quasi-likelihood deviance of the LDF fit (VEM units)
    s38: np.ndarray  # VEM
    energy_eev: np.ndarray  # EeV
    log10_energy: np.ndarray  # log10(E/eV)


# --- pure physics functions -------------------------------------------------------------------


def ldf_shape(r: np.ndarray, beta: np.ndarray | float, gamma: float) -> np.ndarray:
    """S(r) / S1000 = (r/1000)^beta ((r + 700)/1700)^(beta + gamma); r in m (> 0), any shape."""
    r = np.asarray(r, dtype=np.float64)
    return np.exp(beta * np.log(r * 1e-3) + (beta + gamma) * np.log((r + 700.0) / 1700.0))


def beta_of_zenith(
    zenith: np.ndarray,
    coeffs: Sequence[float],
    s1000: np.ndarray | float = LDF_S_REF,
    log_s_slope: float = 0.0,
) -> np.ndarray:
    """LDF beta = sum_k coeffs[k] (sec theta - 1)^k + log_s_slope log10(S1000 / 30 VEM).

    zenith in rad, S1000 in VEM (clipped at 0.1 VEM), elementwise.
    """
    s = 1.0 / np.cos(np.asarray(zenith, dtype=np.float64)) - 1.0
    log_s = np.log10(np.maximum(np.asarray(s1000, dtype=np.float64), 0.1) / LDF_S_REF)
    return np.polynomial.polynomial.polyval(s, np.asarray(coeffs, dtype=np.float64)) + (
        log_s_slope * log_s
    )


def cic_factor(
    zenith: np.ndarray,
    coeffs: Sequence[float],
    s38: np.ndarray | float = 40.0,
    s38_ref: float = 40.0,
    y_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """f_CIC = 1 + a x + b x^2 + c x^3, x = cos^2(theta) - cos^2(38 deg); 1 at 38 deg.

    ``coeffs`` = (a0, b0, c0[, a1, b1, c1, ...]): a = sum_m a_m y^m etc. with
    y = log10(s38 / s38_ref) (VEM) clipped into ``y_range``. Three coefficients: no S38 dependence
    (Auger's classic CIC); more: the energy-dependent CIC of Auger's 2020 spectrum analysis.
    """
    x = np.cos(np.asarray(zenith, dtype=np.float64)) ** 2 - COS2_38
    rows = np.asarray(coeffs, dtype=np.float64).reshape(-1, 3)
    y = np.log10(np.maximum(np.asarray(s38, dtype=np.float64), 1e-300) / s38_ref)
    if y_range is not None:
        y = np.clip(y, *y_range)
    a, b, c = (np.polynomial.polynomial.polyval(y, rows[:, k]) for k in range(3))
    return 1.0 + x * (a + x * (b + x * c))


def s38_from_s1000(
    s1000: np.ndarray, zenith: np.ndarray, cal: SDCalibration, n_iter: int = 10
) -> np.ndarray:
    """S38 = S1000 / f_CIC(theta, S38) in VEM by fixed-point iteration; 0 where f_CIC <= 0."""
    s1000 = np.asarray(s1000, dtype=np.float64)
    s38 = s1000.copy()
    f = np.ones_like(s38)
    for _ in range(n_iter if len(cal.cic) > 3 else 1):
        f = cic_factor(zenith, cal.cic, s38, cal.cic_s38_ref, cal.cic_y_range)
        s38 = np.where(f > 0, s1000 / np.where(f > 0, f, 1.0), 0.0)
    return s38


def energy_from_s38(s38: np.ndarray, a_eev: float, b: float) -> np.ndarray:
    """E = A S38^B in EeV, elementwise (0 for S38 <= 0)."""
    s38 = np.asarray(s38, dtype=np.float64)
    return np.where(s38 > 0, a_eev * np.maximum(s38, 1e-300) ** b, 0.0)


def time_sigma(signal: np.ndarray, r: np.ndarray, cfg: ReconstructionConfig) -> np.ndarray:
    """Arrival-time uncertainty in ns of a station of signal (VEM) at axis distance r (m)."""
    width = cfg.time_width_ns + cfg.time_width_ns_per_km * 1e-3 * r
    n = np.maximum(signal, 0.0) / cfg.time_vem_per_particle
    return np.sqrt(cfg.time_floor_ns**2 + width * width / (1.0 + n))


def curvature_prior(zenith: np.ndarray, cfg: ReconstructionConfig) -> np.ndarray:
    """Prior mean of the front curvature kappa0 = 1/R0(theta) in 1/km, elementwise."""
    cos_t = np.cos(np.asarray(zenith, dtype=np.float64))
    return 1e3 / cfg.curvature_radius_m * cos_t**cfg.curvature_sec_power


def front_time(
    dx: np.ndarray, dy: np.ndarray, u: np.ndarray, v: np.ndarray, kappa_km: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Arrival time (ns) of a spherical front and its derivatives, flat array, shapes (n, K).

    The front crosses the core (dx = dy = 0) at t = 0 and is a sphere of radius 1/kappa centred
    on the axis; kappa = 0 is the plane front -(u dx + v dy)/c. Written as
    (k rho^2 - 2 a) / (c (1 + sqrt(1 - 2 k a + k^2 rho^2))), a = u dx + v dy, k = kappa, which is
    smooth through k = 0. Returns T and (dT/du, dT/dv, dT/dkappa) (kappa in 1/km).
    u, v, kappa_km have shape (n, 1) or broadcast.
    """
    k = kappa_km * 1e-3
    along = u * dx + v * dy
    rho2 = dx * dx + dy * dy
    g = np.sqrt(np.maximum(1.0 - 2.0 * k * along + k * k * rho2, 1e-12))
    num = k * rho2 - 2.0 * along
    den = 1.0 / (C_LIGHT * (1.0 + g) ** 2)
    d_u = (-2.0 * dx * (1.0 + g) + num * k * dx / g) * den
    d_v = (-2.0 * dy * (1.0 + g) + num * k * dy / g) * den
    d_k = (rho2 * (1.0 + g) - num * (k * rho2 - along) / g) * den * 1e-3
    return num / (C_LIGHT * (1.0 + g)), (d_u, d_v, d_k)


# --- batched fits -------------------------------------------------------------------------------


def _solve_damped(h: np.ndarray, g: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """delta of (H + lam diag H) delta = g per event, Jacobi-scaled; h (n, P, P), g (n, P)."""
    d = np.sqrt(np.maximum(np.einsum("npp->np", h), 1e-12))
    hs = h / (d[:, :, None] * d[:, None, :])
    hs = hs + (lam[:, None, None] + 1e-9) * np.eye(h.shape[1])
    return np.linalg.solve(hs, (g / d)[..., None])[..., 0] / d


def fit_plane_front(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares plane front t = t0 - (u (x - xb) + v (y - yb)) / c, per event.

    Args:
        x, y: station positions, m, shape (n, K); t: arrival times, ns, (n, K);
        weight: 1/sigma_t^2 (ns^-2), 0 for stations not used, (n, K).

    Returns:
        u, v: the axis direction cosines (x, y), clipped to u^2 + v^2 <= sin^2(89 deg);
        xb, yb, t0: the weighted barycentre (m) and the time there (ns). All (n,); events whose
        stations are aligned (singular system) get u = v = 0.
    """
    wsum = np.maximum(weight.sum(axis=1), 1e-300)
    xb, yb, tb = ((weight * a).sum(axis=1) / wsum for a in (x, y, t))
    dx, dy, dt = x - xb[:, None], y - yb[:, None], t - tb[:, None]
    sxx, syy, sxy = ((weight * a * b).sum(axis=1) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    sxt, syt = (weight * dx * dt).sum(axis=1), (weight * dy * dt).sum(axis=1)
    det = sxx * syy - sxy * sxy
    ok = det > 1e-12 * np.maximum(sxx * syy, 1e-300)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    u = -C_LIGHT * (syy * sxt - sxy * syt) * inv
    v = -C_LIGHT * (sxx * syt - sxy * sxt) * inv
    u, v = _clip_axis(u, v)
    return u, v, xb, yb, tb


def _clip_axis(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.sqrt(u * u + v * v)
    scale = np.where(s > _SIN_MAX, _SIN_MAX / np.maximum(s, 1e-300), 1.0)
    return u * scale, v * scale


def _axis_distance(
    dx: np.ndarray, dy: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(r, along): distance to the axis and projection on it of ground offsets (n, K); u, v (n, 1)."""
    along = u * dx + v * dy
    return np.sqrt(np.maximum(dx * dx + dy * dy - along * along, 0.0)), along


def _fit_curved_front(
    st: dict[str, np.ndarray],
    core_x: np.ndarray,
    core_y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    kappa: np.ndarray,
    ok: np.ndarray,
    cfg: ReconstructionConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Newton fit of (t0, u, v, kappa) of a spherical front through the core; (n,) each."""
    dx, dy = st["x"] - core_x[:, None], st["y"] - core_y[:, None]
    mask = st["trigger"] & ok[:, None]
    r, _ = _axis_distance(dx, dy, u[:, None], v[:, None])
    w = np.where(mask, 1.0 / time_sigma(st["signal"], r, cfg) ** 2, 0.0)
    t = st["time"]
    zenith = np.arcsin(np.sqrt(u * u + v * v))
    k0 = curvature_prior(zenith, cfg)
    wk = 1.0 / (cfg.curvature_prior_rel * k0) ** 2
    front, _ = front_time(dx, dy, u[:, None], v[:, None], kappa[:, None])
    wsum = np.maximum(w.sum(axis=1), 1e-300)
    t0 = (w * (t - front)).sum(axis=1) / wsum
    eye = np.eye(4)
    for _ in range(cfg.axis_iterations):
        front, (d_u, d_v, d_k) = front_time(dx, dy, u[:, None], v[:, None], kappa[:, None])
        res = t - t0[:, None] - front
        jac = np.stack([np.ones_like(d_u), d_u, d_v, d_k], axis=-1)  # (n, K, 4)
        jw_t = (jac * w[..., None]).transpose(0, 2, 1)
        h, g = jw_t @ jac, (jw_t @ res[..., None])[..., 0]
        h[:, 3, 3] += wk
        g[:, 3] += wk * (k0 - kappa)
        h = np.where(ok[:, None, None], h, eye)
        g = np.where(ok[:, None], g, 0.0)
        delta = _solve_damped(h, g, np.full(len(u), 1e-6))
        # at most 0.1 in a direction cosine per step (~6 deg): keeps the linearisation valid
        step = np.maximum(np.abs(delta[:, 1]), np.abs(delta[:, 2]))
        delta *= np.minimum(1.0, 0.1 / np.maximum(step, 1e-300))[:, None]
        t0, u, v, kappa = t0 + delta[:, 0], u + delta[:, 1], v + delta[:, 2], kappa + delta[:, 3]
        u, v = _clip_axis(u, v)
    return u, v, kappa


def _ldf_eval(
    p: np.ndarray,
    st: dict[str, np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    beta_fixed: np.ndarray,
    cfg: ReconstructionConfig,
    free_beta: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected signals f (n, K), d ln f / d p (n, K, P) and the deviance (n,) at parameters p.

    p = (ln S1000, core_x, core_y[, beta]) per event, (n, P).
    """
    dx, dy = st["x"] - p[:, 1:2], st["y"] - p[:, 2:3]
    uu, vv = u[:, None], v[:, None]
    r, along = _axis_distance(dx, dy, uu, vv)
    rc = np.maximum(r, cfg.r_min)
    beta = p[:, 3:4] if free_beta else beta_fixed[:, None]
    l_r, l_rr = np.log(rc * 1e-3), np.log((rc + 700.0) / 1700.0)
    ln_f = np.clip(p[:, 0:1] + beta * l_r + (beta + cfg.ldf_gamma) * l_rr, -50.0, 30.0)
    f = np.exp(ln_f)
    dlnf_dr = np.where(r > cfg.r_min, beta / rc + (beta + cfg.ldf_gamma) / (rc + 700.0), 0.0)
    cols = [
        np.ones_like(f),
        -dlnf_dr * (dx - along * uu) / rc,
        -dlnf_dr * (dy - along * vv) / rc,
    ]
    if free_beta:
        cols.append(l_r + l_rr)
    jac = np.stack(cols, axis=-1)
    y, kind = st["y_obs"], st["kind"]
    # kind 1: measured; 2: upper limit (silent); 3: lower limit (saturated); 0: unused
    active = (kind == 1) | ((kind == 2) & (f > y)) | ((kind == 3) & (f < y))
    dev = np.where(active, 2.0 * (f - y + y * (np.log(np.maximum(y, 1e-300)) - ln_f)), 0.0)
    return np.where(active, f, 0.0), jac, dev.sum(axis=1)


def _fit_ldf(
    p: np.ndarray,
    st: dict[str, np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    beta_fixed: np.ndarray,
    ok: np.ndarray,
    cfg: ReconstructionConfig,
    free_beta: bool,
    n_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt maximum of the LDF quasi-likelihood; returns (p, converged, dev).

    Fisher scoring on ln f: H = sum f J J^T, g = sum (y - f) J over the active terms (the
    quasi-likelihood scale cancels). A step is kept where it lowers the deviance (else lambda x 10).
    At most ``n_iter`` steps; an event leaves the batch once an accepted step is below tolerance
    (|d ln S1000| < 1e-5, |d core| < 0.1 m, |d beta| < 1e-4): ``converged``.
    """
    n, n_par = p.shape
    p = p.copy()
    lam = np.full(n, 1e-3)
    f, jac, dev = _ldf_eval(p, st, u, v, beta_fixed, cfg, free_beta)
    converged = np.zeros(n, dtype=bool)
    limits = np.array([2.0, 500.0, 500.0, 0.5][:n_par])  # largest step: ln S, m, m, beta
    tol = np.array([1e-5, 0.1, 0.1, 1e-4][:n_par])
    idx = np.flatnonzero(ok)  # the events still iterating
    for _ in range(n_iter):
        if idx.size == 0:
            break
        sub = {k: st[k][idx] for k in ("x", "y", "y_obs", "kind")}
        fi, ji = f[idx], jac[idx]
        resid = np.where(fi > 0, sub["y_obs"] - fi, 0.0)
        jac_t = ji.transpose(0, 2, 1)
        h, g = (jac_t * fi[:, None, :]) @ ji, (jac_t @ resid[..., None])[..., 0]
        # box trust region: clipping each component keeps a descent direction
        delta = np.clip(_solve_damped(h, g, lam[idx]), -limits, limits)
        p_try = p[idx] + delta
        f_try, jac_try, dev_try = _ldf_eval(
            p_try, sub, u[idx], v[idx], beta_fixed[idx], cfg, free_beta
        )
        accept = dev_try <= dev[idx]
        keep = idx[accept]
        p[keep], f[keep], jac[keep], dev[keep] = (
            p_try[accept], f_try[accept], jac_try[accept], dev_try[accept]
        )  # fmt: skip
        lam[idx] = np.clip(np.where(accept, lam[idx] * 0.3, lam[idx] * 10.0), 1e-7, 1e7)
        # only an accepted small step means convergence: a rejected one is small because of a
        # large damping
        small = accept & (np.abs(delta) < tol).all(axis=1)
        converged[idx[small]] = True
        idx = idx[~small]
    return p, converged & ok, dev


def _station_lists(
    signal: np.ndarray,
    time: np.ndarray,
    trigger: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    cfg: ReconstructionConfig,
) -> dict[str, np.ndarray]:
    """(n, K) lists: all triggered stations, then the silent ones nearest the barycentre.

    K = the most triggered stations of an event in the batch + cfg.n_silent (at most all
    stations); keys x, y, signal, time (float64), trigger (bool), y_obs (the observation of the
    LDF likelihood, VEM), kind (1 measured, 2 upper limit, 3 lower limit; int8).
    """
    n = signal.shape[0]
    n_st = sx.size
    sig = signal.reshape(n, n_st).astype(np.float64)
    trig = trigger.reshape(n, n_st).astype(bool)
    w = np.where(trig, sig, 0.0)
    wsum = np.maximum(w.sum(axis=1), 1e-300)
    bx, by = w @ sx / wsum, w @ sy / wsum
    d2 = (sx[None, :] - bx[:, None]) ** 2 + (sy[None, :] - by[:, None]) ** 2
    key = np.where(trig, -1.0, d2)
    k = min(n_st, int(trig.sum(axis=1).max(initial=0)) + cfg.n_silent)
    order = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n_st else np.argsort(key, axis=1)
    tr = np.take_along_axis(trig, order, axis=1)
    s = np.take_along_axis(sig, order, axis=1)
    t = np.take_along_axis(time.reshape(n, n_st).astype(np.float64), order, axis=1)
    sat = np.zeros_like(tr) if cfg.saturation_vem is None else tr & (s >= cfg.saturation_vem)
    kind = np.where(sat, 3, np.where(tr, 1, 2)).astype(np.int8)
    return {
        "x": sx[order],
        "y": sy[order],
        "signal": np.where(tr, s, 0.0),
        "time": np.where(tr, t, 0.0),
        "trigger": tr,
        "y_obs": np.where(tr, np.maximum(s, 1e-6), cfg.trigger_vem),
        "kind": kind,
        "bary_x": bx,
        "bary_y": by,
    }


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median of values[i, mask[i]] per row, (n,); 0 for rows without entries."""
    count = mask.sum(axis=1)
    srt = np.sort(np.where(mask, values, np.inf), axis=1)
    lo = np.take_along_axis(srt, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
    return 0.5 * (np.where(count > 0, lo, 0.0) + np.where(count > 0, hi, 0.0))


def _geometry_ok(st: dict[str, np.ndarray], cfg: ReconstructionConfig) -> np.ndarray:
    """Enough triggered stations, not aligned (smallest position-covariance eigenvalue)."""
    m = st["trigger"].astype(np.float64)
    cnt = m.sum(axis=1)
    c = np.maximum(cnt, 1.0)
    mx, my = (m * st["x"]).sum(axis=1) / c, (m * st["y"]).sum(axis=1) / c
    dx, dy = (st["x"] - mx[:, None]) * m, (st["y"] - my[:, None]) * m
    sxx, syy, sxy = (dx * dx).sum(axis=1) / c, (dy * dy).sum(axis=1) / c, (dx * dy).sum(axis=1) / c
    half_tr = 0.5 * (sxx + syy)
    lam_min = half_tr - np.sqrt(np.maximum(half_tr**2 - (sxx * syy - sxy * sxy), 0.0))
    return (cnt >= cfg.min_stations) & (lam_min > cfg.min_spread_m2)


def _reconstruct_chunk(
    signal: np.ndarray,
    time: np.ndarray,
    trigger: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    cal: SDCalibration,
    free_beta: bool,
) -> dict[str, np.ndarray]:
    cfg = cal.reconstruction
    st = _station_lists(signal, time, trigger, sx, sy, cfg)
    n = signal.shape[0]
    n_trig = st["trigger"].sum(axis=1)
    ok = _geometry_ok(st, cfg)
    mask = st["trigger"] & ok[:, None]

    # 1. plane front, weights with a nominal axis distance of 1 km (the core is not known yet)
    w = np.where(mask, 1.0 / time_sigma(st["signal"], 1000.0, cfg) ** 2, 0.0)
    u, v, _, _, _ = fit_plane_front(st["x"], st["y"], st["time"], w)
    zenith = np.arcsin(np.sqrt(u * u + v * v))
    kappa = curvature_prior(zenith, cfg) if cfg.curved_front else np.zeros(n)

    # 2. LDF from the barycentre. Start amplitude: median over the triggered stations of
    # ln(S / shape), with r clipped at 300 m (the barycentre sits close to the largest station,
    # where the LDF is steep: unclipped, that station would set a far too small S1000)
    beta = beta_of_zenith(zenith, cal.ldf_beta)
    r, _ = _axis_distance(
        st["x"] - st["bary_x"][:, None], st["y"] - st["bary_y"][:, None], u[:, None], v[:, None]
    )
    ln_ratio = np.log(np.maximum(st["signal"], 1e-3)) - np.log(
        ldf_shape(np.maximum(r, 300.0), beta[:, None], cfg.ldf_gamma)
    )
    ln_amp = _masked_median(ln_ratio, mask)
    cols = [ln_amp, st["bary_x"], st["bary_y"]]
    if free_beta:
        cols.append(beta)
    p = np.stack(cols, axis=1)
    n_iter = cfg.ldf_iterations
    for _ in range(cfg.n_passes):
        p, converged, dev = _fit_ldf(p, st, u, v, beta, ok, cfg, free_beta, n_iter)
        n_iter = cfg.ldf_iterations_refit
        if cfg.curved_front:
            u, v, kappa = _fit_curved_front(st, p[:, 1], p[:, 2], u, v, kappa, ok, cfg)
        else:  # plane refit with the axis distances of the fitted core
            r, _ = _axis_distance(st["x"] - p[:, 1:2], st["y"] - p[:, 2:3], u[:, None], v[:, None])
            w = np.where(mask, 1.0 / time_sigma(st["signal"], r, cfg) ** 2, 0.0)
            u, v, _, _, _ = fit_plane_front(st["x"], st["y"], st["time"], w)
        zenith = np.arcsin(np.sqrt(u * u + v * v))
        if not free_beta:  # beta of the new zenith and S1000, fixed during the next LDF fit
            beta = beta_of_zenith(zenith, cal.ldf_beta, np.exp(p[:, 0]), cal.ldf_beta_log_s)
    p, converged, dev = _fit_ldf(p, st, u, v, beta, ok, cfg, free_beta, n_iter)

    s1000 = np.exp(p[:, 0])
    valid = ok & np.isfinite(p).all(axis=1) & np.isfinite(u) & np.isfinite(v) & (s1000 > 0)
    if free_beta:
        beta = p[:, 3]
    return {
        "valid": valid,
        "n_stations": n_trig,
        "zenith": np.where(valid, zenith, 0.0),
        "azimuth": np.where(valid, np.mod(np.arctan2(v, u), 2.0 * np.pi), 0.0),
        "core_x": np.where(valid, p[:, 1], 0.0),
        "core_y": np.where(valid, p[:, 2], 0.0),
        "s1000": np.where(valid, s1000, 0.0),
        "beta": np.where(valid, beta, 0.0),
        "curvature": np.where(valid, kappa, 0.0),
        "ldf_converged": converged & valid,
        "ldf_deviance": np.where(valid, dev, 0.0),
    }


def reconstruct(
    arrays: Mapping[str, np.ndarray], calibration: SDCalibration, free_beta: bool = False
) -> SDReconstruction:
    """Reconstruct air-shower events: axis, core, S1000, S38 and energy.

    Args:
        arrays: ``station/signal`` (n, R, C) VEM, ``station/time`` (n, R, C) ns,
            ``station/trigger`` (n, R, C) bool and ``meta/station_x``, ``meta/station_y``
            (``meta/station_z`` optional, must be constant) (R, C) m: the arrays of an event file
            or of ``simulation.airshower.simulate``.
        calibration: LDF shape, CIC and energy scale (:func:`calibrate`; the defaults give an
            uncalibrated energy).
        free_beta: fit beta per event as well (used by :func:`calibrate`; needs many stations).
    """
    _check_arrays(arrays, "<arrays>")
    cfg = calibration.reconstruction
    sx = np.asarray(arrays["meta/station_x"], dtype=np.float64).ravel()
    sy = np.asarray(arrays["meta/station_y"], dtype=np.float64).ravel()
    n = arrays["station/signal"].shape[0]
    parts = []
    for start in range(0, max(n, 1), cfg.chunk_size):  # n = 0: one empty chunk
        sl = slice(start, start + cfg.chunk_size)
        parts.append(
            _reconstruct_chunk(
                np.asarray(arrays["station/signal"][sl]),
                np.asarray(arrays["station/time"][sl]),
                np.asarray(arrays["station/trigger"][sl]),
                sx,
                sy,
                calibration,
                free_beta,
            )
        )
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _with_energy(out, calibration)


def _with_energy(out: dict[str, np.ndarray], cal: SDCalibration) -> SDReconstruction:
    """Add S38 and the energy; events whose f_CIC is not positive (a CIC polynomial far outside
    its zenith range) become not reconstructed, and every output of an invalid event is 0."""
    s38 = s38_from_s1000(out["s1000"], out["zenith"], cal)
    valid = out["valid"] & (s38 > 0)
    e = energy_from_s38(s38, cal.energy_a_eev, cal.energy_b)
    out = out | {
        "s38": s38,
        "energy_eev": e,
        "log10_energy": np.log10(np.maximum(e, 1e-300)) + 18.0,
    }
    return SDReconstruction(
        **{
            k: v if k == "n_stations" else np.where(valid, v, np.zeros_like(v))
            for k, v in out.items()
        }
        | {"valid": valid}
    )


def _check_arrays(arrays: Mapping[str, Any], source: str) -> None:
    """Shapes of the station images against the geometry; a flat array. Names source + dataset."""
    for name in (*STATION_DATASETS, "meta/station_x", "meta/station_y"):
        if name not in arrays:
            raise KeyError(f"{source}: dataset {name!r} is missing")
    geo = tuple(np.shape(arrays["meta/station_x"]))
    for name in ("meta/station_y", "meta/station_z"):
        if name in arrays and tuple(np.shape(arrays[name])) != geo:
            raise ValueError(f"{source}: dataset {name!r} has shape {np.shape(arrays[name])}, "
                             f"but 'meta/station_x' has {geo}")  # fmt: skip
    n = None
    for name in STATION_DATASETS:
        shape = tuple(np.shape(arrays[name]))
        if shape[1:] != geo or (n is not None and shape[0] != n):
            raise ValueError(
                f"{source}: dataset {name!r} has shape {shape}, expected (n, {geo[0]}, {geo[1]}) "
                "like meta/station_x and the other station datasets"
            )
        n = shape[0]
    if "meta/station_z" in arrays:
        z = np.asarray(arrays["meta/station_z"], dtype=np.float64)
        if z.size and np.ptp(z) > 1.0:
            raise ValueError(
                f"{source}: dataset 'meta/station_z' varies by {np.ptp(z):.1f} m; the baseline "
                "reconstruction assumes a flat array"
            )


# --- calibration on the training split ----------------------------------------------------------


def fit_beta_parametrisation(
    zenith: np.ndarray,
    beta: np.ndarray,
    degree: int = 2,
    s1000: np.ndarray | None = None,
    n_clip: int = 3,
) -> tuple[tuple[float, ...], float]:
    """Least-squares beta = sum_k b_k (sec theta - 1)^k [+ c log10(S1000 / 30 VEM)], 3-sigma clipped.

    Returns ((b_0, ..., b_degree), c); c = 0 without ``s1000``.
    """
    sec = 1.0 / np.cos(zenith) - 1.0
    cols = [sec**k for k in range(degree + 1)]
    if s1000 is not None:
        cols.append(np.log10(np.maximum(s1000, 0.1) / LDF_S_REF))
    design = np.stack(cols, axis=1)
    keep = np.isfinite(beta)
    coeffs = np.zeros(design.shape[1])
    for _ in range(n_clip + 1):
        if keep.sum() <= design.shape[1]:
            raise ValueError(f"fit_beta_parametrisation: {int(keep.sum())} events are too few")
        coeffs = np.linalg.lstsq(design[keep], beta[keep], rcond=None)[0]
        res = beta - design @ coeffs
        keep = np.abs(res) <= 3.0 * np.std(res[keep]) + 1e-9  # (exact data: keep all)
    slope = float(coeffs[degree + 1]) if s1000 is not None else 0.0
    return tuple(float(c) for c in coeffs[: degree + 1]), slope


def full_efficiency_energy(
    lg_e: np.ndarray, valid: np.ndarray, target: float = 0.98, width: float = 0.1
) -> float:
    """Lowest log10(E/eV) from which every bin of ``width`` has a reconstructed fraction >= target.

    The scan starts at the sample's lowest energy (rounded down to ``width``); bins with fewer than
    20 events are ignored. Returns the lower edge of the first bin of the fully efficient run.
    """
    lo = np.floor(lg_e.min() / width + 1e-9) * width
    edges = np.arange(lo, lg_e.max() + width, width)
    idx = np.clip(np.digitize(lg_e, edges) - 1, 0, len(edges) - 1)
    counts = np.bincount(idx, minlength=len(edges))
    good = np.bincount(idx, weights=valid.astype(np.float64), minlength=len(edges))
    eff = np.where(counts > 0, good / np.maximum(counts, 1), 1.0)
    bad = (eff < target) & (counts >= 20)
    if not bad.any():
        return float(lo)
    return float(edges[min(np.flatnonzero(bad).max() + 1, len(edges) - 1)])


def fit_cic(
    s1000: np.ndarray,
    zenith: np.ndarray,
    n_per_bin: Sequence[int] | np.ndarray,
    n_bins: int = 8,
    zenith_max_deg: float = 60.0,
    energy_degree: int = 1,
    s38_ref: float = 40.0,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Constant-intensity fit of f_CIC (cubic in x = cos^2 t - cos^2 38 deg, f = 1 at 38 deg).

    Args:
        s1000: reconstructed S1000 (VEM) of the reconstructed events, (n,).
        zenith: their reconstructed zenith (rad), (n,); events above zenith_max_deg are ignored.
        n_per_bin: intensities: for each, the number of events per equal-exposure bin above the cut
            (the same in every bin of an isotropic flux), (n_cut,); or per bin, (n_bins, n_cut).
        n_bins: bins equally wide in cos^2(theta) over [cos^2(zenith_max), 1] (equal exposure for a
            flat array and an isotropic flux).
        energy_degree: degree of a, b, c in y = log10(S38 / s38_ref) (needs more intensities than
            energy_degree); 0 for one curve for all energies.

    Returns:
        The coefficients (a0, b0, c0, a1, b1, c1, ...) of :func:`cic_factor` and the S38 (VEM) of
        each intensity. The cut of intensity k in bin j is the n_per_bin[k]-th largest S1000 there;
        ln S_cut[j, k] = ln S38_k + ln f_CIC(x_j, y(S38_k)) is fitted jointly (least squares).
    """
    n_cut = np.shape(n_per_bin)[-1]
    n_above = np.broadcast_to(np.asarray(n_per_bin, dtype=np.int64), (n_bins, n_cut))
    if n_cut <= energy_degree:
        raise ValueError(f"fit_cic: {n_cut} intensities cannot fit energy_degree {energy_degree}")
    c2 = np.cos(zenith) ** 2
    c2_min = np.cos(np.radians(zenith_max_deg)) ** 2
    edges = np.linspace(c2_min, 1.0, n_bins + 1)
    x = 0.5 * (edges[:-1] + edges[1:]) - COS2_38
    cuts = np.empty((n_bins, n_cut))
    for j in range(n_bins):  # a handful of bins: the loop is over bins, not events
        vals = np.sort(s1000[(c2 >= edges[j]) & (c2 < edges[j + 1] + (j == n_bins - 1))])[::-1]
        for k, m in enumerate(n_above[j]):
            if not 1 <= m <= vals.size:
                raise ValueError(
                    f"fit_cic: bin {j} has {vals.size} events, intensity cut needs the {m}-th"
                )
            cuts[j, k] = vals[m - 1]
    log_cuts = np.log(cuts)

    def residuals(par: np.ndarray) -> np.ndarray:
        s38 = np.exp(par[:n_cut])
        f = cic_factor(np.arccos(np.sqrt(x + COS2_38))[:, None], par[n_cut:], s38[None], s38_ref)
        return (log_cuts - par[None, :n_cut] - np.log(np.maximum(f, 1e-6))).ravel()

    start = np.concatenate([log_cuts.mean(axis=0), np.zeros(3 * (energy_degree + 1))])
    sol = optimize.least_squares(residuals, start)
    return tuple(float(v) for v in sol.x[n_cut:]), tuple(float(v) for v in np.exp(sol.x[:n_cut]))


def fit_energy_calibration(
    s38: np.ndarray, lg_e_true: np.ndarray, bin_width: float = 0.1, min_events: int = 10
) -> tuple[float, float]:
    """(A in EeV, B) of E = A S38^B from the forward fit log10 S38 = alpha + beta log10(E/EeV).

    The line is fitted (least squares, weighted by the counts) through the medians of log10 S38
    and of the true log10 E in bins of the true energy (``bin_width``, bins with fewer than
    ``min_events`` events dropped), so that the median of E_rec / E_true is 1 at every energy
    where the relation is a power law (a mean fit would be pulled by the skewed mixed-mass
    spread), and outliers do not matter. Inverted: B = 1 / beta, A = 10^(-alpha / beta).
    """
    lg_s = np.log10(np.asarray(s38, dtype=np.float64))
    lg_e = np.asarray(lg_e_true, dtype=np.float64) - 18.0
    idx = np.floor((lg_e - lg_e.min()) / bin_width).astype(np.int64)
    order = np.argsort(idx, kind="stable")
    _, starts, counts = np.unique(idx[order], return_index=True, return_counts=True)
    xs, ys, ws = [], [], []
    for start, count in zip(starts, counts, strict=True):  # ~15 energy bins, not events
        if count >= min_events:
            members = order[start : start + count]
            xs.append(np.median(lg_e[members]))
            ys.append(np.median(lg_s[members]))
            ws.append(np.sqrt(count))
    if len(xs) < 2:
        raise ValueError(
            f"fit_energy_calibration: {len(xs)} energy bins with >= {min_events} events"
        )
    icpt, slope = np.polynomial.polynomial.polyfit(xs, ys, 1, w=ws)
    return float(10.0 ** (-icpt / slope)), float(1.0 / slope)


def _subset(arrays: Mapping[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {
        k: (np.asarray(v) if k.startswith("meta/") else np.asarray(v)[sel])
        for k, v in arrays.items()
        if k in STATION_DATASETS or k.startswith("meta/")
    }


def _calibrate_cic(
    cal: SDCalibration,
    cfg: CalibrationConfig,
    rec: SDReconstruction,
    use: np.ndarray,
    lg_true: np.ndarray,
    lg_full: float,
) -> SDCalibration:
    """The CIC step of :func:`calibrate`: intensities from the true energies, then :func:`fit_cic`.

    ``per_bin``: the intensity of cut k in bin j is the number of events of that bin above the
    true energy e_k. ``equal_exposure``: the same number in every bin, the sample's count above
    e_k / n_bins (what data allow). Cuts needing more than 90% of a bin's events are dropped
    (too close to the threshold).
    """
    c2_edges = np.linspace(np.cos(np.radians(cfg.zenith_max_deg)) ** 2, 1.0, cfg.cic_bins + 1)
    ibin = np.clip(np.digitize(np.cos(rec.zenith) ** 2, c2_edges) - 1, 0, cfg.cic_bins - 1)
    per_bin = np.bincount(ibin[use], minlength=cfg.cic_bins)
    energies, counts = [], []
    for offset in cfg.cic_cut_offsets:
        lg_cut = lg_full + offset
        above = use & (lg_true >= lg_cut)
        if cfg.cic_intensity == "per_bin":
            m = np.bincount(ibin[above], minlength=cfg.cic_bins)
        else:
            m = np.full(cfg.cic_bins, int(round(above.sum() / cfg.cic_bins)))
        if lg_cut < lg_true.max() - 0.1 and (m > 0).all() and (m <= 0.9 * per_bin).all():
            energies.append(lg_cut)
            counts.append(m)
    if len(counts) <= cfg.cic_energy_degree:
        raise ValueError(
            f"calibrate: {len(counts)} CIC intensities between the full-efficiency energy "
            f"{lg_full:.2f} and the sample's top {lg_true.max():.2f}; need more than "
            f"cic_energy_degree = {cfg.cic_energy_degree}"
        )
    cic, s38_cuts = fit_cic(
        rec.s1000[use], rec.zenith[use], np.stack(counts, axis=1), cfg.cic_bins, cfg.zenith_max_deg,
        cfg.cic_energy_degree, cal.cic_s38_ref,
    )  # fmt: skip
    # The S38 range of the CIC: from the full-efficiency energy (log10 S38 of the cuts
    # extrapolated linearly in their true energy) to the highest intensity cut.
    lg_s38 = np.log10(np.asarray(s38_cuts) / cal.cic_s38_ref)
    icpt, slope = np.polynomial.polynomial.polyfit(energies, lg_s38, 1)
    y_max = float(lg_s38.max())
    y_min = min(float(icpt + slope * lg_full), y_max)
    return replace(cal, cic=cic, cic_s38_cuts=s38_cuts, cic_y_range=(y_min, y_max))


def calibrate(
    arrays: Mapping[str, np.ndarray], cfg: CalibrationConfig = CalibrationConfig()
) -> SDCalibration:
    """Fit the LDF beta(theta), the CIC curve and E = A S38^B on a training split.

    ``arrays`` as for :func:`reconstruct` plus ``truth/log10_energy`` (n,). Steps: free-beta fits of
    the events with >= cfg.beta_min_stations stations -> beta(theta); reconstruction of all events
    with it; full-efficiency energy (reconstructed fraction per energy bin); CIC with intensities
    set by the true energies cfg.cic_cut_offsets above it; forward energy fit above it.
    """
    if "truth/log10_energy" not in arrays:
        raise KeyError("calibrate: dataset 'truth/log10_energy' is missing")
    lg_true = np.asarray(arrays["truth/log10_energy"], dtype=np.float64)
    cal = SDCalibration(reconstruction=cfg.reconstruction, zenith_max_deg=cfg.zenith_max_deg)
    n_trig = np.asarray(arrays["station/trigger"]).reshape(len(lg_true), -1).sum(axis=1)
    rich = n_trig >= cfg.beta_min_stations
    free = reconstruct(_subset(arrays, rich), cal, free_beta=True)
    good = free.valid & free.ldf_converged & (free.beta > -5.0) & (free.beta < 0.0)
    s1000 = free.s1000[good] if cfg.beta_s1000_dependence else None
    beta, slope = fit_beta_parametrisation(
        free.zenith[good], free.beta[good], cfg.beta_degree, s1000
    )
    cal = replace(cal, ldf_beta=beta, ldf_beta_log_s=slope)

    rec = reconstruct(arrays, cal)
    lg_full = full_efficiency_energy(
        lg_true, rec.valid, cfg.efficiency_target, cfg.efficiency_bin_width
    )
    use = rec.valid & (rec.zenith < np.radians(cfg.zenith_max_deg))
    cal = _calibrate_cic(cal, cfg, rec, use, lg_true, lg_full)
    s38 = s38_from_s1000(rec.s1000, rec.zenith, cal)
    sel = use & (lg_true >= lg_full) & (s38 > 0)
    a_eev, b = fit_energy_calibration(s38[sel], lg_true[sel])
    s38_full = (10.0 ** (lg_full - 18.0) / a_eev) ** (1.0 / b)
    return replace(
        cal,
        energy_a_eev=a_eev,
        energy_b=b,
        lg_e_full_efficiency=lg_full,
        s38_full_efficiency=float(s38_full),
        n_train=len(lg_true),
    )


# --- files --------------------------------------------------------------------------------------


def read_event_arrays(path: Path, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The station, meta and ``extra`` datasets of an air-shower event file, checked.

    Raises ``pipeline.events.EventFileError`` / ValueError naming the file and the dataset.
    """
    path = Path(path)
    need = (*STATION_DATASETS, "meta/station_x", "meta/station_y", *extra)
    with open_events(path, kind="airshower", require=need) as ev:
        arrays = {name: ev.read(name) for name in (*STATION_DATASETS, *extra)}
        for name in META_DATASETS:
            if name in ev.names:
                arrays[name] = ev.read_meta(name)
    _check_arrays(arrays, str(path))
    return arrays


def calibrate_file(
    events_path: Path, cfg: CalibrationConfig = CalibrationConfig()
) -> SDCalibration:
    """:func:`calibrate` on an event file (the training split)."""
    return calibrate(read_event_arrays(events_path, ("truth/log10_energy",)), cfg)


def reconstruct_file(
    events_path: Path,
    calibration: SDCalibration,
    out_path: Path,
    observers: Sequence[str] = ("n_triggered",),
    attrs: Mapping[str, Any] | None = None,
    calibration_path: Path | None = None,
) -> Path:
    """Reconstruct an event file into a predictions file (the schema of ``reco/evaluate.py``).

    Writes, for the reconstructed events only (rows in event-file order): ``prediction/
    log10_energy``, ``energy_eev``, ``s1000``, ``s38``, ``zenith``, ``azimuth``, ``core_x``,
    ``core_y`` (float32; units as :class:`SDReconstruction`), ``prediction/valid`` (bool, all
    True: the rows kept), ``truth/*`` (all of the event file's), ``observer/<name>`` (a bare name is
    ``truth/<name>``), ``observer/event_index`` (int64 row in the event file) and
    ``observer/n_stations``. Attributes: the event file's split, config_hash, seed; kind =
    "predictions", task = "regression", targets = ["log10_energy"], model = "classical_sd",
    model_config (the calibration JSON), checkpoint (``calibration_path`` if given),
    n_events_input, n_not_reconstructed, plus ``attrs``. Written atomically
    (``pipeline.events.write_events``). Events that cannot be reconstructed are left out, so the
    analysis never sees a placeholder.
    """
    events_path = Path(events_path)
    obs_paths = [o if "/" in o else f"truth/{o}" for o in observers]
    arrays = read_event_arrays(events_path, obs_paths)
    rec = reconstruct(arrays, calibration)
    keep = np.flatnonzero(rec.valid)
    out: dict[str, np.ndarray] = {
        f"prediction/{name}": getattr(rec, name)[keep].astype(np.float32)
        for name in ("log10_energy", "energy_eev", "s1000", "s38", "zenith", "azimuth",
                     "core_x", "core_y")
    }  # fmt: skip
    out["prediction/valid"] = np.ones(keep.size, dtype=bool)
    with open_events(events_path, kind="airshower") as ev:
        for name in ev.names:
            if name.startswith("truth/"):
                out[name] = ev.read(name)[keep]
        file_attrs = {k: v for k, v in ev.attrs.items() if k in ("split", "config_hash", "seed")}
    for obs, path in zip(observers, obs_paths, strict=True):
        out[f"observer/{obs.rsplit('/', 1)[-1]}"] = arrays[path][keep]
    out["observer/event_index"] = keep.astype(np.int64)
    out["observer/n_stations"] = rec.n_stations[keep].astype(np.int16)
    file_attrs |= {
        "kind": "predictions",
        "events_kind": "airshower",
        "events_file": str(events_path.absolute()),
        "model": MODEL_NAME,
        "model_config": json.dumps(calibration.to_dict(), sort_keys=True),
        "targets": json.dumps(["log10_energy"]),
        "task": "regression",
        "checkpoint": str(calibration_path) if calibration_path is not None else None,
        "n_events_input": int(rec.valid.size),
        "n_not_reconstructed": int(rec.valid.size - keep.size),
        **(attrs or {}),
    }
    return write_events(Path(out_path), out, file_attrs)
