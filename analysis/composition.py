"""The mass-composition analysis of a predictions file: Xmax and ln A quality, p/Fe merit factors.

Reached through :func:`analysis.report.analyze` when a (regression) predictions file holds
``prediction/xmax`` (g/cm^2) and/or ``prediction/ln_a``, or directly through
:func:`analyze_composition`. It reads only the predictions file (``docs/architecture.md``):
``prediction/<t>`` and ``truth/<t>`` for each predicted t of ``xmax``, ``ln_a``; ``truth/log10_energy``
(or ``truth/energy_eev``); ``truth/mass_number`` (else A = round(exp(``truth/ln_a``))); and
``truth/xmax`` when only ln A is predicted, for the true-Xmax merit factor, if present.

Selections: all events; each bin of true log10(E/eV) (``cfg.energy_edges``, bins as in
:mod:`analysis.binned`); and log10(E/eV) >= ``high_energy_lge`` (default 19.5, no upper edge).

Metric names (prefix ``cfg.prefix``, default ``test``; q = ``xmax`` (g/cm^2) or ``lna``; T = the
selection suffix: none for all events, ``_lgE18.50-18.75`` per bin, ``_lgEabove19.50``):

- ``<prefix>/n_events``T; ``<prefix>/n_events_<P>`` per primary P (p, He, N, Fe) for all events;
- residual r = rec - true: ``<prefix>/q_bias``T (median), ``q_bias_mean``T, ``q_resolution_68``T
  ((q84 - q16) / 2), ``q_std``T, ``q_gauss_sigma``T (2-sigma-clipped core), each with ``_err``
  before T (``<prefix>/xmax_resolution_68_err_lgE19.00-19.25``); ``q_bias_<P>`` (+ ``_err``),
  the median residual per primary over all events;
- merit factor of p vs Fe, MF = |mean_p - mean_Fe| / sqrt(var_p + var_Fe):
  ``<prefix>/merit_factor_xmax``T (reconstructed Xmax), ``merit_factor_lna``T (reconstructed ln A),
  ``merit_factor_xmax_true``T (true Xmax: the physical limit), each with ``_err`` before T.
  Over all events the elongation (~55-60 g/cm^2 per decade) widens both Xmax distributions, so the
  per-bin values are the ones to compare with the literature (EPOS-LHC, true Xmax, 10 EeV: ~1.6).

A selection with fewer than ``cfg.min_events_per_bin`` events (per primary, for the merit factor)
has only its ``n_events`` entry: metrics are never NaN. Errors are 1 sigma: order statistics for
quantiles, asymptotic (delta-method) formulas for moments and merit factors, as in
:mod:`analysis.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from analysis import binned as binned_mod
from analysis import composition_plots as cplots
from analysis import metrics as est
from analysis.binned import BinnedSummary, Summary, _pm
from analysis.report import (
    AnalysisConfig,
    AnalysisResult,
    PredictionsFileError,
    _attr_str,
    _energy_eev,
    _read,
    _suffix_lge,
    open_predictions,
    write_metrics_json,
)
from pipeline.atomic import write_atomic

TARGETS = ("xmax", "ln_a")  # composition regression targets, prediction/<t> and truth/<t>
STEMS = {"xmax": "xmax", "ln_a": "lna"}  # target -> metric stem
PRIMARIES: dict[int, str] = {1: "p", 4: "He", 14: "N", 56: "Fe"}  # mass number A -> name
HIGH_ENERGY_LGE = 19.5  # log10(E/eV), lower edge of the high-energy selection
MF_KINDS = ("xmax", "lna", "xmax_true")  # merit factors: rec Xmax, rec ln A, true Xmax

#: primary name -> (log10(E/eV) grid (m,), mean Xmax (m,), sigma Xmax (m,)), g/cm^2; filled by
#: the composition root from the simulator's model (analysis cannot import it).
XmaxExpectations = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def primary_name(mass_number: int) -> str:
    """Name of the primary of mass number A: p, He, N, Fe for 1, 4, 14, 56; "A<n>" otherwise."""
    return PRIMARIES.get(int(mass_number), f"A{int(mass_number)}")


# --------------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class Moments:
    """Sample moments of one distribution; NaN below 2 values (``n`` says why)."""

    n: int  # number of values
    mean: float  # in the unit of the values
    var: float  # unbiased variance (ddof = 1), unit^2
    m3: float  # third central moment, unit^3
    m4: float  # fourth central moment, unit^4

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.var >= 0 else float("nan")

    @property
    def mean_err(self) -> float:
        """1-sigma error of the mean, sqrt(var / n)."""
        return math.sqrt(self.var / self.n) if self.n >= 2 else float("nan")

    @property
    def var_err(self) -> float:
        """1-sigma error of the variance, sqrt((m4 - var^2) / n): valid for any shape (Gumbel)."""
        return math.sqrt(max(self.m4 - self.var**2, 0.0) / self.n) if self.n >= 2 else math.nan

    @property
    def std_err(self) -> float:
        """1-sigma error of the standard deviation, var_err / (2 std)."""
        return self.var_err / (2.0 * self.std) if self.n >= 2 and self.var > 0 else math.nan


def moments(x: np.ndarray) -> Moments:
    """:class:`Moments` of x, shape (n,)."""
    x = np.asarray(x, np.float64)
    if x.size < 2:
        nan = float("nan")
        return Moments(int(x.size), float(np.mean(x)) if x.size else nan, nan, nan, nan)
    d = x - x.mean()
    return Moments(
        int(x.size),
        float(x.mean()),
        float(np.var(x, ddof=1)),
        float(np.mean(d**3)),
        float(np.mean(d**4)),
    )


@dataclass(frozen=True)
class MeritFactor:
    """Separation of two samples a (p) and b (Fe): |mean_a - mean_b| / sqrt(var_a + var_b)."""

    value: float  # dimensionless; NaN for fewer than 2 values per sample or zero total variance
    err: float  # 1-sigma error, delta method with the samples' own 3rd and 4th moments
    n_a: int  # events in sample a
    n_b: int  # events in sample b


def merit_factor(a: np.ndarray, b: np.ndarray) -> MeritFactor:
    """Merit factor of samples a (n_a,) and b (n_b,) (any one unit) with its 1-sigma error.

    With D = mean_a - mean_b and S^2 = var_a + var_b, MF = |D| / S, and to first order
    Var(MF) = sum_i [g_m^2 var_i / n_i + g_v^2 Var(var_i) + 2 g_m,i g_v m3_i / n_i] with
    g_m = +-sign(D) / S, g_v = -|D| / (2 S^3), Var(var_i) = (m4_i - var_i^2) / n_i and
    Cov(mean_i, var_i) = m3_i / n_i. For Gaussians: Var(MF) = (var_a/n_a + var_b/n_b) / S^2
    + MF^2 (var_a^2/n_a + var_b^2/n_b) / (2 S^4).
    """
    ma, mb = moments(a), moments(b)
    s2 = ma.var + mb.var
    if ma.n < 2 or mb.n < 2 or not s2 > 0:
        return MeritFactor(float("nan"), float("nan"), ma.n, mb.n)
    d = ma.mean - mb.mean
    s = math.sqrt(s2)
    g_v = -abs(d) / (2.0 * s**3)
    var = 0.0
    for m, sign in ((ma, 1.0), (mb, -1.0)):
        g_m = sign * math.copysign(1.0, d) / s
        var += (g_m**2 * m.var + g_v**2 * max(m.m4 - m.var**2, 0.0) + 2 * g_m * g_v * m.m3) / m.n
    return MeritFactor(abs(d) / s, math.sqrt(max(var, 0.0)), ma.n, mb.n)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CompositionSample:
    """Composition quantities of a predictions file, each shape (n,) float64 unless noted."""

    lg_true: np.ndarray  # true log10(E/eV)
    rec: dict[str, np.ndarray]  # predicted target ("xmax" g/cm^2, "ln_a") -> prediction
    true: dict[str, np.ndarray]  # target -> truth; "xmax" also when only ln A is predicted
    mass_number: np.ndarray | None  # (n,) int64 true A; None if the file has no way to tell
    attrs: dict[str, str]  # file attributes as strings

    @property
    def targets(self) -> tuple[str, ...]:
        """The predicted composition targets, in TARGETS order."""
        return tuple(t for t in TARGETS if t in self.rec)


def composition_targets(path: Path) -> tuple[tuple[str, ...], bool]:
    """(predicted composition targets, has an energy prediction) of a file; ((), True) if unreadable.

    Cheap probe for :func:`analysis.report.analyze`'s dispatch; unreadable files are left to the
    energy analysis, which names them in its error.
    """
    try:
        with h5py.File(path, "r") as f:
            targets = tuple(t for t in TARGETS if f"prediction/{t}" in f)
            has_energy = "prediction/energy_eev" in f or "prediction/log10_energy" in f
    except OSError:
        return (), True
    return targets, has_energy


def _require(f: h5py.File, path: Path, name: str, why: str) -> np.ndarray:
    if name not in f:
        raise PredictionsFileError(f"{path}: dataset {name!r} is missing ({why})")
    return _read(f, path, name)


def load_composition(path: Path) -> CompositionSample:
    """Read the composition quantities of a predictions file (module docstring).

    Raises PredictionsFileError (a ValueError) naming the file and the dataset when the file is
    missing or unreadable, has neither ``prediction/xmax`` nor ``prediction/ln_a``, a needed
    truth dataset is missing, a dataset has NaN/inf, the lengths differ, or a mass number is < 1.
    """
    path = Path(path)
    with open_predictions(path) as f:
        targets = tuple(t for t in TARGETS if f"prediction/{t}" in f)
        if not targets:
            raise PredictionsFileError(
                f"{path}: datasets 'prediction/xmax' and 'prediction/ln_a' are both missing; "
                "not a composition predictions file"
            )
        rec = {t: _read(f, path, f"prediction/{t}") for t in targets}
        true = {
            t: _require(f, path, f"truth/{t}", f"the truth of 'prediction/{t}'") for t in targets
        }
        if "xmax" not in true and "truth/xmax" in f:
            true["xmax"] = _read(f, path, "truth/xmax")
        e_true = _energy_eev(f, path, "truth")
        mass = None
        if "truth/mass_number" in f:
            mass = _read(f, path, "truth/mass_number")
        elif "truth/ln_a" in f:
            mass = np.exp(_read(f, path, "truth/ln_a"))
        attrs = {k: _attr_str(v) for k, v in f.attrs.items()}
    n = e_true.size
    if np.any(e_true <= 0):
        raise PredictionsFileError(
            f"{path}: true energy has {int(np.sum(e_true <= 0))} non-positive values"
        )
    arrays = {f"prediction/{t}": v for t, v in rec.items()}
    arrays.update({f"truth/{t}": v for t, v in true.items()})
    if mass is not None:
        arrays["truth/mass_number"] = mass
    for name, arr in arrays.items():
        if arr.size != n:
            raise PredictionsFileError(
                f"{path}: dataset {name!r} has {arr.size} events but the truth energy has {n}"
            )
    if mass is not None:
        mass = np.rint(mass).astype(np.int64)
        if np.any(mass < 1):
            raise PredictionsFileError(
                f"{path}: dataset 'truth/mass_number' has {int(np.sum(mass < 1))} values below 1"
            )
    return CompositionSample(np.log10(e_true) + 18.0, rec, true, mass, attrs)


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Selection:
    """Everything measured on one selection of events (all, one energy bin, the high-energy tail)."""

    label: str  # table label: "18.50-18.75", "all", ">= 19.50"
    suffix: str  # metric suffix without the leading "_": "", "lgE18.50-18.75", "lgEabove19.50"
    n: int  # events selected
    residual: dict[str, Summary]  # target -> summary of rec - true (NaN fields below min events)
    merit: dict[str, MeritFactor]  # MF_KINDS entry -> merit factor, only where computable


@dataclass(frozen=True)
class ElongationCurve:
    """Moments of Xmax per bin of true log10(E/eV) for one primary; arrays (n_bins,), g/cm^2."""

    primary: str  # "p", "He", "N", "Fe", ...
    source: str  # "rec" (reconstructed Xmax) or "true"
    n: np.ndarray  # events per bin
    mean: np.ndarray  # NaN where a bin has fewer than min events
    mean_err: np.ndarray
    std: np.ndarray
    std_err: np.ndarray


@dataclass
class CompositionResult:
    """What :func:`run_composition` computed."""

    metrics: dict[str, float]  # name -> finite value (module docstring)
    figures: list[Path]  # PNGs written
    table_markdown: str  # per-energy-bin table (also composition_table.md)
    targets: tuple[str, ...]  # predicted targets
    edges: tuple[float, ...]  # energy bin edges, log10(E/eV)
    selections: list[Selection]  # the energy bins in order, then "all", then the high-energy one
    residual_bins: dict[str, BinnedSummary]  # target -> per-bin summary of rec - true
    elongation: list[ElongationCurve] = field(default_factory=list)  # per primary, rec and true
    attrs: dict[str, str] = field(default_factory=dict)  # file attributes


def _merits(sample: CompositionSample, sel: np.ndarray, min_events: int) -> dict[str, MeritFactor]:
    """p-vs-Fe merit factors of the selected events (boolean mask (n,)); {} without p or Fe."""
    if sample.mass_number is None:
        return {}
    is_p, is_fe = sel & (sample.mass_number == 1), sel & (sample.mass_number == 56)
    if min(int(is_p.sum()), int(is_fe.sum())) < max(min_events, 2):
        return {}
    values = {
        "xmax": sample.rec.get("xmax"),
        "lna": sample.rec.get("ln_a"),
        "xmax_true": sample.true.get("xmax"),
    }
    out = {}
    for kind, x in values.items():
        if x is not None:
            mf = merit_factor(x[is_p], x[is_fe])
            if math.isfinite(mf.value) and math.isfinite(mf.err):
                out[kind] = mf
    return out


def _curve(primary: str, source: str, ms: list[Moments], min_events: int) -> ElongationCurve:
    ok = np.array([m.n >= max(min_events, 2) for m in ms])
    cols = {
        name: np.where(ok, np.array([getattr(m, name) for m in ms], np.float64), np.nan)
        for name in ("mean", "mean_err", "std", "std_err")
    }
    return ElongationCurve(primary, source, np.array([m.n for m in ms]), **cols)


def _elongation(
    sample: CompositionSample, idx: np.ndarray, n_bins: int, min_events: int
) -> list[ElongationCurve]:
    """Xmax moments per primary and energy bin, reconstructed (if predicted) and true."""
    if sample.mass_number is None or "xmax" not in sample.true:
        return []
    sources = [("rec", sample.rec["xmax"])] if "xmax" in sample.rec else []
    sources.append(("true", sample.true["xmax"]))
    curves = []
    for a in np.unique(sample.mass_number):
        in_a = sample.mass_number == a
        for source, x in sources:
            ms = [moments(x[(idx == i) & in_a]) for i in range(n_bins)]
            curves.append(_curve(primary_name(a), source, ms, min_events))
    return curves


def summarize_composition(
    sample: CompositionSample,
    edges: Sequence[float],
    min_events: int = 10,
    high_energy_lge: float | None = HIGH_ENERGY_LGE,
) -> tuple[list[Selection], dict[str, BinnedSummary], list[ElongationCurve]]:
    """Per-bin, overall and high-energy summaries, residuals binned for plots, elongation curves.

    Residual summaries reuse :func:`analysis.binned.summarize` with the residual rec - true passed
    as both its relative and its absolute argument: every field is then in the target's unit
    (g/cm^2 for Xmax), and ``sigma_eev`` is the residual's standard deviation.
    """
    lg = sample.lg_true
    res = {t: sample.rec[t] - sample.true[t] for t in sample.targets}
    idx = binned_mod.assign_bins(lg, edges)
    n_bins = len(edges) - 1
    rbins = {
        t: binned_mod.bin_summaries(lg, r, r, edges, "lgE", "log10(E/eV)", min_events)
        for t, r in res.items()
    }
    selections = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        sel = idx == i
        selections.append(
            Selection(
                f"{lo:.2f}-{hi:.2f}",
                _suffix_lge(lo, hi),
                int(sel.sum()),
                {t: b.rows[i] for t, b in rbins.items()},
                _merits(sample, sel, min_events),
            )
        )
    extra = [("all", "", np.ones(lg.size, bool))]
    if high_energy_lge is not None:
        thr = high_energy_lge
        extra.append((f">= {thr:.2f}", f"lgEabove{thr:.2f}", lg >= thr))
    for label, suffix, sel in extra:
        summaries = {t: binned_mod.summarize(r[sel], r[sel], min_events) for t, r in res.items()}
        merits = _merits(sample, sel, min_events)
        selections.append(Selection(label, suffix, int(sel.sum()), summaries, merits))
    return selections, rbins, _elongation(sample, idx, n_bins, min_events)


def composition_metrics(
    sample: CompositionSample, selections: Sequence[Selection], prefix: str, min_events: int = 10
) -> dict[str, float]:
    """The flat metrics (module docstring); NaNs are left out."""
    out: dict[str, float] = {}
    for s in selections:
        tail = f"_{s.suffix}" if s.suffix else ""
        out[f"{prefix}/n_events{tail}"] = float(s.n)
        for t, r in s.residual.items():
            pairs = {
                "bias": r.bias_median, "bias_err": r.bias_median_err,
                "bias_mean": r.bias_mean, "bias_mean_err": r.bias_mean_err,
                "resolution_68": r.resolution_68, "resolution_68_err": r.resolution_68_err,
                "std": r.sigma_eev, "std_err": r.sigma_eev_err,
                "gauss_sigma": r.gauss_sigma, "gauss_sigma_err": r.gauss_sigma_err,
            }  # fmt: skip
            out.update({f"{prefix}/{STEMS[t]}_{k}{tail}": v for k, v in pairs.items()})
        for kind, mf in s.merit.items():
            out[f"{prefix}/merit_factor_{kind}{tail}"] = mf.value
            out[f"{prefix}/merit_factor_{kind}_err{tail}"] = mf.err
    if sample.mass_number is not None:
        for a in np.unique(sample.mass_number):
            name, is_a = primary_name(a), sample.mass_number == a
            out[f"{prefix}/n_events_{name}"] = float(is_a.sum())
            if is_a.sum() < max(min_events, 2):
                continue
            for t in sample.targets:
                r = sample.rec[t][is_a] - sample.true[t][is_a]
                out[f"{prefix}/{STEMS[t]}_bias_{name}"] = est.bias_median(r)
                out[f"{prefix}/{STEMS[t]}_bias_{name}_err"] = est.quantile_error(r, 0.5)
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def render_markdown(selections: Sequence[Selection], targets: Sequence[str]) -> str:
    """Markdown table: per energy bin, then all events and the high-energy tail.

    Columns: events, Xmax bias (median) and 68% resolution [g/cm^2], ln A bias and resolution,
    MF(Xmax rec), MF(ln A rec), MF(Xmax true), each "value ± 1-sigma error"; a column only for a
    predicted target, "–" where a selection has too few events (or no p or no Fe).
    """
    cols: list[tuple[str, Callable[[Selection], str]]] = []
    if "xmax" in targets:
        cols += [
            ("Xmax bias [g/cm²]", lambda s: _pm(*_res(s, "xmax", "bias_median"), 1, 1)),
            ("Xmax res. 68% [g/cm²]", lambda s: _pm(*_res(s, "xmax", "resolution_68"), 1, 1)),
        ]
    if "ln_a" in targets:
        cols += [
            ("ln A bias", lambda s: _pm(*_res(s, "ln_a", "bias_median"), 1, 3)),
            ("ln A res. 68%", lambda s: _pm(*_res(s, "ln_a", "resolution_68"), 1, 3)),
        ]
    kinds = {"xmax": "xmax" in targets, "lna": "ln_a" in targets}
    kinds["xmax_true"] = "xmax" in targets or any("xmax_true" in s.merit for s in selections)
    heads = {"xmax": "MF Xmax rec", "lna": "MF ln A rec", "xmax_true": "MF Xmax true"}
    for kind in MF_KINDS:
        if kinds[kind]:
            cols.append((heads[kind], lambda s, k=kind: _pm(*_mf(s, k), 1, 2)))
    head = ["lgE [log10(E/eV)]", "n"] + [c for c, _ in cols]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for s in selections:
        cells = [s.label, str(s.n)] + [fn(s) for _, fn in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _res(s: Selection, target: str, name: str) -> tuple[float, float]:
    r = s.residual[target]
    return getattr(r, name), getattr(r, f"{name}_err")


def _mf(s: Selection, kind: str) -> tuple[float, float]:
    mf = s.merit.get(kind)
    return (mf.value, mf.err) if mf else (float("nan"), float("nan"))


def check_expectations(expectations: XmaxExpectations | None) -> None:
    """ValueError unless every entry is a known primary -> three equal-length 1-D arrays."""
    for name, arrays in (expectations or {}).items():
        if name not in PRIMARIES.values():
            raise ValueError(
                f"Xmax expectation for unknown primary {name!r}; use {list(PRIMARIES.values())}"
            )
        shapes = [np.shape(a) for a in arrays]
        if len(shapes) != 3 or len(shapes[0]) != 1 or len(set(shapes)) != 1:
            raise ValueError(
                f"Xmax expectation for {name!r} must be (lgE grid, mean, sigma) of one 1-D shape, "
                f"got shapes {shapes}"
            )


# --------------------------------------------------------------------------- entry points


def run_composition(
    predictions: Path,
    cfg: AnalysisConfig,
    out_dir: Path,
    xmax_expectations: XmaxExpectations | None = None,
    expectation_label: str = "EPOS-LHC",
    high_energy_lge: float | None = HIGH_ENERGY_LGE,
) -> CompositionResult:
    """Compute the composition analysis, write ``composition_table.md`` and its PNGs to out_dir.

    Uses ``cfg.energy_edges``, ``cfg.min_events_per_bin`` and ``cfg.prefix``; draws the figures
    unless ``cfg.plots`` is empty (``xmax_resolution_vs_energy``, ``xmax_reco_vs_true``,
    ``xmax_elongation``, ``lna_resolution_vs_energy``, ``lna_distributions``,
    ``merit_factor_vs_energy``, each for what the file holds). ``xmax_expectations`` (primary ->
    (lgE grid, mean, sigma), g/cm^2) are drawn on the elongation plot as ``expectation_label``.
    Does not write ``metrics.json`` (see :func:`analyze_composition`).
    """
    check_expectations(xmax_expectations)
    sample = load_composition(Path(predictions))
    m = cfg.min_events_per_bin
    edges = tuple(float(e) for e in cfg.energy_edges)
    selections, rbins, elong = summarize_composition(sample, edges, m, high_energy_lge)
    metrics = composition_metrics(sample, selections, cfg.prefix, m)
    table = render_markdown(selections, sample.targets)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    if cfg.plots:
        figures = _draw(
            sample, selections, rbins, elong, edges, out_dir, xmax_expectations, expectation_label
        )
    write_atomic(out_dir / "composition_table.md", table)
    return CompositionResult(
        metrics, figures, table, sample.targets, edges, selections, rbins, elong, sample.attrs
    )


def _draw(
    sample: CompositionSample,
    selections: list[Selection],
    rbins: dict[str, BinnedSummary],
    elong: list[ElongationCurve],
    edges: tuple[float, ...],
    out_dir: Path,
    expectations: XmaxExpectations | None,
    expectation_label: str,
) -> list[Path]:
    figs = []
    if "xmax" in sample.targets:
        figs.append(
            cplots.plot_residual_vs_energy(
                rbins["xmax"],
                r"X_\mathrm{max}",
                "g/cm$^2$",
                out_dir / "xmax_resolution_vs_energy.png",
            )
        )
        figs.append(
            cplots.plot_xmax_reco_vs_true(
                sample.true["xmax"], sample.rec["xmax"], out_dir / "xmax_reco_vs_true.png"
            )
        )
    if elong:
        figs.append(
            cplots.plot_elongation(
                elong, edges, out_dir / "xmax_elongation.png", expectations, expectation_label
            )
        )
    if "ln_a" in sample.targets:
        figs.append(
            cplots.plot_residual_vs_energy(
                rbins["ln_a"], r"\ln A", "", out_dir / "lna_resolution_vs_energy.png"
            )
        )
        if sample.mass_number is not None:
            figs.append(
                cplots.plot_lna_distributions(
                    sample.rec["ln_a"], sample.mass_number, out_dir / "lna_distributions.png"
                )
            )
    n_bins = len(edges) - 1
    curves = {
        kind: (
            np.array([_mf(s, kind)[0] for s in selections[:n_bins]]),
            np.array([_mf(s, kind)[1] for s in selections[:n_bins]]),
        )
        for kind in MF_KINDS
    }
    curves = {k: v for k, v in curves.items() if np.isfinite(v[0]).any()}
    if curves:
        figs.append(
            cplots.plot_merit_factor_vs_energy(
                edges, curves, out_dir / "merit_factor_vs_energy.png"
            )
        )
    return figs


def analyze_composition(
    predictions: Path,
    cfg: AnalysisConfig,
    out_dir: Path,
    xmax_expectations: XmaxExpectations | None = None,
) -> AnalysisResult:
    """The composition analysis alone (a file without an energy prediction): :func:`run_composition`
    plus ``metrics.json`` (the energy analysis' layout); the result's energy fields are None."""
    comp = run_composition(predictions, cfg, out_dir, xmax_expectations)
    write_metrics_json(Path(out_dir), predictions, comp.attrs, cfg, comp.metrics)
    return AnalysisResult(comp.metrics, comp.figures, comp.table_markdown, attrs=comp.attrs)
