"""``reco compare``: choosing the runs, the overlay plots, and the comparison run in MLflow.

The table itself is :mod:`reco.compare`'s. Runs are given as folders, or chosen from an MLflow
experiment as the best run of each model (:func:`best_runs`: by a test metric, over finished runs
whose folder is still on disk — runs carry their folder in the tag ``run_dir``). The overlays
(:func:`overlay_plots`) put the runs on shared axes: resolution and bias against energy for
regression, ROC curves per signal class for tagging. :func:`log_comparison` records table and
plots as an MLflow run of its own (tag ``kind = comparison``, the compared run ids as params), so
the comparison sits in the UI beside the runs it compares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.tracking import TrackingConfig, find_runs, make_tracker
from reco import compare as cmp

# the metric that ranks runs by default, per problem
DEFAULT_METRIC = {"airshower": "test/energy_resolution_68", "jets": "test/auc_macro"}
_LOWER_IS_BETTER = ("resolution", "loss", "bias", "rmse", "error")
_NOT_TRAINING = ("comparison", "validation")  # kind tags of runs that are not models


def lower_is_better(metric: str) -> bool:
    """Resolutions, losses, biases and errors are better small; accuracies, AUCs, rejections
    and merit factors large."""
    return any(word in metric for word in _LOWER_IS_BETTER)


def best_runs(
    experiment: str, metric: str | None = None, uri: str | None = None
) -> tuple[list[Path], list[str]]:
    """The run folder of the best finished run of each model in an MLflow experiment, ranked by
    ``metric`` (default: :data:`DEFAULT_METRIC` of the experiment); and notes on runs left out.

    Raises:
        ValueError: no finished run of the experiment has the metric and a folder on disk.
    """
    metric = metric or DEFAULT_METRIC.get(experiment)
    if metric is None:
        raise ValueError(f"experiment {experiment!r}: say which metric ranks the runs (--metric)")
    sign = 1.0 if lower_is_better(metric) else -1.0
    best: dict[str, tuple[float, Path]] = {}
    notes = []
    for run in find_runs(experiment, uri):
        if run.status != "FINISHED" or run.tags.get("kind") in _NOT_TRAINING:
            continue
        if metric not in run.metrics:
            continue
        folder = Path(run.tags.get("run_dir", ""))
        if not run.tags.get("run_dir") or not (folder / cmp.METRICS_FILE).is_file():
            notes.append(f"{run.name}: no analysed run folder here ({folder or 'no run_dir tag'})")
            continue
        model = run.tags.get("model", "?")
        score = sign * run.metrics[metric]
        if model not in best or score < best[model][0]:
            best[model] = (score, folder)
    if not best:
        raise ValueError(
            f"experiment {experiment!r}: no finished run with {metric!r} and its analysed run "
            f"folder on this machine"
        )
    return [folder for _, folder in sorted(best.values(), key=lambda v: v[0])], notes


def labels(rows: Sequence[cmp.RunSummary]) -> list[str]:
    """Short run names (:func:`reco.compare.short_names`), made unique with the folder name."""
    names = cmp.short_names(rows)
    if len(set(names)) == len(names):
        return names
    return [r.run_dir.name for r in rows]


def overlay_plots(rows: Sequence[cmp.RunSummary], table: Path) -> list[Path]:
    """The runs on shared axes, as PNGs beside the table file ``table``: ``<table>.png``
    (resolution and bias against energy, regression runs with energy bins) and
    ``<table>_roc.png`` (ROC curves per signal class, tagging runs)."""
    table = Path(table)
    plots = []
    regression = [r for r in rows if not r.class_names]
    binned = cmp.plot_binned(regression, table.with_suffix(".png")) if regression else None
    if binned is not None:
        plots.append(binned)
    tagging = [(n, r) for n, r in zip(labels(rows), rows, strict=True) if r.class_names]
    if tagging:
        plots.append(_roc_overlay(tagging, table.with_name(f"{table.stem}_roc.png")))
    return plots


def _roc_overlay(runs: Sequence[tuple[str, cmp.RunSummary]], path: Path) -> Path:
    from analysis.classification_plots import plot_roc_overlay
    from analysis.classification_report import load_classification, per_class_performance
    from reco.experiment import config_of_run

    curves = {}
    for name, row in runs:
        sample = load_classification(row.run_dir / "predictions.h5")
        curves[name] = per_class_performance(sample, config_of_run(row.run_dir).analysis)
    return plot_roc_overlay(curves, path)


def log_comparison(
    rows: Sequence[cmp.RunSummary], table: Path, plots: Sequence[Path], uri: str | None = None
) -> str | None:
    """A run of its own in the runs' MLflow experiment (on the server the first run was logged
    to, unless ``uri``) holding the table file and the overlays; returns its run id.

    Raises:
        ValueError: the runs are of different problems (no common experiment).
    """
    import json

    problems = sorted({r.problem for r in rows})
    if len(problems) != 1:
        raise ValueError(f"runs of different problems {problems}: compare them separately")
    ids, uris = {}, []
    for name, row in zip(labels(rows), rows, strict=True):
        info = json.loads((row.run_dir / "run.json").read_text())
        ids[name] = info.get("mlflow_run_id") or ""
        uris.append(info.get("tracking_uri"))
    cfg = TrackingConfig(system_metrics=False, uri=uri or next((u for u in uris if u), None))
    run_name = (
        f"compare-{'-'.join(sorted({r.model for r in rows}))}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    tags = {"kind": "comparison", "compared_runs": ",".join(i for i in ids.values() if i)}
    tracker = make_tracker(cfg, problems[0], run_name, tags=tags)
    status = "FAILED"
    try:
        tracker.log_params({f"run.{name}": run_id for name, run_id in ids.items()})
        tracker.log_artifact(Path(table))
        for plot in plots:
            tracker.log_artifact(plot, "plots")
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return getattr(tracker, "run_id", None)
