"""Figures of the jet validation (:mod:`analysis.jet_validation`), one PNG per observable.

Same conventions as :mod:`analysis.classification_plots`, whose figure context they use:
object-oriented ``Figure`` (Agg), no ``pyplot``, the mplhep style in a ``matplotlib.style.context``,
atomic writes; every function returns the path of the PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from analysis import metrics as est
from analysis.classification_plots import _figure
from analysis.jet_validation import Observable, _fmt  # it imports this module only when plotting

_BINS = 50  # bins of a continuous observable
_MAX_INT_BINS = 60  # integer observables: unit-width bins, widened to at most this many
_TAIL = 0.005  # fraction of the pooled values beyond each end of the binned range
_LOG_MIN = 1e-3  # lower edge of a logarithmic range (in the unit of the observable)


def bin_edges(obs: Observable, arrays: list[np.ndarray]) -> np.ndarray:
    """Common bin edges (B + 1,) of one observable over all samples and classes.

    The range spans the pooled 0.5%-99.5% quantiles (values beyond are drawn in the first / last
    bin); integer observables get unit-width (or wider integer) bins centred on the integers,
    logarithmic ones geometric bins above max(0.5% quantile of the positive values, 1e-3).
    """
    pooled = np.concatenate([np.asarray(a, np.float64) for a in arrays] or [np.zeros(0)])
    if obs.log_x:
        pooled = pooled[pooled > 0]
    if pooled.size == 0:
        return np.geomspace(_LOG_MIN, 1.0, _BINS + 1) if obs.log_x else np.linspace(0, 1, _BINS + 1)
    lo, hi = np.quantile(pooled, [_TAIL, 1.0 - _TAIL])
    if obs.integer:
        lo, hi = math.floor(lo) - 0.5, math.ceil(hi) + 0.5
        step = max(1, math.ceil((hi - lo) / _MAX_INT_BINS))
        return np.arange(lo, hi + step, step, dtype=np.float64)
    if obs.log_x:
        lo = max(lo, _LOG_MIN)
        return np.geomspace(lo, max(hi, 10.0 * lo), _BINS + 1)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, _BINS + 1)


def plot_observable(
    obs: Observable, per_class: Mapping[str, Mapping[str, np.ndarray]], path: Path
) -> Path:
    """A panel per class with the step histograms (fractions per bin, summing to 1) of every
    sample's values of ``obs`` (class -> sample -> (n,) values), the median marked by a dashed
    line and quoted with its 1-sigma error in the legend. Colours follow the sample order."""
    edges = bin_edges(obs, [v for s in per_class.values() for v in s.values()])
    samples = list(dict.fromkeys(s for d in per_class.values() for s in d))
    colors = {s: f"C{i % 10}" for i, s in enumerate(samples)}
    ncols = min(3, max(1, len(per_class)))
    nrows = max(1, math.ceil(len(per_class) / ncols))
    unit = "tracks" if obs.per_track else "jets"
    with _figure(path, nrows, ncols, size=(5.5 * ncols, 4.5 * nrows)) as (_, axes):
        flat = list(axes.ravel())
        for ax, (cls, values) in zip(flat, per_class.items(), strict=False):
            for sample, x in values.items():
                x = np.asarray(x, np.float64)
                if x.size == 0:
                    continue
                counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), edges)
                med, err = est.quantile(x, 0.5), est.quantile_error(x, 0.5)
                label = f"{sample} (n = {x.size}): median {_fmt(med, err)}"
                ax.stairs(counts / x.size, edges, color=colors[sample], lw=1.5, label=label)
                # below the legend: the y axis leaves the top third for it
                ax.axvline(med, ymax=0.66, color=colors[sample], ls="--", lw=1.0)
            ax.text(0.03, 0.95, cls, transform=ax.transAxes, ha="left", va="top", weight="bold")
            ax.set_xlabel(obs.label, fontsize="small")
            ax.set_ylabel(f"fraction of {unit}", fontsize="small")
            if obs.log_x:
                ax.set_xscale("log")
            ax.set_xlim(edges[0], edges[-1])
            top = ax.get_ylim()[1]
            ax.set_ylim(0.0, 1.45 * top if top > 0 else 1.0)
            # plain tick labels: a "x10^-2" offset text would overlap the experiment label
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            ax.legend(loc="upper right", fontsize="x-small", frameon=False)
        for ax in flat[len(per_class) :]:
            ax.set_visible(False)
    return path
