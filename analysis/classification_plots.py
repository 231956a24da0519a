"""Figures of the jet-tagging analysis (matplotlib + mplhep style), each saved as a PNG.

Same conventions as :mod:`analysis.plots`: object-oriented ``Figure`` (Agg), no ``pyplot``, the
mplhep style applied in a ``matplotlib.style.context``, atomic writes (temporary name, then
``os.replace``); every function returns the path of the PNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.figure import Figure

from analysis.classification import BinaryPerformance
from analysis.plots import save_png

_STYLE = mplhep.style.ATLAS  # a dict of rcParams; ATLAS-like fonts and ticks
_DPI = 100


def _label(ax, axis_width_in: float = 8.0) -> None:
    """Experiment-style label ("reco Simulation", jets); by hand, as mplhep's uses pyplot.

    ``axis_width_in`` (inches, roughly) keeps "Simulation" clear of "reco" on narrow panels.
    """
    ax.text(0.0, 1.01, "reco", transform=ax.transAxes, ha="left", va="bottom", weight="bold")
    x = 0.11 * 8.0 / axis_width_in
    ax.text(x, 1.01, "Simulation", transform=ax.transAxes, ha="left", va="bottom", style="italic")
    ax.text(1.0, 1.01, "jets", transform=ax.transAxes, ha="right", va="bottom")


@contextmanager
def _figure(
    path: Path, nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (8.0, 6.0)
) -> Iterator[tuple[Figure, np.ndarray]]:
    """Yield (figure, axes (nrows, ncols)) in the mplhep style; save it to ``path`` (PNG) on exit."""
    with matplotlib.style.context(_STYLE):
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        yield fig, axes
        _label(axes[0, 0], size[0] / ncols)
        save_png(fig, path)


def plot_roc_curves(performances: Sequence[BinaryPerformance], path: Path) -> Path:
    """Background rejection 1/eps_B (log) vs signal efficiency eps_S, one curve per signal class.

    Points with eps_B = 0 (infinite rejection) are left out; the markers show the rejections at the
    requested efficiencies (open markers: lower limits). The legend quotes each AUC.
    """
    with _figure(path) as (_, axes):
        ax = axes[0, 0]
        top = 10.0
        for perf in performances:
            ok = perf.eff_bkg > 0
            (line,) = ax.plot(
                perf.eff_sig[ok],
                1.0 / perf.eff_bkg[ok],
                lw=1.5,
                label=f"{perf.signal} vs {perf.background} (AUC = {perf.auc:.4f})",
            )
            for r in perf.rejections:
                ax.plot(
                    r.eff_sig,
                    r.value,
                    "o",
                    color=line.get_color(),
                    mfc="none" if r.is_lower_limit else line.get_color(),
                )
                top = max(top, r.value)
            if ok.any():
                top = max(top, float(np.max(1.0 / perf.eff_bkg[ok])))
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(1.0, top * 30.0)  # headroom for the legend on a log axis
        ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
        ax.legend(loc="upper right", fontsize="small")
    return path


def plot_score_distributions(
    scores: dict[str, tuple[np.ndarray, np.ndarray]], background: str, path: Path, bins: int = 50
) -> Path:
    """Normalised distributions of p_s / (p_s + p_b), one panel per signal class s.

    ``scores`` maps a signal class name to (signal scores (n_s,), background scores (n_b,)); the
    histograms are unit-area on [0, 1] with a log y axis.
    """
    names = list(scores)
    ncols = min(3, max(len(names), 1))
    nrows = max(math.ceil(len(names) / ncols), 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    with _figure(path, nrows, ncols, size=(5.0 * ncols, 4.0 * nrows)) as (_, axes):
        for ax, name in zip(axes.flat, names, strict=False):
            sig, bkg = scores[name]
            for vals, label, color in ((sig, name, "C0"), (bkg, background, "C1")):
                counts, _ = np.histogram(vals, bins=edges)
                dens = counts / max(counts.sum(), 1) / np.diff(edges)
                mplhep.histplot(dens, edges, ax=ax, label=f"{label} (n = {vals.size})", color=color)
            ax.set_yscale("log")
            ax.set_xlabel(
                rf"$p_\mathrm{{{name}}} / (p_\mathrm{{{name}}} + p_\mathrm{{{background}}})$"
            )
            ax.set_ylabel("density")
            ax.legend(loc="upper center", fontsize="small")
        for ax in list(axes.flat)[len(names) :]:
            ax.set_axis_off()
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """The (K, K) confusion matrix normalised by true class (rows), with the fractions in the cells.

    Rows of classes without events (NaN) are left blank.
    """
    k = len(class_names)
    size = max(6.0, 0.9 * k + 2.0)
    with _figure(path, size=(size + 1.0, size)) as (fig, axes):
        ax = axes[0, 0]
        mesh = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="Blues")
        fig.colorbar(mesh, ax=ax, label="fraction of true class")
        for i in range(k):
            for j in range(k):
                v = matrix[i, j]
                if np.isfinite(v):
                    color = "white" if v > 0.5 else "black"
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color=color, fontsize=9)
        ax.set_xticks(range(k), list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(k), list(class_names))
        ax.minorticks_off()
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    return path


def plot_roc_overlay(
    runs: Mapping[str, Sequence[BinaryPerformance]], path: Path, ncols: int = 3
) -> Path:
    """Several runs' ROC curves on shared axes: one panel per signal class (vs the background),
    one curve per run (legend: run and AUC); background rejection 1/eps_B (log) vs eps_S."""
    signals = list(dict.fromkeys(p.signal for perfs in runs.values() for p in perfs))
    if not signals:
        raise ValueError(f"{path}: no ROC curves to overlay")
    ncols = min(ncols, len(signals))
    nrows = -(-len(signals) // ncols)
    with _figure(path, nrows, ncols, size=(5.5 * ncols, 4.5 * nrows)) as (_, axes):
        for ax in axes.flat[len(signals) :]:
            ax.set_visible(False)
        for ax, signal in zip(axes.flat, signals, strict=False):
            top, background = 10.0, ""
            for name, perfs in runs.items():
                for perf in perfs:
                    ok = perf.eff_bkg > 0
                    if perf.signal != signal or not ok.any():
                        continue
                    background = perf.background
                    ax.plot(
                        perf.eff_sig[ok], 1.0 / perf.eff_bkg[ok], lw=1.5,
                        label=f"{name} (AUC = {perf.auc:.4f})",
                    )  # fmt: skip
                    top = max(top, float(np.max(1.0 / perf.eff_bkg[ok])))
            ax.set_yscale("log")
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(1.0, top * 30.0)
            ax.set_title(f"{signal} vs {background}", fontsize="medium")
            ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
            ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
            ax.legend(loc="upper right", fontsize="x-small")
    return path
