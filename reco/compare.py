"""Side-by-side table of finished runs: ``reco compare RUN [RUN ...]`` and the suite summaries.

A run folder holds everything needed: ``config.yaml`` (model, problem), ``run.json`` (parameter
count and training time, written by :func:`reco.experiment.train`) and ``analysis/metrics.json``
(written by the analysis stage). Classification runs are compared on accuracy, macro AUC and the
background rejection 1/eps_B at 50% signal efficiency per class; regression runs on the overall
68% resolution and median bias of each target, and the p/Fe merit factors where the composition
analysis ran; below that table, per bin of true energy, one table per target (resolution with
its error, median bias) and one of the merit factors, and :func:`plot_binned` draws the same
numbers against energy. The same numbers are in MLflow (runs of a suite carry the tag
``suite``), where the UI's compare view plots them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

METRICS_FILE = Path("analysis") / "metrics.json"
# p/Fe separation from the reconstructed Xmax and ln A, and from the true Xmax (the limit)
MERIT_FACTORS = ("merit_factor_xmax", "merit_factor_lna", "merit_factor_xmax_true")
# metric stem -> (label, unit, scale, format) of the per-energy-bin tables
BINNED = {
    "energy": ("Energy", "%", 100.0, ".1f"),
    "xmax": ("Xmax", "g/cm^2", 1.0, ".1f"),
    "lna": ("ln A", "", 1.0, ".2f"),
}
# <name>[_err]_lgE<lo>-<hi> (energy bins) or <name>[_err]_lgEabove<lo> (high-energy selection)
_BIN_KEY = re.compile(
    r"^(?P<name>[a-z0-9_]+?)(?P<err>_err)?"
    r"_lgE(?:(?P<lo>\d+\.\d+)-(?P<hi>\d+\.\d+)|above(?P<above>\d+\.\d+))$"
)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What the comparison needs from one run folder."""

    run_dir: Path
    name: str  # the experiment name (a suite variant: <suite>-<variant>)
    model: str  # registered architecture
    problem: str  # "airshower" or "jets"
    n_params: int | None  # None for runs trained before run.json recorded it
    wall_s: float | None  # training wall time in seconds (of the last train/resume call)
    epochs: int | None
    metrics: dict[str, float]  # analysis/metrics.json "metrics"
    class_names: tuple[str, ...] = ()  # classification: label names in index order


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent}: no {path.name} ({what})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def summarize_run(run_dir: Path) -> RunSummary:
    """The :class:`RunSummary` of a finished, analysed run folder.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder, or it has no analysis yet (the
            message says to run ``reco evaluate`` on it).
    """
    run_dir = Path(run_dir)
    info = _read_json(run_dir / "run.json", "not a run folder")
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: not analysed yet (no {METRICS_FILE}); run: reco evaluate {run_dir}"
        )
    analysis = _read_json(metrics_path, "analysis")
    metrics = analysis.get("metrics", {})
    try:
        class_names = tuple(json.loads(analysis.get("attrs", {}).get("class_names", "[]")))
    except (TypeError, json.JSONDecodeError):
        class_names = ()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    train = info.get("train", {})
    return RunSummary(
        run_dir=run_dir,
        name=str(cfg.get("name", run_dir.name)),
        model=str(info.get("model") or (cfg.get("model") or {}).get("name", "?")),
        problem=str(cfg.get("problem", "?")),
        n_params=train.get("n_params"),
        wall_s=train.get("wall_s"),
        epochs=train.get("epochs_run"),
        metrics={k: float(v) for k, v in metrics.items()},
        class_names=tuple(str(c) for c in class_names),
    )


def compare_runs(run_dirs: Sequence[Path]) -> list[RunSummary]:
    """Summaries of ``run_dirs`` in the given order (errors name the offending folder)."""
    if not run_dirs:
        raise ValueError("compare: no run folders given")
    return [summarize_run(Path(d)) for d in run_dirs]


