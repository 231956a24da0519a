"""The energy analysis of a predictions file: metrics, per-bin table, figures, ``metrics.json``.

``analyze(predictions, cfg, out_dir)`` reads only the predictions file (``docs/architecture.md``):
``prediction/energy_eev`` or ``prediction/log10_energy``, ``truth/energy_eev`` or
``truth/log10_energy``, and ``truth/zenith`` (radians) when zenith bins are asked for. It returns an
:class:`AnalysisResult` whose ``metrics`` have stable, MLflow-friendly names (below), and writes
``metrics.json``, ``resolution_table.md`` and the PNGs into ``out_dir``.

Metric names (prefix ``cfg.prefix``, default ``test``; ``q`` = ``cfg.quantity`` = ``energy``):
``<prefix>/n_events``, ``<prefix>/<q>_resolution_68`` (+ ``_err``), ``<prefix>/<q>_bias`` (median
relative bias, + ``_err``), ``<prefix>/<q>_bias_mean``, ``<prefix>/<q>_gauss_sigma`` (+ ``_err``),
``<prefix>/<q>_sigma_eev`` (+ ``_err``), and per bin the same with a suffix ``_lgE18.50-18.75`` or
``_zen0-25`` plus ``<prefix>/n_events_lgE18.50-18.75``. A bin with fewer than
``cfg.min_events_per_bin`` events has only its ``n_events`` entry (metrics are never NaN).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import h5py
import numpy as np

from analysis import binned as binned_mod
from analysis import plots
from analysis.binned import BinnedSummary, Summary
from pipeline.atomic import write_atomic

PlotName = Literal["resolution_vs_energy", "resolution_vs_zenith", "reco_vs_true", "residuals"]
METRICS_SCHEMA_VERSION = 1


class PredictionsFileError(ValueError):
    """A predictions file is missing, unreadable, or lacks / has invalid datasets."""


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of the energy analysis (the ``analysis`` section of an experiment config)."""

    # Quantity analysed; only "energy" (relative residual of E, sigma in EeV) is implemented.
    quantity: str = "energy"
    # Bin edges in true log10(E/eV), increasing.
    energy_edges: tuple[float, ...] = (18.5, 18.75, 19.0, 19.25, 19.5, 19.75, 20.0)
    # Bin edges in true zenith, degrees, increasing; empty tuple = no zenith bins.
    zenith_edges_deg: tuple[float, ...] = (0.0, 25.0, 38.0, 50.0, 60.0)
    # Bins with fewer events report only their count (no metrics), events.
    min_events_per_bin: int = 10
    # Figures to draw, PNGs named "<plot>.png" in out_dir.
    plots: tuple[PlotName, ...] = (
        "resolution_vs_energy",
        "resolution_vs_zenith",
        "reco_vs_true",
        "residuals",
    )
    # Prefix of every metric name (the split analysed), e.g. "test" -> "test/energy_resolution_68".
    prefix: str = "test"
    # Classification only: signal efficiencies (fractions) at which 1/eps_B is quoted per class.
    signal_efficiencies: tuple[float, ...] = (0.5, 0.3)
    # Classification only: name of the background class of the per-class ROCs (a class_names entry).
    background_class: str = "QCD"


@dataclass
class AnalysisResult:
    """What :func:`analyze` computed; ``metrics`` are the values written to ``metrics.json``."""

    metrics: dict[str, float]  # MLflow-friendly name -> finite value (counts as floats)
    figures: list[Path]  # PNGs written, in cfg.plots order
    table_markdown: str  # per-energy-bin table (also in resolution_table.md)
    overall: Summary | None = None  # all events (None for a classification analysis)
    energy_bins: BinnedSummary | None = None  # per bin of true log10(E/eV) (None: classification)
    zenith_bins: BinnedSummary | None = None  # per bin of true zenith, None without zenith edges
    attrs: dict[str, str] = field(default_factory=dict)  # provenance attributes of the file


@dataclass(frozen=True)
class EnergySample:
    """Energies of the events of a predictions file, each shape (n,) float64."""

    rec_eev: np.ndarray  # reconstructed energy, EeV
    true_eev: np.ndarray  # true energy, EeV
    lg_rec: np.ndarray  # reconstructed log10(E/eV); NaN where rec_eev <= 0
    lg_true: np.ndarray  # true log10(E/eV)
    zenith_deg: np.ndarray | None  # true zenith, degrees (None if not read)
    attrs: dict[str, str]  # file attributes (config_hash, model, ...) as strings


