"""Calibration of the classical SD reconstruction (:mod:`analysis.baselines`) on the training split.

Holds :class:`CalibrationConfig`, the fits (:func:`fit_beta_parametrisation`,
:func:`full_efficiency_energy`, :func:`fit_cic`, :func:`fit_energy_calibration`) and
:func:`calibrate`, which runs them on events reconstructed by :func:`analysis.sd_fits.reconstruct`
and returns an :class:`analysis.sd_common.SDCalibration`:

1. **LDF beta**: quadratic in (sec theta - 1) + linear in log10(S1000 / 30 VEM), fitted to
   free-beta fits of the events with >= 6 stations (the toy's LDF is the sum of a muonic and an EM
   part of different slopes, so the effective single slope depends on both).
2. **CIC**: S38 = S1000 / f_CIC(theta, S38), f_CIC = 1 + a x + b x^2 + c x^3,
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
3. **Energy**: E = A S38^B, from a fit of log10 S38 against the true log10 E of the training
   events above the full-efficiency energy (a line through the medians in bins of true energy),
   inverted. This forward direction makes the estimator median-unbiased at every true energy
   whatever the spectrum; regressing log E on log S38 instead gives an estimate unbiased at fixed
   S38, which depends on the simulated spectrum and is pulled towards the centre of the range near
   its edges (an Eddington-like bias of the order of the resolution there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import optimize

from analysis.sd_common import (
    COS2_38,
    LDF_S_REF,
    STATION_DATASETS,
    ReconstructionConfig,
    SDCalibration,
    SDReconstruction,
    cic_factor,
    s38_from_s1000,
)
from analysis.sd_fits import reconstruct


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
