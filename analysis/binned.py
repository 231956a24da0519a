"""Resolution and bias of the energy in bins of a true variable (log10 E, zenith), and their table.

A :class:`Summary` holds every metric of one sample of events (all events, or one bin);
:func:`bin_summaries` cuts the sample into bins of a variable and summarises each bin. Bins are
half-open [lo, hi) except the last, which is closed [lo, hi], so an event exactly at the upper edge
of the range (e.g. log10(E/eV) = 20.0) is counted. Events outside the edges are counted in
``n_under`` / ``n_over`` and in no bin. A bin with fewer than ``min_events`` events keeps its count
and has NaN metrics: the count says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from analysis import metrics


@dataclass(frozen=True)
class Summary:
    """Metrics of one sample of events; relative quantities are dimensionless, sigma_eev in EeV.

    Every float is NaN when the sample has fewer than ``min_events`` events (``n`` tells).
    """

    n: int  # number of events
    bias_median: float  # median of (E_rec - E_true) / E_true
    bias_median_err: float  # 1-sigma error (order-statistic interval)
    bias_mean: float  # mean of (E_rec - E_true) / E_true
    bias_mean_err: float  # 1-sigma error, std / sqrt(n)
    resolution_68: float  # (q84 - q16) / 2 of (E_rec - E_true) / E_true
    resolution_68_err: float  # 1-sigma error (order-statistic intervals)
    gauss_mu: float  # mean of the 2-sigma-clipped Gaussian core of the relative residual
    gauss_sigma: float  # sigma of that Gaussian core
    gauss_sigma_err: float  # 1-sigma error of gauss_sigma (asymptotic)
    sigma_eev: float  # std of E_rec - E_true, EeV
    sigma_eev_err: float  # 1-sigma error, sigma / sqrt(2 (n - 1))


def summarize(rel: np.ndarray, diff_eev: np.ndarray, min_events: int = 1) -> Summary:
    """Summarise one sample.

    Args:
        rel: (n,) relative residuals (E_rec - E_true) / E_true.
        diff_eev: (n,) E_rec - E_true in EeV.
        min_events: below this many events every metric is NaN (the count is kept).
    """
    rel, diff_eev = np.asarray(rel, np.float64), np.asarray(diff_eev, np.float64)
    if rel.shape != diff_eev.shape or rel.ndim != 1:
        raise ValueError(f"rel {rel.shape} and diff_eev {diff_eev.shape} must be equal 1-D shapes")
    n = int(rel.size)
    if n < max(min_events, 1):
        nan = float("nan")
        return Summary(n, *([nan] * (len(fields(Summary)) - 1)))
    mu, sigma, sigma_err, _ = metrics.gaussian_core(rel)
    return Summary(
        n=n,
        bias_median=metrics.bias_median(rel),
        bias_median_err=metrics.quantile_error(rel, 0.5),
        bias_mean=metrics.bias_mean(rel),
        bias_mean_err=metrics.mean_error(rel),
        resolution_68=metrics.half_width_68(rel),
        resolution_68_err=metrics.half_width_68_error(rel),
        gauss_mu=mu,
        gauss_sigma=sigma,
        gauss_sigma_err=sigma_err,
        sigma_eev=metrics.std(diff_eev),
        sigma_eev_err=metrics.std_error(diff_eev),
    )


@dataclass(frozen=True)
class BinnedSummary:
    """Per-bin summaries of a sample binned in ``variable``.

    ``edges`` has shape (n_bins + 1,) in the unit ``unit``; ``rows[i]`` summarises bin
    [edges[i], edges[i + 1]).
    """

    variable: str  # e.g. "lgE" (log10(E_true/eV)) or "zen" (true zenith)
    unit: str  # unit of the edges, e.g. "log10(E/eV)" or "deg"
    edges: tuple[float, ...]  # bin edges, increasing
    rows: tuple[Summary, ...]  # one per bin
    n_under: int  # events below edges[0]
    n_over: int  # events above edges[-1]

    @property
    def centers(self) -> np.ndarray:
        """(n_bins,) bin centres."""
        e = np.asarray(self.edges)
        return 0.5 * (e[1:] + e[:-1])

    @property
    def half_widths(self) -> np.ndarray:
        """(n_bins,) half the bin widths (horizontal error bars)."""
        return 0.5 * np.diff(np.asarray(self.edges))

    def column(self, name: str) -> np.ndarray:
        """(n_bins,) the field ``name`` of :class:`Summary` across bins (float; ``n`` as float)."""
        return np.array([float(getattr(r, name)) for r in self.rows])

    def labels(self, fmt: str = "{:g}") -> list[str]:
        """Per-bin labels "lo-hi" with ``fmt`` applied to each edge, e.g. "18.50-18.75"."""
        return [
            f"{fmt.format(lo)}-{fmt.format(hi)}"
            for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)
        ]


def assign_bins(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of every value, shape (n,) int: 0..n_bins-1, -1 below, n_bins above the range.

    Bins are [lo, hi) except the last, which includes its upper edge.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(
            f"bin edges must be at least 2 strictly increasing values, got {tuple(edges)}"
        )
    x = np.asarray(x, dtype=np.float64)
    idx = np.searchsorted(e, x, side="right") - 1
    n_bins = e.size - 1
    idx[x == e[-1]] = n_bins - 1
    idx[idx >= n_bins] = n_bins
    return idx


def bin_summaries(
    x: np.ndarray,
    rel: np.ndarray,
    diff_eev: np.ndarray,
    edges: Sequence[float],
    variable: str,
    unit: str,
    min_events: int = 1,
) -> BinnedSummary:
    """Summaries of (rel, diff_eev) in bins of x (all shape (n,)); see :func:`summarize`."""
    idx = assign_bins(x, edges)
    n_bins = len(edges) - 1
    rows = tuple(summarize(rel[idx == i], diff_eev[idx == i], min_events) for i in range(n_bins))
    return BinnedSummary(
        variable=variable,
        unit=unit,
        edges=tuple(float(v) for v in edges),
        rows=rows,
        n_under=int(np.sum(idx < 0)),
        n_over=int(np.sum(idx >= n_bins)),
    )


def _pm(value: float, err: float, scale: float, digits: int) -> str:
    if math.isnan(value):
        return "–"
    if math.isnan(err):
        return f"{value * scale:.{digits}f}"
    return f"{value * scale:.{digits}f} ± {err * scale:.{digits}f}"


def render_markdown(binned: BinnedSummary, edge_fmt: str = "{:.2f}") -> str:
    """Markdown table of a binned summary: one row per bin, relative metrics in percent.

    Columns: bin range, n, median bias, 68% half-width, Gaussian-core sigma (all in %) and
    sigma(E_rec - E_true) in EeV, each "value ± 1-sigma error"; "–" where a bin has too few events.
    """
    lines = [
        f"| {binned.variable} [{binned.unit}] | n | bias (median) [%] | resolution 68% [%] "
        "| Gaussian σ [%] | σ(E_rec − E_true) [EeV] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in zip(binned.labels(edge_fmt), binned.rows, strict=True):
        lines.append(
            f"| {label} | {r.n} | {_pm(r.bias_median, r.bias_median_err, 100, 2)} "
            f"| {_pm(r.resolution_68, r.resolution_68_err, 100, 2)} "
            f"| {_pm(r.gauss_sigma, r.gauss_sigma_err, 100, 2)} "
            f"| {_pm(r.sigma_eev, r.sigma_eev_err, 1, 3)} |"
        )
    if binned.n_under or binned.n_over:
        lines.append("")
        lines.append(f"Outside the bins: {binned.n_under} below, {binned.n_over} above.")
    return "\n".join(lines) + "\n"