def _read(f: h5py.File, path: Path, name: str) -> np.ndarray:
    """Read dataset ``name`` as (n,) float64; raise naming file and dataset if absent or non-finite."""
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise PredictionsFileError(f"{path}: dataset {name!r} is missing")
    arr = np.asarray(f[name][()], dtype=np.float64)
    if arr.ndim != 1:
        raise PredictionsFileError(f"{path}: dataset {name!r} has shape {arr.shape}, expected (n,)")
    bad = int(np.sum(~np.isfinite(arr)))
    if bad:
        raise PredictionsFileError(
            f"{path}: dataset {name!r} has {bad} non-finite (NaN/inf) values of {arr.size}"
        )
    return arr


def _attr_str(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _energy_eev(f: h5py.File, path: Path, group: str) -> np.ndarray:
    """E in EeV from ``<group>/energy_eev``, else from ``<group>/log10_energy`` (E/EeV = 10^(lg - 18))."""
    if f"{group}/energy_eev" in f:
        return _read(f, path, f"{group}/energy_eev")
    if f"{group}/log10_energy" in f:
        return 10.0 ** (_read(f, path, f"{group}/log10_energy") - 18.0)
    raise PredictionsFileError(
        f"{path}: dataset {group + '/energy_eev'!r} (or {group + '/log10_energy'!r}) is missing"
    )


def open_predictions(path: Path) -> h5py.File:
    """Open a predictions file read-only; PredictionsFileError naming it if missing or unreadable."""
    if not Path(path).is_file():
        raise PredictionsFileError(f"predictions file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise PredictionsFileError(f"{path}: not a readable HDF5 file ({err})") from err


def load_energy(path: Path, need_zenith: bool = True) -> EnergySample:
    """Read the energies (and the zenith) of a predictions file; see the module docstring.

    Raises PredictionsFileError (a ValueError) naming the file and the dataset when the file is
    missing or unreadable, a dataset is missing, has NaN/inf, or the lengths differ.
    """
    path = Path(path)
    with open_predictions(path) as f:
        # Any non-finite prediction means a broken model: check them all, not only the energy.
        for name in sorted(f["prediction"].keys()) if "prediction" in f else ():
            if (
                isinstance(f["prediction"][name], h5py.Dataset)
                and f["prediction"][name].dtype.kind == "f"
            ):
                _read(f, path, f"prediction/{name}")
        rec, true = _energy_eev(f, path, "prediction"), _energy_eev(f, path, "truth")
        zen = np.degrees(_read(f, path, "truth/zenith")) if need_zenith else None
        attrs = {k: _attr_str(v) for k, v in f.attrs.items()}
    n = true.size
    for name, arr in (("prediction energy", rec), ("truth/zenith", zen)):
        if arr is not None and arr.size != n:
            raise PredictionsFileError(
                f"{path}: {name} has {arr.size} events but the truth energy has {n}"
            )
    if np.any(true <= 0):
        raise PredictionsFileError(
            f"{path}: true energy has {int(np.sum(true <= 0))} non-positive values"
        )
    lg_rec = np.log10(np.where(rec > 0, rec, np.nan)) + 18.0
    return EnergySample(rec, true, lg_rec, np.log10(true) + 18.0, zen, attrs)


def _suffix_lge(lo: float, hi: float) -> str:
    return f"lgE{lo:.2f}-{hi:.2f}"


def _suffix_zen(lo: float, hi: float) -> str:
    return f"zen{lo:g}-{hi:g}"


def _summary_metrics(base: str, s: Summary, suffix: str = "") -> dict[str, float]:
    """Finite metrics of one summary under ``<base>_<metric>[_<suffix>]``; NaNs are left out."""
    tail = f"_{suffix}" if suffix else ""
    pairs = {
        "resolution_68": s.resolution_68, "resolution_68_err": s.resolution_68_err,
        "bias": s.bias_median, "bias_err": s.bias_median_err, "bias_mean": s.bias_mean,
        "gauss_sigma": s.gauss_sigma, "gauss_sigma_err": s.gauss_sigma_err,
        "sigma_eev": s.sigma_eev, "sigma_eev_err": s.sigma_eev_err,
    }  # fmt: skip
    return {f"{base}_{k}{tail}": float(v) for k, v in pairs.items() if math.isfinite(v)}


def metric_dict(
    cfg: AnalysisConfig, overall: Summary, energy: BinnedSummary, zenith: BinnedSummary | None
) -> dict[str, float]:
    """The flat metrics of an analysis; names use only alphanumerics and ``_ - . /``."""
    base = f"{cfg.prefix}/{cfg.quantity}"
    out = {f"{cfg.prefix}/n_events": float(overall.n)}
    out.update(_summary_metrics(base, overall))
    for binned, suffix in ((energy, _suffix_lge), (zenith, _suffix_zen)):
        if binned is None:
            continue
        for lo, hi, row in zip(binned.edges[:-1], binned.edges[1:], binned.rows, strict=True):
            out[f"{cfg.prefix}/n_events_{suffix(lo, hi)}"] = float(row.n)
            out.update(_summary_metrics(base, row, suffix(lo, hi)))
    return out


def write_metrics_json(
    out_dir: Path, predictions: Path, attrs: dict, cfg: AnalysisConfig, metrics: dict[str, float]
) -> None:
    """``metrics.json``: schema version, the predictions file, its attributes, the analysis
    config and the metrics (strict JSON: no NaN), written atomically."""
    payload = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "predictions": str(predictions),
        "attrs": attrs,
        "config": asdict(cfg),
        "metrics": metrics,
    }
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(out_dir / "metrics.json", text)


def analyze(
    predictions: Path,
    cfg: AnalysisConfig,
    out_dir: Path,
    *,
    xmax_expectations: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> AnalysisResult:
    """Run the energy analysis of ``predictions`` and write its outputs into ``out_dir``.

    Writes ``metrics.json`` ({"schema_version", "predictions", "attrs", "config", "metrics"}),
    ``resolution_table.md`` (the per-energy-bin table, then the per-zenith-bin one) and one
    ``<plot>.png`` per entry of ``cfg.plots``. Raises ValueError for an unsupported quantity or
    plot name and PredictionsFileError (a ValueError) for a bad file (see :func:`load_energy`).
    A classification predictions file (attribute ``task = "classification"`` or a
    ``prediction/probs`` dataset) goes to :func:`analysis.classification_report.analyze_classification`.
    A file with ``prediction/xmax`` and/or ``prediction/ln_a`` also gets the composition analysis
    (:mod:`analysis.composition`; ``xmax_expectations`` go to its elongation plot), merged into
    the metrics, figures and ``resolution_table.md``; without an energy prediction, only that one.
    """
    from analysis import classification_report, composition  # here: they import this module

    if classification_report.is_classification_file(Path(predictions)):
        return classification_report.analyze_classification(predictions, cfg, out_dir)
    comp_targets, has_energy = composition.composition_targets(Path(predictions))
    if comp_targets and not has_energy:
        return composition.analyze_composition(predictions, cfg, out_dir, xmax_expectations)
    if cfg.quantity != "energy":
        raise ValueError(f"analysis quantity {cfg.quantity!r} is not implemented; only 'energy'")
    unknown = set(cfg.plots) - set(get_args(PlotName))
    if unknown:
        raise ValueError(f"unknown plots {sorted(unknown)}; choose from {get_args(PlotName)}")
    use_zenith = len(cfg.zenith_edges_deg) > 0
    sample = load_energy(Path(predictions), need_zenith=use_zenith)
    rel = (sample.rec_eev - sample.true_eev) / sample.true_eev
    diff = sample.rec_eev - sample.true_eev
    overall = binned_mod.summarize(rel, diff, min_events=1)
    m = cfg.min_events_per_bin
    energy = binned_mod.bin_summaries(
        sample.lg_true, rel, diff, cfg.energy_edges, "lgE", "log10(E/eV)", m
    )
    zenith = None
    if use_zenith:
        zenith = binned_mod.bin_summaries(
            sample.zenith_deg, rel, diff, cfg.zenith_edges_deg, "zenith", "deg", m
        )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    for name in cfg.plots:
        png = out_dir / f"{name}.png"
        if name == "resolution_vs_energy":
            figures.append(plots.plot_resolution_vs_energy(energy, png))
        elif name == "resolution_vs_zenith" and zenith is not None:
            figures.append(plots.plot_resolution_vs_zenith(zenith, png))
        elif name == "reco_vs_true":
            figures.append(plots.plot_reco_vs_true(sample.lg_true, sample.lg_rec, png))
        elif name == "residuals":
            figures.append(plots.plot_residual_histogram(rel, overall, png))

    metrics = metric_dict(cfg, overall, energy, zenith)
    table = binned_mod.render_markdown(energy)
    full_table = (
        table if zenith is None else table + "\n" + binned_mod.render_markdown(zenith, "{:g}")
    )
    if comp_targets:
        comp = composition.run_composition(predictions, cfg, out_dir, xmax_expectations)
        metrics.update(comp.metrics)  # shared names (n_events...) have equal values
        figures += comp.figures
        full_table += "\n" + comp.table_markdown
    write_metrics_json(out_dir, predictions, sample.attrs, cfg, metrics)
    write_atomic(out_dir / "resolution_table.md", full_table)
    return AnalysisResult(metrics, figures, table, overall, energy, zenith, sample.attrs)
