"""Figures of the mass-composition analysis (matplotlib + mplhep style), each saved as a PNG.

Same conventions as :mod:`analysis.plots`, whose figure context they use: object-oriented
``Figure`` (Agg), no ``pyplot``, the mplhep style applied in a ``matplotlib.style.context``, atomic
writes; every function returns the path of the PNG. Depths in g/cm^2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import mplhep
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from analysis.binned import BinnedSummary
from analysis.plots import _errorbar, _figure, _headroom

if TYPE_CHECKING:  # type hints only: composition imports this module
    from analysis.composition import ElongationCurve, XmaxExpectations

#: Colours of the primaries (p red ... Fe blue, the usual convention); others are grey.
COLORS = {"p": "tab:red", "He": "tab:orange", "N": "tab:green", "Fe": "tab:blue"}
_MF_LABELS = {"xmax": r"reconstructed $X_\mathrm{max}$", "lna": r"reconstructed $\ln A$",
              "xmax_true": r"true $X_\mathrm{max}$ (physical limit)"}  # fmt: skip
_MF_STYLE = {"xmax": ("o", "tab:blue"), "lna": ("s", "tab:red"), "xmax_true": ("^", "k")}


def _color(primary: str) -> str:
    return COLORS.get(primary, "grey")


def _room_above(ax, factor: float = 0.45) -> None:
    """Extend the y axis upwards by ``factor`` of its range, for the legend."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + factor * (hi - lo))


def plot_residual_vs_energy(binned: BinnedSummary, symbol: str, unit: str, path: Path) -> Path:
    """Resolution (68% half-width, standard deviation) and bias (median, mean) of rec - true.

    ``binned`` summarises the residual in bins of true log10(E/eV) (``analysis.binned`` fields in
    the residual's unit; ``sigma_eev`` is its standard deviation); ``symbol`` is LaTeX without
    dollars (e.g. ``X_\\mathrm{max}``), ``unit`` the axis unit ("" for none).
    """
    tail = f" [{unit}]" if unit else ""
    diff = rf"${symbol}^\mathrm{{rec}} - {symbol}^\mathrm{{true}}$"
    with _figure(path, nrows=2, height_ratios=(2.0, 1.0)) as (_, (ax_res, ax_bias)):
        _errorbar(ax_res, binned, "resolution_68", 1.0, label="68% half-width")
        _errorbar(ax_res, binned, "sigma_eev", 1.0, label="standard deviation", mfc="none")
        ax_res.set_ylabel(f"resolution of {diff}{tail}", fontsize="small")
        _headroom(ax_res)
        ax_res.legend(loc="upper right")
        _errorbar(ax_bias, binned, "bias_median", 1.0, color="k", label="median")
        _errorbar(ax_bias, binned, "bias_mean", 1.0, color="grey", mfc="none", label="mean")
        ax_bias.axhline(0.0, color="grey", lw=1, ls="--")
        ax_bias.set_ylabel(f"bias{tail}", fontsize="small")
        ax_bias.set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
        ax_bias.legend(loc="upper right", ncol=2, fontsize="small")
    return path


def plot_xmax_reco_vs_true(
    xmax_true: np.ndarray, xmax_rec: np.ndarray, path: Path, bins: int = 60
) -> Path:
    """2-D histogram of reconstructed vs true Xmax (both shape (n,), g/cm^2) with the diagonal.

    The range is the 0.1-99.9% quantiles of both, so a few outliers do not squeeze the core.
    """
    both = np.concatenate([np.asarray(xmax_true, np.float64), np.asarray(xmax_rec, np.float64)])
    lo, hi = (float(v) for v in np.quantile(both, [0.001, 0.999])) if both.size else (500.0, 1000.0)
    hi = hi if hi > lo else lo + 100.0
    with _figure(path) as (fig, (ax,)):
        counts, _, _ = np.histogram2d(xmax_true, xmax_rec, bins=bins, range=[[lo, hi], [lo, hi]])
        counts = np.ma.masked_equal(counts, 0.0)  # empty cells white, LogNorm never sees a zero
        norm = LogNorm(vmin=1.0, vmax=max(float(counts.max()) if counts.count() else 1.0, 2.0))
        grid = np.linspace(lo, hi, bins + 1)
        mesh = ax.pcolormesh(grid, grid, counts.T, norm=norm, cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="events")
        ax.plot([lo, hi], [lo, hi], color="r", lw=1.5, ls="--", label="rec = true")
        ax.set_xlabel(r"true $X_\mathrm{max}$ [g/cm$^2$]")
        ax.set_ylabel(r"reconstructed $X_\mathrm{max}$ [g/cm$^2$]")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.92))
    return path


