"""Figures of the energy analysis (matplotlib + mplhep style), each saved as a PNG.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``, rendered by Agg),
never through ``pyplot``: no global figure registry, no GUI backend, nothing left open after a
function returns, and the caller's own pyplot state and rcParams are untouched (the mplhep style is
applied in a ``matplotlib.style.context``). Every function writes atomically (temporary name, then
``os.replace``) and returns the path of the PNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis.binned import BinnedSummary, Summary
from pipeline.atomic import atomic_path

_STYLE = mplhep.style.ATLAS  # a dict of rcParams; ATLAS-like fonts and ticks
_DPI = 100


@contextmanager
def _figure(
    path: Path, nrows: int = 1, height_ratios: tuple[float, ...] | None = None
) -> Iterator[tuple[Figure, list]]:
    """Yield (figure, axes list) in the mplhep style; save it to ``path`` (PNG) on exit."""
    with matplotlib.style.context(_STYLE):
        fig = Figure(figsize=(8, 6 if nrows == 1 else 8), layout="constrained")
        gs = {"height_ratios": height_ratios} if height_ratios else None
        axes = fig.subplots(nrows, 1, sharex=nrows > 1, gridspec_kw=gs, squeeze=False)[:, 0]
        yield fig, list(axes)
        _label(axes[0])
        save_png(fig, path)


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically (temporary name, then ``os.replace``).

    Raises:
        OSError: naming ``path`` (a full or read-only disk); nothing is left behind.
    """
    with atomic_path(path, "the plot") as tmp:  # the earlier plot stays on a failure
        fig.savefig(tmp, format="png", dpi=_DPI)


def _label(ax) -> None:
    """Experiment-style label ("reco Simulation", air showers) in the top-left corner.

    Written by hand: mplhep's ``exp_label`` calls ``pyplot.gca()`` and so opens a pyplot figure.
    """
    ax.text(0.0, 1.01, "reco", transform=ax.transAxes, ha="left", va="bottom", weight="bold")
    ax.text(
        0.11, 1.01, "Simulation", transform=ax.transAxes, ha="left", va="bottom", style="italic"
    )
    ax.text(1.0, 1.01, "air showers", transform=ax.transAxes, ha="right", va="bottom")


def _headroom(ax, factor: float = 1.4) -> None:
    """Start the y axis at 0 and leave room above the data for the legend."""
    top = ax.get_ylim()[1]
    ax.set_ylim(0.0, top * factor if top > 0 else 1.0)


def _errorbar(ax, binned: BinnedSummary, name: str, scale: float, **kwargs) -> None:
    y, err = binned.column(name) * scale, binned.column(f"{name}_err") * scale
    ok = np.isfinite(y)
    ax.errorbar(
        binned.centers[ok],
        y[ok],
        xerr=binned.half_widths[ok],
        yerr=np.nan_to_num(err[ok]),
        fmt="o",
        **kwargs,
    )


def plot_resolution_vs_energy(binned: BinnedSummary, path: Path) -> Path:
    """Resolution (68% half-width, Gaussian-core sigma) and median bias vs true log10(E/eV).

    Two panels sharing the x axis, values in percent with 1-sigma error bars; bins without
    enough events are left out.
    """
    with _figure(path, nrows=2, height_ratios=(2.0, 1.0)) as (_, (ax_res, ax_bias)):
        _errorbar(ax_res, binned, "resolution_68", 100.0, label="68% half-width")
        _errorbar(ax_res, binned, "gauss_sigma", 100.0, label="Gaussian core σ", mfc="none")
        ax_res.set_ylabel(r"$\sigma(E_\mathrm{rec}/E_\mathrm{true})$ [%]")
        _headroom(ax_res)
        ax_res.legend(loc="upper right")
        _errorbar(ax_bias, binned, "bias_median", 100.0, color="k")
        ax_bias.axhline(0.0, color="grey", lw=1, ls="--")
        ax_bias.set_ylabel("median bias [%]")
        ax_bias.set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
    return path


def plot_resolution_vs_zenith(binned: BinnedSummary, path: Path) -> Path:
    """Resolution (68% half-width, Gaussian-core sigma) vs true zenith in degrees, in percent."""
    with _figure(path) as (_, (ax,)):
        _errorbar(ax, binned, "resolution_68", 100.0, label="68% half-width")
        _errorbar(ax, binned, "gauss_sigma", 100.0, label="Gaussian core σ", mfc="none")
        ax.set_ylabel(r"$\sigma(E_\mathrm{rec}/E_\mathrm{true})$ [%]")
        ax.set_xlabel(r"true zenith $\theta$ [deg]")
        _headroom(ax)
        ax.legend(loc="upper right")
    return path