def _metric(metrics: dict[str, float], suffix: str) -> float | None:
    """The value of the metric named ``<prefix>/<suffix>`` (any prefix), or None."""
    for key, value in metrics.items():
        if key.split("/", 1)[-1] == suffix:
            return value
    return None


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _rejection_classes(rows: Sequence[RunSummary]) -> list[str]:
    """Classes with a 50% rejection in any run: in label order, then any others by name."""
    classes: dict[str, None] = {c: None for r in rows for c in r.class_names}
    found: set[str] = set()
    for r in rows:
        for key in r.metrics:
            tail = key.split("/", 1)[-1]
            if tail.startswith("rejection50_") and not tail.endswith(("_err", "_is_lower_limit")):
                found.add(tail.removeprefix("rejection50_"))
    return [c for c in classes if c in found] + sorted(found - set(classes))


def render_markdown(rows: Sequence[RunSummary]) -> str:
    """A markdown table, one row per run (classification or regression columns, by metrics);
    for regression runs with energy bins, the per-bin tables of :func:`render_binned` follow."""
    head = ["run", "model", "params", "train [min]", "epochs"]
    classification = all(_metric(r.metrics, "accuracy") is not None for r in rows)
    if classification:
        classes = _rejection_classes(rows)
        head += ["accuracy", "macro AUC"] + [f"Rej50 {c}" for c in classes]
    else:
        quantities = sorted(
            {
                k.split("/", 1)[-1].removesuffix("_resolution_68")
                for r in rows
                for k in r.metrics
                if k.endswith("_resolution_68")
            }
        )
        head += [f"{q} resolution 68%" for q in quantities] + [f"{q} bias" for q in quantities]
        merits = [m for m in MERIT_FACTORS if any(_metric(r.metrics, m) is not None for r in rows)]
        head += [f"p/Fe merit ({m.removeprefix('merit_factor_')})" for m in merits]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.name,
            r.model,
            f"{r.n_params:,}" if r.n_params is not None else "–",
            _fmt(None if r.wall_s is None else r.wall_s / 60.0, ".1f"),
            str(r.epochs) if r.epochs is not None else "–",
        ]
        if classification:
            cells += [
                _fmt(_metric(r.metrics, "accuracy"), ".4f"),
                _fmt(_metric(r.metrics, "auc_macro"), ".4f"),
            ]
            for c in classes:
                rej = _metric(r.metrics, f"rejection50_{c}")
                limit = _metric(r.metrics, f"rejection50_{c}_is_lower_limit")
                cells.append(("> " if limit else "") + _fmt(rej, ".0f"))
        else:
            cells += [_fmt(_metric(r.metrics, f"{q}_resolution_68"), ".4f") for q in quantities]
            cells += [_fmt(_metric(r.metrics, f"{q}_bias"), "+.4f") for q in quantities]
            cells += [_fmt(_metric(r.metrics, m), ".2f") for m in merits]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    return table if classification else table + render_binned(rows)


Bin = tuple[float, float | None]  # (lo, hi) of a bin of true log10(E/eV); hi None = "above lo"


def binned(run: RunSummary, name: str) -> dict[Bin, tuple[float, float]]:
    """Bin -> (value, error) of the metric ``name`` (e.g. ``energy_resolution_68``,
    ``merit_factor_xmax``) per energy bin; the error is NaN where none was logged."""
    values: dict[Bin, float] = {}
    errors: dict[Bin, float] = {}
    for key, value in run.metrics.items():
        m = _BIN_KEY.match(key.split("/", 1)[-1])
        if m is None or m["name"] != name:
            continue
        edge = (float(m["lo"]), float(m["hi"])) if m["above"] is None else (float(m["above"]), None)
        (errors if m["err"] else values)[edge] = value
    return {b: (v, errors.get(b, math.nan)) for b, v in values.items()}


def short_names(rows: Sequence[RunSummary]) -> list[str]:
    """Run names without their common ``<suite>-`` prefix (the whole name when none is shared)."""
    names = [r.name for r in rows]
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("-") + 1] if len(names) > 1 else ""
    return [n.removeprefix(prefix) or n for n in names]


