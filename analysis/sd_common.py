"""Shared parts of the classical SD reconstruction (:mod:`analysis.baselines`): constants,
settings, result types and the calibrated parametrisations.

Holds :class:`ReconstructionConfig` (settings of the event reconstruction), :class:`SDCalibration`
(everything fitted on the training split; JSON), :class:`SDReconstruction` (per-event results),
the parametrisations that the calibration fits and the reconstruction applies (the LDF beta of
:func:`beta_of_zenith`, f_CIC of :func:`cic_factor`, S38 of :func:`s38_from_s1000`, E = A S38^B of
:func:`energy_from_s38`) and the check of the input arrays (``_check_arrays``).
:mod:`analysis.sd_fits` (the reconstruction) and :mod:`analysis.sd_calibration` (the fits on the
training split) build on it; it imports neither.

Conventions (those of ``simulation/airshower``, docs/architecture.md; this module does not import
it): x east, y north, z up (m); the axis u = (sin t cos p, sin t sin p, cos t) points from the ground
to where the shower comes from; azimuth p from x, counter-clockwise, in [0, 2 pi); station times in
ns relative to the core-plane crossing; signals in VEM. The array must be flat (``meta/station_z``
constant, checked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_atomic
from pipeline.config import from_dict, to_dict

C_LIGHT = 0.299792458  # m/ns
COS2_38 = float(np.cos(np.radians(38.0)) ** 2)
STATION_DATASETS = ("station/signal", "station/time", "station/trigger")
CALIBRATION_VERSION = 1
LDF_S_REF = 30.0  # VEM, reference S1000 of the S1000 dependence of the LDF beta


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
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        return write_atomic(path, text, "the calibration")

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


# --- calibrated parametrisations --------------------------------------------------------------


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


# --- input checks -----------------------------------------------------------------------------


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