def plot_reco_vs_true(lg_true: np.ndarray, lg_rec: np.ndarray, path: Path, bins: int = 60) -> Path:
    """2-D histogram of reconstructed vs true log10(E/eV) (both shape (n,)) with the diagonal.

    Non-finite reconstructed values (log10 of a non-positive predicted energy) are left out.
    """
    ok = np.isfinite(lg_rec) & np.isfinite(lg_true)
    x, y = np.asarray(lg_true)[ok], np.asarray(lg_rec)[ok]
    lo = float(min(x.min(), y.min())) if x.size else 18.0
    hi = float(max(x.max(), y.max())) if x.size else 20.0
    hi = hi if hi > lo else lo + 1.0
    with _figure(path) as (fig, (ax,)):
        counts, _, _ = np.histogram2d(x, y, bins=bins, range=[[lo, hi], [lo, hi]])
        counts = np.ma.masked_equal(counts, 0.0)  # empty cells white, LogNorm never sees a zero
        norm = LogNorm(vmin=1.0, vmax=max(float(counts.max()) if counts.count() else 1.0, 2.0))
        mesh = ax.pcolormesh(
            np.linspace(lo, hi, bins + 1),
            np.linspace(lo, hi, bins + 1),
            counts.T,
            norm=norm,
            cmap="viridis",
        )
        fig.colorbar(mesh, ax=ax, label="events")
        ax.plot(
            [lo, hi],
            [lo, hi],
            color="r",
            lw=1.5,
            ls="--",
            label=r"$E_\mathrm{rec} = E_\mathrm{true}$",
        )
        ax.set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
        ax.set_ylabel(r"reconstructed $\log_{10}(E/\mathrm{eV})$")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.92))
    return path


def plot_residual_histogram(rel: np.ndarray, summary: Summary, path: Path, bins: int = 80) -> Path:
    """Histogram of (E_rec - E_true)/E_true (shape (n,)) in percent, with the Gaussian-core fit.

    The overlay is the Gaussian of ``summary.gauss_mu`` / ``gauss_sigma`` scaled to the number of
    events in the core (the +-2 sigma window), drawn over the histogram's range.
    """
    r = np.asarray(rel, np.float64) * 100.0
    half = 5.0 * (
        summary.resolution_68 * 100.0
        if np.isfinite(summary.resolution_68) and summary.resolution_68 > 0
        else 10.0
    )
    center = summary.bias_median * 100.0 if np.isfinite(summary.bias_median) else 0.0
    lo, hi = center - half, center + half
    with _figure(path) as (_, (ax,)):
        counts, edges = np.histogram(r, bins=bins, range=(lo, hi))
        mplhep.histplot(counts, edges, ax=ax, label=f"events (n = {summary.n})", color="k")
        if np.isfinite(summary.gauss_sigma):
            mu, sigma = summary.gauss_mu * 100.0, summary.gauss_sigma * 100.0
            n_core = np.sum(np.abs(r - mu) < 2.0 * sigma)
            width = edges[1] - edges[0]
            xs = np.linspace(lo, hi, 400)
            # n_core events lie within +-2 sigma, i.e. a fraction 0.9545 of the Gaussian's area.
            ys = (
                n_core
                / 0.9545
                * width
                / (np.sqrt(2 * np.pi) * sigma)
                * np.exp(-0.5 * ((xs - mu) / sigma) ** 2)
            )
            ax.plot(xs, ys, color="r", label=f"Gaussian core: μ = {mu:.2f}%, σ = {sigma:.2f}%")
        ax.set_xlabel(r"$(E_\mathrm{rec} - E_\mathrm{true}) / E_\mathrm{true}$ [%]")
        ax.set_ylabel(f"events / {(hi - lo) / bins:.2g}%")
        _headroom(ax)
        ax.legend(loc="upper right")
    return path


def plot_comparison_vs_energy(
    series: dict[str, dict[str, np.ndarray]], labels: dict[str, str], path: Path
) -> Path:
    """Resolution and median bias of several reconstructions against true log10(E/eV).

    Args:
        series: run name -> quantity -> Float[Array, "bins 6"], the columns (lo, hi, resolution,
            resolution error, bias, bias error) per energy bin, already in display units.
        labels: quantity -> axis label (with its unit).
        path: the PNG to write.

    One row of panels per quantity (resolution above, bias below), one marker style per run,
    slightly offset in x so the error bars stay readable.
    """
    quantities = [q for q in labels if any(q in s for s in series.values())]
    with matplotlib.style.context(_STYLE):
        fig = Figure(figsize=(6.5 * len(quantities), 8), layout="constrained")
        axes = fig.subplots(2, len(quantities), sharex=True, squeeze=False)
        markers = "osD^vP*X"
        ncol = 1 if len(series) <= 3 else 2
        ncol_rows = -(-len(series) // ncol)
        for i, (name, per_q) in enumerate(series.items()):
            for j, q in enumerate(quantities):
                if q not in per_q:
                    continue
                a = per_q[q]
                centre, half = 0.5 * (a[:, 0] + a[:, 1]), 0.5 * (a[:, 1] - a[:, 0])
                x = centre + (i - 0.5 * (len(series) - 1)) * 0.15 * half
                style = {"fmt": markers[i % len(markers)], "color": f"C{i}", "capsize": 2}
                style["label"] = name
                axes[0, j].errorbar(x, a[:, 2], yerr=np.nan_to_num(a[:, 3]), **style)
                axes[1, j].errorbar(x, a[:, 4], yerr=np.nan_to_num(a[:, 5]), **style)
        for j, q in enumerate(quantities):
            axes[0, j].set_ylabel(f"$\\sigma_{{68}}$ {labels[q]}")
            _headroom(axes[0, j], 1.3 + 0.15 * ncol_rows)  # room for the legend's rows
            axes[1, j].axhline(0.0, color="grey", lw=1, ls="--")
            axes[1, j].set_ylabel(f"median bias {labels[q]}")
            axes[1, j].set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
            _label(axes[0, j])
        axes[0, 0].legend(loc="upper right", ncol=ncol, fontsize="small")
        save_png(fig, path)
    return path
