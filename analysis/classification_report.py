"""The jet-tagging analysis of a predictions file: metrics, per-class table, figures, ``metrics.json``.

``analyze_classification(predictions, cfg, out_dir)`` (also reached through
:func:`analysis.report.analyze` when :func:`is_classification_file`) reads ``prediction/probs``
(n, K) softmax probabilities, the file attribute ``class_names`` (a JSON list of K names, JetClass
style: "QCD", "Hbb", ...) and ``truth/label`` (n,) class indices. It writes ``metrics.json`` (the
layout of the energy analysis), ``classification_table.md`` and ``roc_curves.png``,
``score_distributions.png``, ``confusion_matrix.png``.

Metric names (prefix ``cfg.prefix``, default ``test``; C = each class other than the background
``cfg.background_class`` = B, default QCD; ``EE`` = 100 x each of ``cfg.signal_efficiencies`` as
``%g``, e.g. 50, 30, 99.5): ``<prefix>/n_events``, ``<prefix>/n_events_<C>``, ``<prefix>/accuracy``,
``<prefix>/auc_macro`` (mean one-vs-rest AUC, the paper's "AUC"), ``<prefix>/auc_<C>_vs_<B>``
(+ ``_err``), ``<prefix>/rejection<EE>_<C>`` (1/eps_B; + ``_err`` unless it is a lower limit) and
``<prefix>/rejection<EE>_<C>_is_lower_limit`` (1.0 when fewer than one background event passes, the
value then being n_B). A class without events (or a file without background events) has only its
``n_events_<C>``; metrics are never NaN.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from analysis import classification as cm
from analysis import classification_plots as cplots
from analysis.report import (
    AnalysisConfig,
    AnalysisResult,
    PredictionsFileError,
    _attr_str,
    open_predictions,
    write_metrics_json,
)
from pipeline.atomic import write_atomic

PROBS = "prediction/probs"
LABELS = "truth/label"
PROB_SUM_TOL = 1e-3  # allowed |sum_k p_k - 1| per event (float32 softmax is good to ~1e-6)


@dataclass(frozen=True)
class ClassificationSample:
    """The tagger output of a predictions file."""

    probs: np.ndarray  # (n, K) float64 class probabilities
    labels: np.ndarray  # (n,) int64 true class index
    class_names: tuple[str, ...]  # K names
    attrs: dict[str, str]  # file attributes (config_hash, model, ...) as strings


def is_classification_file(path: Path) -> bool:
    """True if ``path`` is a readable HDF5 file with attribute task = "classification" or probs."""
    try:
        with h5py.File(path, "r") as f:
            return _attr_str(f.attrs.get("task", "")) == "classification" or PROBS in f
    except OSError:
        return False


def _class_names(f: h5py.File, path: Path, k: int) -> tuple[str, ...]:
    if "class_names" not in f.attrs:
        raise PredictionsFileError(f"{path}: file attribute 'class_names' is missing")
    raw = f.attrs["class_names"]
    try:
        names = json.loads(_attr_str(raw)) if isinstance(raw, str | bytes) else list(raw)
    except json.JSONDecodeError as err:
        raise PredictionsFileError(f"{path}: attribute 'class_names' is not JSON ({err})") from err
    names = tuple(_attr_str(n) for n in names)
    if len(names) != k or len(set(names)) != k:
        raise PredictionsFileError(
            f"{path}: attribute 'class_names' has {len(names)} names {names}, expected {k} "
            f"distinct ones (the columns of {PROBS!r})"
        )
    return names


def load_classification(path: Path) -> ClassificationSample:
    """Read probabilities, labels and class names; see the module docstring.

    Raises PredictionsFileError (a ValueError) naming the file and the dataset when the file is
    missing or unreadable, ``prediction/probs`` or ``truth/label`` is missing or misshapen, has
    NaN/inf, probabilities are negative or do not sum to 1 within 1e-3, or labels are out of range.
    """
    path = Path(path)
    with open_predictions(path) as f:
        for name in (PROBS, LABELS):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise PredictionsFileError(f"{path}: dataset {name!r} is missing")
        probs = np.asarray(f[PROBS][()], np.float64)
        raw_labels = np.asarray(f[LABELS][()])
        if probs.ndim != 2 or probs.shape[1] < 2:
            raise PredictionsFileError(
                f"{path}: dataset {PROBS!r} has shape {probs.shape}, expected (n, K) with K >= 2"
            )
        names = _class_names(f, path, probs.shape[1])
        attrs = {k: _attr_str(v) for k, v in f.attrs.items()}
    bad = int(np.sum(~np.all(np.isfinite(probs), axis=1)))
    if bad:
        raise PredictionsFileError(f"{path}: dataset {PROBS!r} has NaN/inf in {bad} events")
    if np.any(probs < 0.0):
        raise PredictionsFileError(
            f"{path}: dataset {PROBS!r} has {int(np.sum(probs < 0))} negative probabilities"
        )
    dev = np.abs(probs.sum(axis=1) - 1.0)
    if np.any(dev > PROB_SUM_TOL):
        raise PredictionsFileError(
            f"{path}: dataset {PROBS!r}: {int(np.sum(dev > PROB_SUM_TOL))} events have "
            f"probabilities not summing to 1 within {PROB_SUM_TOL} (worst {float(dev.max()):.3g})"
        )
    if raw_labels.shape != (probs.shape[0],):
        raise PredictionsFileError(
            f"{path}: dataset {LABELS!r} has shape {raw_labels.shape}, expected ({probs.shape[0]},)"
        )
    labels = raw_labels.astype(np.int64)
    if raw_labels.dtype.kind == "f" and not np.array_equal(labels, raw_labels):
        raise PredictionsFileError(f"{path}: dataset {LABELS!r} has non-integer values")
    out = (labels < 0) | (labels >= probs.shape[1])
    if np.any(out):
        raise PredictionsFileError(
            f"{path}: dataset {LABELS!r} has {int(out.sum())} labels outside [0, {probs.shape[1]})"
        )
    return ClassificationSample(probs, labels, names, attrs)


def _clean(name: str) -> str:
    """A class name usable in an MLflow metric name (alphanumerics and ``_ - .``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _eff_tag(eff: float) -> str:
    return f"{100.0 * eff:g}"


def per_class_performance(
    sample: ClassificationSample, cfg: AnalysisConfig
) -> list[cm.BinaryPerformance]:
    """:class:`BinaryPerformance` of every non-background class with events, in class order."""
    if cfg.background_class not in sample.class_names:
        raise ValueError(
            f"background class {cfg.background_class!r} is not among {sample.class_names}"
        )
    b = sample.class_names.index(cfg.background_class)
    n = np.bincount(sample.labels, minlength=len(sample.class_names))
    if n[b] == 0:
        return []
    return [
        cm.signal_vs_background(
            sample.probs, sample.labels, s, b, cfg.signal_efficiencies, (name, cfg.background_class)
        )
        for s, name in enumerate(sample.class_names)
        if s != b and n[s] > 0
    ]


def classification_metrics(
    sample: ClassificationSample, perf: list[cm.BinaryPerformance], cfg: AnalysisConfig
) -> dict[str, float]:
    """The flat metrics of a tagging analysis (module docstring); NaNs are left out."""
    p = cfg.prefix
    out = {f"{p}/n_events": float(sample.labels.size)}
    counts = np.bincount(sample.labels, minlength=len(sample.class_names))
    for name, c in zip(sample.class_names, counts, strict=True):
        out[f"{p}/n_events_{_clean(name)}"] = float(c)
    out[f"{p}/accuracy"] = cm.accuracy(sample.probs, sample.labels)
    out[f"{p}/auc_macro"] = cm.macro_auc(sample.probs, sample.labels)
    for bp in perf:
        c, bkg = _clean(bp.signal), _clean(bp.background)
        out[f"{p}/auc_{c}_vs_{bkg}"] = bp.auc
        out[f"{p}/auc_{c}_vs_{bkg}_err"] = bp.auc_err
        for r in bp.rejections:
            key = f"{p}/rejection{_eff_tag(r.eff_sig)}_{c}"
            out[key] = r.value
            out[f"{key}_err"] = r.err
            out[f"{key}_is_lower_limit"] = float(r.is_lower_limit)
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def _value_error(value: float, err: float) -> str:
    """``value ± err`` rounded to two significant digits of the error."""
    d = max(0, 1 - math.floor(math.log10(err))) if err > 0 else 1
    return f"{value:.{d}f} ± {err:.{d}f}"


def render_markdown(perf: list[cm.BinaryPerformance], acc: float, auc_macro: float) -> str:
    """Markdown table, one row per signal class: events, AUC vs background, the rejections."""
    effs = [r.eff_sig for r in perf[0].rejections] if perf else []
    bkg = perf[0].background if perf else "background"
    head = ["class", "n_sig", f"n_{bkg}", f"AUC vs {bkg}"] + [f"Rej{_eff_tag(e)}" for e in effs]
    lines = [
        f"accuracy = {acc:.4f}, macro AUC (one-vs-rest) = {auc_macro:.4f}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for bp in perf:
        rej = [
            f"> {r.value:.0f} (limit)" if r.is_lower_limit else _value_error(r.value, r.err)
            for r in bp.rejections
        ]
        cells = [bp.signal, str(bp.n_sig), str(bp.n_bkg), f"{bp.auc:.4f} ± {bp.auc_err:.4f}"]
        lines.append("| " + " | ".join(cells + rej) + " |")
    return "\n".join(lines) + "\n"


def analyze_classification(predictions: Path, cfg: AnalysisConfig, out_dir: Path) -> AnalysisResult:
    """Run the tagging analysis of ``predictions`` and write its outputs into ``out_dir``.

    Writes ``metrics.json`` ({"schema_version", "predictions", "attrs", "config", "metrics"}),
    ``classification_table.md`` and the three PNGs (``cfg.plots`` is the energy analysis' and is
    not used). Returns an :class:`AnalysisResult` whose energy fields are None. Raises
    PredictionsFileError for a bad file (see :func:`load_classification`) and ValueError for a
    background class that is not in the file or a signal efficiency outside (0, 1].
    """
    bad = [e for e in cfg.signal_efficiencies if not 0.0 < e <= 1.0]
    if bad:
        raise ValueError(f"signal efficiencies {bad} outside (0, 1]")
    sample = load_classification(Path(predictions))
    perf = per_class_performance(sample, cfg)
    metrics = classification_metrics(sample, perf, cfg)
    acc = cm.accuracy(sample.probs, sample.labels)
    table = render_markdown(perf, acc, cm.macro_auc(sample.probs, sample.labels))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = sample.class_names.index(cfg.background_class)
    scores = {}
    for bp in perf:
        s = sample.class_names.index(bp.signal)
        d = cm.discriminant(sample.probs, s, b)
        scores[bp.signal] = (d[sample.labels == s], d[sample.labels == b])
    k = len(sample.class_names)
    confusion = cm.confusion_matrix(sample.labels, np.argmax(sample.probs, axis=1), k)
    figures = [
        cplots.plot_roc_curves(perf, out_dir / "roc_curves.png"),
        cplots.plot_score_distributions(
            scores, cfg.background_class, out_dir / "score_distributions.png"
        ),
        cplots.plot_confusion_matrix(
            confusion, sample.class_names, out_dir / "confusion_matrix.png"
        ),
    ]
    write_metrics_json(out_dir, predictions, sample.attrs, cfg, metrics)
    write_atomic(out_dir / "classification_table.md", table)
    return AnalysisResult(metrics, figures, table, attrs=sample.attrs)