def plot_lna_distributions(
    lna_rec: np.ndarray, mass_number: np.ndarray, path: Path, bins: int = 50
) -> Path:
    """Distributions of the reconstructed ln A (n,), one per true primary (mass number (n,)).

    Dashed lines mark each primary's true ln A.
    """
    from analysis.composition import primary_name  # here: composition imports this module

    x = np.asarray(lna_rec, np.float64)
    q_lo, q_hi = np.quantile(x, [0.001, 0.999]) if x.size else (0.0, 4.0)
    edges = np.linspace(min(-1.0, q_lo), max(5.0, q_hi), bins + 1)
    with _figure(path) as (_, (ax,)):
        for a in np.unique(mass_number):
            name = primary_name(a)
            sel = x[mass_number == a]
            counts, _ = np.histogram(sel, bins=edges)
            mplhep.histplot(
                counts, edges, ax=ax, color=_color(name), label=f"{name} (n = {sel.size})"
            )
            ax.axvline(np.log(float(a)), color=_color(name), ls="--", lw=1)
        ax.set_xlabel(r"reconstructed $\ln A$")
        ax.set_ylabel(f"events / {edges[1] - edges[0]:.2g}")
        _headroom(ax)
        ax.legend(loc="upper right")
    return path


def plot_elongation(
    curves: Sequence[ElongationCurve],
    edges: Sequence[float],
    path: Path,
    expectations: XmaxExpectations | None = None,
    expectation_label: str = "EPOS-LHC",
) -> Path:
    """<Xmax> (top) and sigma(Xmax) (bottom) vs true log10(E/eV), per primary.

    Filled circles: reconstructed Xmax; open squares (shifted right by 1/10 of the half bin
    width, for legibility): true Xmax; lines: ``expectations`` (primary -> (lgE grid, mean,
    sigma)), drawn when given. Bins with too few events (NaN) are left out.
    """
    e = np.asarray(edges, np.float64)
    centers, half = 0.5 * (e[1:] + e[:-1]), 0.5 * np.diff(e)
    with _figure(path, nrows=2, height_ratios=(1.6, 1.0)) as (_, (ax_m, ax_s)):
        for c in curves:
            rec = c.source == "rec"
            x = centers if rec else centers + 0.1 * half
            style = {"fmt": "o" if rec else "s", "color": _color(c.primary), "ms": 5}
            if not rec:
                style["mfc"] = "none"
            for ax, y, err in ((ax_m, c.mean, c.mean_err), (ax_s, c.std, c.std_err)):
                ok = np.isfinite(y)
                if ok.any():
                    ax.errorbar(x[ok], y[ok], xerr=half[ok], yerr=np.nan_to_num(err[ok]), **style)
        for name, (grid, mean, sigma) in (expectations or {}).items():
            g = np.asarray(grid, np.float64)
            inside = (g >= e[0]) & (g <= e[-1])
            ax_m.plot(g[inside], np.asarray(mean)[inside], color=_color(name), lw=1.2)
            ax_s.plot(g[inside], np.asarray(sigma)[inside], color=_color(name), lw=1.2)
        primaries = list(dict.fromkeys(c.primary for c in curves))
        handles = [Line2D([], [], color=_color(p), marker="o", ls="", label=p) for p in primaries]
        handles += [
            Line2D([], [], color="k", marker="o", ls="", label="reconstructed"),
            Line2D([], [], color="k", marker="s", mfc="none", ls="", label="true"),
        ]
        if expectations:
            handles.append(Line2D([], [], color="k", lw=1.2, label=expectation_label))
        ax_m.set_ylabel(r"$\langle X_\mathrm{max} \rangle$ [g/cm$^2$]")
        _room_above(ax_m)
        ax_m.legend(handles=handles, loc="upper left", ncol=3, fontsize="small")
        ax_s.set_ylabel(r"$\sigma(X_\mathrm{max})$ [g/cm$^2$]")
        _headroom(ax_s, 1.15)
        ax_s.set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
    return path


def plot_merit_factor_vs_energy(
    edges: Sequence[float], merit: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path
) -> Path:
    """p-vs-Fe merit factor vs true log10(E/eV) with 1-sigma errors.

    ``merit`` maps "xmax" (reconstructed), "lna" (reconstructed ln A) and "xmax_true" to (values,
    errors), each (n_bins,) with NaN where a bin lacks p or Fe (left out).
    """
    e = np.asarray(edges, np.float64)
    centers, half = 0.5 * (e[1:] + e[:-1]), 0.5 * np.diff(e)
    with _figure(path) as (_, (ax,)):
        for kind, (value, err) in merit.items():
            ok = np.isfinite(value)
            marker, color = _MF_STYLE.get(kind, ("o", "grey"))
            ax.errorbar(
                centers[ok], value[ok], xerr=half[ok], yerr=np.nan_to_num(err[ok]), fmt=marker,
                color=color, label=_MF_LABELS.get(kind, kind),
            )  # fmt: skip
        ax.set_ylabel(r"merit factor p vs Fe")
        ax.set_xlabel(r"true $\log_{10}(E/\mathrm{eV})$")
        _headroom(ax)
        ax.legend(loc="upper right")
    return path
