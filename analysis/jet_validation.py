"""Toy-vs-realistic jet validation: per-class distributions of substructure observables of two or
more jets event files (toy, Pythia, converted JetClass / Delphes / top-tagging), overlaid.

Reads only event files (``pipeline.events``, ``kind = "jets"``): ``truth/label`` with the class
names in the ``classes`` attribute, ``jet/jet_sdmass``, ``jet/jet_tau1..3``, ``jet/jet_mass`` (else
computed from ``jet_pt, jet_eta, jet_energy``), ``jet/jet_nparticles`` (else the number of stored
constituents) and the constituents ``part_px, part_py, part_charge, part_d0val, part_d0err`` of
the jagged group ``part``.

Observables (:data:`OBSERVABLES`): jet mass and soft-drop mass (GeV), constituent multiplicity,
tau21 = tau2 / tau1 and tau32 = tau3 / tau2 (where the denominator is > 0; in [0, 1] except in
rare jets, ~1 in 2,000 toy jets, whose stored taus' approximate axes give a ratio just above 1),
pT_D = sum pT_i^2 / (sum pT_i)^2 over the constituents (in (0, 1]; 1 for a single constituent),
and the impact-parameter significance |d0| / sigma(d0) of the charged constituents with
sigma(d0) > 0: one value per jet, except d0sig, one value per track. Undefined values are dropped,
so each observable has its own n.

Per sample, class and observable: median (1-sigma error from the distribution-free order-statistic
interval, :func:`analysis.metrics.quantile_error`) and mean (std / sqrt(n)); per sample and
observable the AUC of signal (Tbqq) vs background (QCD) with the observable as the score
(:func:`analysis.classification.auc`, Hanley-McNeil error), oriented so that > 0.5 means the
signal lies on its usual side (larger mass, smaller tau ratios; :attr:`Observable.signal_higher`).
The d0sig errors and AUC treat tracks as independent (tracks of one jet are correlated, so the
errors are somewhat too small); its AUC separates tracks, not jets.

Metric names: ``jetval/<sample>/<class>/<observable>_{median,median_err,mean,mean_err,n}``,
``jetval/<sample>/<class>/n_jets``, ``jetval/<sample>/auc_<signal>_vs_<background>/<observable>``
(+ ``_err``); NaNs are left out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis import classification as cm
from analysis import metrics as est
from pipeline.atomic import write_atomic
from pipeline.events import EventFile, EventFileError, open_events
from pipeline.tracking import Tracker

METRICS_SCHEMA_VERSION = 1
_CHUNK_JETS = 100_000  # jets read per step: bounds the memory of the constituent arrays
_PART_FIELDS = ("part_px", "part_py", "part_charge", "part_d0val", "part_d0err")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # sample names: usable in MLflow metric and file names


@dataclass(frozen=True)
class Observable:
    """One validated observable and how it is shown."""

    name: str  # metric and file name
    label: str  # axis label (matplotlib mathtext), with the unit
    signal_higher: bool = True  # AUC score is +x (else -x): top-like jets have larger values
    per_track: bool = False  # one value per charged track instead of one per jet
    integer: bool = False  # integer-valued (unit-width bins)
    log_x: bool = False  # logarithmic bins and axis


OBSERVABLES: tuple[Observable, ...] = (
    Observable("mass", r"jet mass $m_J$ [GeV]"),
    Observable("sdmass", r"soft-drop mass $m_\mathrm{SD}$ [GeV]"),
    Observable("nparticles", "constituents per jet", integer=True),
    Observable("tau21", r"$\tau_{21} = \tau_2 / \tau_1$", signal_higher=False),
    Observable("tau32", r"$\tau_{32} = \tau_3 / \tau_2$", signal_higher=False),
    Observable("ptd", r"$p_T^D = \sum p_{T,i}^2 / (\sum p_{T,i})^2$", signal_higher=False),
    Observable(
        "d0sig", r"$|d_0| / \sigma(d_0)$ of charged constituents", per_track=True, log_x=True
    ),
)

JetObservables = dict[str, dict[str, np.ndarray]]  # class -> observable name -> finite values


def invariant_mass(pt: np.ndarray, eta: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Mass sqrt(E^2 - (pT cosh eta)^2), GeV, of (n,) four-vectors in GeV; 0 where E^2 < p^2."""
    pt, eta, energy = (np.asarray(a, np.float64) for a in (pt, eta, energy))
    return np.sqrt(np.maximum(energy**2 - (pt * np.cosh(eta)) ** 2, 0.0))


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den of (n,) arrays (e.g. tau2 / tau1), NaN where den <= 0 or either is not finite."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    ok = (den > 0) & np.isfinite(num) & np.isfinite(den)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=ok)