def _bin_label(edge: Bin) -> str:
    lo, hi = edge
    return f"{lo:.2f}-{hi:.2f}" if hi is not None else f">= {lo:.2f}"


def _sorted_bins(bins: set[Bin]) -> list[Bin]:
    return sorted(bins, key=lambda b: (b[1] is None, b[0]))  # bins, then the "above" rows


def render_binned(rows: Sequence[RunSummary]) -> str:
    """Per bin of true log10(E/eV): one table per target (68% resolution +- error, median bias)
    and one of the p/Fe merit factors; empty when no run has energy-binned metrics."""
    names = short_names(rows)
    out = []
    for stem, (label, unit, scale, spec) in BINNED.items():
        res = [binned(r, f"{stem}_resolution_68") for r in rows]
        bias = [binned(r, f"{stem}_bias") for r in rows]
        bins = _sorted_bins({b for d in res for b in d})
        if not bins:
            continue
        out += [
            f"\n{label}: 68% resolution and median bias{f' [{unit}]' if unit else ''} per bin of "
            "true log10(E/eV)\n",
            "| log10(E/eV) | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for b in bins:
            cells = []
            for r, bi in zip(res, bias, strict=True):
                if b not in r:
                    cells.append("–")
                    continue
                v, e = r[b]
                cell = f"{_fmt(v * scale, spec)} ± {_fmt(e * scale, spec)}"
                if b in bi:
                    cell += f" ({_fmt(bi[b][0] * scale, '+' + spec)})"
                cells.append(cell)
            out.append(f"| {_bin_label(b)} | " + " | ".join(cells) + " |")
    merit = {
        k: [binned(r, f"merit_factor_{k}") for r in rows] for k in ("xmax", "lna", "xmax_true")
    }
    truth = next((d for d in merit["xmax_true"] if d), {})
    bins = _sorted_bins({b for d in merit["xmax"] + merit["lna"] + [truth] for b in d})
    if bins:
        cols = [(k, i) for k in ("xmax", "lna") for i in range(len(rows)) if merit[k][i]]
        head = [f"{names[i]} ({'Xmax' if k == 'xmax' else 'ln A'})" for k, i in cols]
        out += [
            "\np/Fe merit factor per bin of true log10(E/eV), from the reconstructed Xmax or ln A "
            "and from the true Xmax (the limit of shower-to-shower fluctuations)\n",
            "| log10(E/eV) | " + " | ".join(head) + " | true Xmax |",
            "|---|" + "---:|" * (len(head) + 1),
        ]
        for b in bins:
            cells = [merit[k][i].get(b) for k, i in cols] + [truth.get(b)]
            text = [
                "–" if c is None else f"{_fmt(c[0], '.2f')} ± {_fmt(c[1], '.2f')}" for c in cells
            ]
            out.append(f"| {_bin_label(b)} | " + " | ".join(text) + " |")
    return "\n".join(out) + "\n" if out else ""


def plot_binned(rows: Sequence[RunSummary], path: Path) -> Path | None:
    """Resolution and bias of each target against true energy, one marker per run (PNG at
    ``path``); None, and nothing written, when no run has energy-binned metrics."""
    from analysis.plots import plot_comparison_vs_energy

    series = {}
    for name, r in zip(short_names(rows), rows, strict=True):
        per_stem = {}
        for stem, (_, _, scale, _) in BINNED.items():
            res, bias = binned(r, f"{stem}_resolution_68"), binned(r, f"{stem}_bias")
            bins = [b for b in _sorted_bins(set(res)) if b[1] is not None]
            if bins:
                arr = np.array([[*b, *res[b], *bias.get(b, (math.nan, math.nan))] for b in bins])
                arr[:, 2:] *= scale
                per_stem[stem] = arr
        if per_stem:
            series[name] = per_stem
    if not series:
        return None
    labels = {
        stem: f"{label} [{unit}]" if unit else label for stem, (label, unit, _, _) in BINNED.items()
    }
    return plot_comparison_vs_energy(series, labels, Path(path))