def ptd(offsets: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """pT_D = sum pT_i^2 / (sum pT_i)^2 per jet, shape (n,), from offsets (n + 1,) and flat px, py.

    Dimensionless, in (0, 1]: 1 for a single constituent, ~1/k for k equal ones. NaN for a jet
    without constituents of non-zero pT.
    """
    offsets = np.asarray(offsets, np.int64)
    n = offsets.size - 1
    jet = np.repeat(np.arange(n), np.diff(offsets))
    pt = np.hypot(np.asarray(px, np.float64), np.asarray(py, np.float64))
    s1 = np.bincount(jet, pt, minlength=n)
    s2 = np.bincount(jet, pt**2, minlength=n)
    return np.divide(s2, s1**2, out=np.full(n, np.nan), where=s1 > 0)


def measured_tracks(d0val: np.ndarray, d0err: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Mask (m,) of the constituents with a measured impact parameter: charged (charge != 0),
    sigma(d0) > 0 and finite d0, sigma(d0) (neutral ones have zeros, JetClass convention)."""
    d0val, d0err = np.asarray(d0val), np.asarray(d0err)
    return (np.asarray(charge) != 0) & (d0err > 0) & np.isfinite(d0val) & np.isfinite(d0err)


def d0_significance(d0val: np.ndarray, d0err: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """|d0| / sigma(d0) (d0, sigma in one unit, mm) of the :func:`measured_tracks`, flat (k,)."""
    keep = measured_tracks(d0val, d0err, charge)
    return np.abs(np.asarray(d0val, np.float64)[keep]) / np.asarray(d0err, np.float64)[keep]


def _required(f: EventFile) -> list[str]:
    """Datasets the validation needs that ``f`` lacks (jet mass: the field or its four-vector)."""
    need = ["truth/label", "jet/jet_sdmass", "jet/jet_tau1", "jet/jet_tau2", "jet/jet_tau3"]
    if "jet/jet_mass" not in f.names:
        need += ["jet/jet_pt", "jet/jet_eta", "jet/jet_energy"]
    need += ["jagged/part/offsets"] + [f"jagged/part/{k}" for k in _PART_FIELDS]
    return [n for n in need if n not in f.names]


def _read_chunk(
    f: EventFile, sel: slice
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Labels (m,), per-jet observables (name -> (m,), NaN where undefined) and the d0
    significance of the charged tracks (k,) with the label of each track's jet (k,)."""
    tau = {k: f.read(f"jet/jet_tau{k}", sel) for k in (1, 2, 3)}
    if "jet/jet_mass" in f.names:
        mass = np.asarray(f.read("jet/jet_mass", sel), np.float64)
    else:
        mass = invariant_mass(*(f.read(f"jet/jet_{k}", sel) for k in ("pt", "eta", "energy")))
    offsets, part = f.read_jagged("part", _PART_FIELDS, sel)
    counts = np.diff(offsets)
    nparticles = f.read("jet/jet_nparticles", sel) if "jet/jet_nparticles" in f.names else counts
    labels = np.asarray(f.read("truth/label", sel), np.int64)
    per_jet = {
        "mass": mass,
        "sdmass": np.asarray(f.read("jet/jet_sdmass", sel), np.float64),
        "nparticles": np.asarray(nparticles, np.float64),
        "tau21": ratio(tau[2], tau[1]),
        "tau32": ratio(tau[3], tau[2]),
        "ptd": ptd(offsets, part["part_px"], part["part_py"]),
    }
    d0 = (part["part_d0val"], part["part_d0err"], part["part_charge"])
    track_label = np.repeat(labels, counts)[measured_tracks(*d0)]
    return labels, per_jet, d0_significance(*d0), track_label


def load_jet_observables(path: Path, max_jets: int | None = None) -> JetObservables:
    """Observables of the first ``max_jets`` jets (all: None) of a jets event file, by class.

    Returns class name -> observable name (:data:`OBSERVABLES`) -> finite values, float64, one per
    jet ((n_class,) or fewer where undefined), for d0sig one per charged track. Only classes with
    jets appear, in the file's class order. Raises EventFileError (a ValueError) naming the file
    and every missing dataset, a missing ``classes`` attribute or labels out of range.
    """
    path = Path(path)
    if max_jets is not None and max_jets < 1:
        raise ValueError(f"max_jets must be >= 1, got {max_jets}")
    with open_events(path) as f:
        missing = _required(f)
        if missing:
            raise EventFileError(
                f"{path}: missing dataset(s) {', '.join(repr(m) for m in missing)} needed by the "
                "jet validation (a jets event file, e.g. from reco simulate or reco convert-*)"
            )
        classes = f.attrs.get("classes")
        if not isinstance(classes, list) or not classes:
            raise EventFileError(f"{path}: no 'classes' attribute (class names of truth/label)")
        n = f.n_events if max_jets is None else min(f.n_events, max_jets)
        parts = [
            _read_chunk(f, slice(start, min(start + _CHUNK_JETS, n)))
            for start in range(0, n, _CHUNK_JETS)
        ]
    if not parts:
        return {}
    labels = np.concatenate([p[0] for p in parts])
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise EventFileError(
            f"{path}: dataset 'truth/label' has {int(bad.sum())} labels outside "
            f"[0, {len(classes)}) (classes {classes})"
        )
    values = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    d0sig, track_label = (np.concatenate([p[i] for p in parts]) for i in (2, 3))
    out: JetObservables = {}
    for c, name in enumerate(classes):
        sel = labels == c
        if not sel.any():
            continue
        per_class = {k: v[sel] for k, v in values.items()} | {"d0sig": d0sig[track_label == c]}
        out[str(name)] = {
            o.name: per_class[o.name][np.isfinite(per_class[o.name])] for o in OBSERVABLES
        }
    return out


@dataclass(frozen=True)
class Stat:
    """Location of one distribution: median and mean with 1-sigma errors (unit of the values)."""

    n: int  # values (jets, or tracks for d0sig)
    median: float
    median_err: float  # half the 68% order-statistic interval of the median
    mean: float
    mean_err: float  # std / sqrt(n)


def summarize(x: np.ndarray) -> Stat:
    """:class:`Stat` of a (n,) array; NaN fields when it is too small (median error: n >= 2)."""
    x = np.asarray(x, np.float64)
    return Stat(
        int(x.size),
        est.quantile(x, 0.5),
        est.quantile_error(x, 0.5),
        est.bias_mean(x),
        est.mean_error(x),
    )


@dataclass(frozen=True)
class Separation:
    """AUC of signal vs background with one observable as the score (oriented, see module doc)."""

    auc: float
    auc_err: float  # Hanley-McNeil 1-sigma
    n_sig: int
    n_bkg: int


def separation(sig: np.ndarray, bkg: np.ndarray, signal_higher: bool) -> Separation:
    """AUC of the score x (or -x when not ``signal_higher``) for (n_sig,) vs (n_bkg,) values."""
    sign = 1.0 if signal_higher else -1.0
    if len(sig) == 0 or len(bkg) == 0:
        return Separation(float("nan"), float("nan"), len(sig), len(bkg))
    a = cm.auc(sign * np.asarray(sig, np.float64), sign * np.asarray(bkg, np.float64))
    return Separation(a, cm.auc_error(a, len(sig), len(bkg)), len(sig), len(bkg))


@dataclass
class JetValidation:
    """What :func:`compare_samples` computed (and wrote, with an output folder)."""

    samples: dict[str, Path]  # sample name -> event file
    attrs: dict[str, dict[str, object]]  # sample name -> provenance attributes of its file
    stats: dict[str, dict[str, dict[str, Stat]]]  # sample -> class -> observable -> Stat
    aucs: dict[str, dict[str, Separation]]  # sample -> observable -> signal-vs-background AUC
    metrics: dict[str, float]  # flat, MLflow-friendly names (module docstring), finite values
    table_markdown: str
    signal: str
    background: str
    max_jets: int | None = None  # jets read per file (None: all)
    figures: list[Path] = field(default_factory=list)  # PNGs, one per observable
    files: list[Path] = field(default_factory=list)  # everything written (table, metrics, PNGs)


def _fmt(value: float, err: float) -> str:
    """``value ± err`` with two significant digits of the error; "–" for NaN."""
    if math.isnan(value):
        return "–"
    if not err > 0:  # NaN or 0: three significant digits of the value
        return f"{value:.3g}"
    d = max(0, 1 - math.floor(math.log10(err)))
    return f"{value:.{d}f} ± {err:.{d}f}"


def render_markdown(result: JetValidation) -> str:
    """Markdown: per class, one row per observable with n, median and mean of every sample; then
    the signal-vs-background AUC of each observable per sample."""
    names = list(result.samples)
    lines = ["Samples: " + ", ".join(f"{s} = `{p}`" for s, p in result.samples.items()), ""]
    classes = list(dict.fromkeys(c for s in names for c in result.stats[s]))
    for cls in classes:
        head = ["observable"] + [f"{s} {k}" for s in names for k in ("n", "median", "mean")]
        lines += [f"### {cls}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for obs in OBSERVABLES:
            cells = [obs.name]
            for s in names:
                st = result.stats[s].get(cls, {}).get(obs.name)
                if st is None:
                    cells += ["0", "–", "–"]
                else:
                    cells += [str(st.n), _fmt(st.median, st.median_err), _fmt(st.mean, st.mean_err)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    with_auc = [n for n in names if result.aucs[n]]
    if with_auc:
        lower = ", ".join(o.name for o in OBSERVABLES if not o.signal_higher)
        lines += [
            f"### AUC {result.signal} vs {result.background} of single observables",
            "",
            f"Score = the observable (its negative for {lower}); d0sig per track.",
            "",
            "| observable | " + " | ".join(with_auc) + " |",
            "|" + "---|" * (1 + len(with_auc)),
        ]
        for obs in OBSERVABLES:
            cells = [
                _fmt(result.aucs[n][obs.name].auc, result.aucs[n][obs.name].auc_err)
                for n in with_auc
            ]
            lines.append(f"| {obs.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metrics(result: JetValidation, n_jets: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s, per_class in result.stats.items():
        for cls, per_obs in per_class.items():
            base = f"jetval/{s}/{re.sub(r'[^A-Za-z0-9_.-]', '_', cls)}"
            out[f"{base}/n_jets"] = float(n_jets[s][cls])
            for name, st in per_obs.items():
                for key in ("median", "median_err", "mean", "mean_err", "n"):
                    out[f"{base}/{name}_{key}"] = float(getattr(st, key))
        tag = f"auc_{result.signal}_vs_{result.background}"
        for name, a in result.aucs[s].items():
            out[f"jetval/{s}/{tag}/{name}"] = a.auc
            out[f"jetval/{s}/{tag}/{name}_err"] = a.auc_err
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _file_attrs(path: Path) -> dict[str, object]:
    keep = ("engine", "generator", "config_hash", "seed", "split", "n_events", "classes")
    with open_events(path) as f:
        return {k: f.attrs[k] for k in keep if k in f.attrs}


def compare_samples(
    samples: Mapping[str, Path],
    out_dir: Path | None = None,
    max_jets: int | None = None,
    signal: str = "Tbqq",
    background: str = "QCD",
) -> JetValidation:
    """Validate jets event files against each other: statistics, AUCs, table, metrics, plots.

    Args:
        samples: sample name (letters, digits, ``_ . -``) -> jets event file; at least one.
        out_dir: when given, ``table.md``, ``metrics.json`` and ``<observable>.png`` are written
            there atomically.
        max_jets: read at most the first N jets of each file (labels cycle, so classes stay
            balanced in simulated files).
        signal, background: the classes of the AUCs (computed where a sample has both).

    Raises ValueError (EventFileError for a bad file, naming it) before anything is written.
    """
    if not samples:
        raise ValueError("no samples to validate")
    bad = [s for s in samples if not _NAME.match(s)]
    if bad:
        raise ValueError(f"sample names {bad} must be letters, digits, '_', '.' or '-'")
    paths = {s: Path(p) for s, p in samples.items()}
    data = {s: load_jet_observables(p, max_jets) for s, p in paths.items()}
    stats = {
        s: {c: {k: summarize(v) for k, v in obs.items()} for c, obs in d.items()}
        for s, d in data.items()
    }
    aucs = {
        s: {
            o.name: separation(d[signal][o.name], d[background][o.name], o.signal_higher)
            for o in OBSERVABLES
        }
        if signal in d and background in d
        else {}
        for s, d in data.items()
    }
    # the multiplicity is defined for every jet, so its count is the class's number of jets
    n_jets = {s: {c: obs["nparticles"].size for c, obs in d.items()} for s, d in data.items()}
    attrs = {s: _file_attrs(p) for s, p in paths.items()}
    result = JetValidation(paths, attrs, stats, aucs, {}, "", signal, background, max_jets)
    result.metrics = _metrics(result, n_jets)
    result.table_markdown = render_markdown(result)
    if out_dir is not None:
        from analysis import jet_validation_plots as jplots  # matplotlib only when plotting

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for obs in OBSERVABLES:
            per_class = {
                c: {s: data[s][c][obs.name] for s in data if c in data[s]}
                for c in dict.fromkeys(c for d in data.values() for c in d)
            }
            result.figures.append(
                jplots.plot_observable(obs, per_class, out_dir / f"{obs.name}.png")
            )
        payload = {
            "schema_version": METRICS_SCHEMA_VERSION,
            "samples": {s: {"path": str(p), "attrs": attrs[s]} for s, p in paths.items()},
            "max_jets": max_jets,
            "signal": signal,
            "background": background,
            "metrics": result.metrics,
        }
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
        write_atomic(out_dir / "metrics.json", text)
        write_atomic(out_dir / "table.md", result.table_markdown)
        result.files = [out_dir / "table.md", out_dir / "metrics.json", *result.figures]
    return result


def log_to_tracker(result: JetValidation, tracker: Tracker) -> None:
    """Log a validation to a tracker: the sample files and their provenance as parameters, the
    metrics (one batch, step 0) and the written files as artifacts under ``jet_validation/``."""
    params: dict[str, object] = {
        "max_jets": result.max_jets,
        "signal": result.signal,
        "background": result.background,
    }
    for s, p in result.samples.items():
        params[f"sample.{s}.path"] = str(p.resolve())
        params.update({f"sample.{s}.{k}": v for k, v in result.attrs[s].items()})
    tracker.log_params(params)
    tracker.log_metrics(result.metrics, step=0)
    for path in result.files:
        tracker.log_artifact(path, "jet_validation")
