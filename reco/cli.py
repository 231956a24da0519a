"""The ``reco`` command: parses arguments, loads the config, calls a library function.

Heavy imports (jax, mlflow, matplotlib) happen inside the commands so ``reco --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="reco: neural reconstruction of air showers and jets on JAX, tracked in MLflow.",
)

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML, e.g. configs/experiments/airshower_cnn_energy.yaml")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Dotted override KEY=VALUE, e.g. --set train.lr=3e-4 (repeatable)"
    ),
]
SmokeOpt = Annotated[
    bool, typer.Option("--smoke", help="Overlay configs/smoke.yaml: a tiny run in seconds")
]


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _load(config: Path, overrides: list[str] | None, smoke: bool):
    from pipeline.config import ConfigError
    from reco.experiment import load_config

    try:
        return load_config(config, overrides or (), smoke=smoke)
    except ConfigError as err:
        _console().print(f"[bold red]config error:[/] {err}")
        raise typer.Exit(2) from None


def _fail(err: Exception) -> None:
    _console().print(f"[bold red]error:[/] {err}")
    raise typer.Exit(1) from None


def _simulate(cfg):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from reco import experiment

    with Progress(
        TextColumn("simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=True,
    ) as bar:
        task = bar.add_task("simulate", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        paths = experiment.simulate(cfg, progress=progress)
    _console().print(f"event files: {paths['train'].parent}")
    return paths


@app.command()
def simulate(config: ConfigArg, set_: SetOpt = None, smoke: SmokeOpt = False) -> None:
    """Simulate the experiment's events into data/<problem>-<hash>/{train,val,test}.h5."""
    cfg = _load(config, set_, smoke)
    try:
        _simulate(cfg)
    except (OSError, ValueError, FloatingPointError) as err:
        _fail(err)


@app.command()
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the newest run of this config from its last checkpoint"
        ),
    ] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder to create, or to resume with --resume")
    ] = None,
) -> None:
    """Train the model (simulating the events first if they do not exist yet)."""
    from reco import experiment

    cfg = _load(config, set_, smoke)
    try:
        paths = _simulate(cfg)
        out, result = experiment.train(cfg, paths, run_dir=run_dir, resume=resume)
    except (OSError, ValueError, FloatingPointError) as err:
        _fail(err)
    _console().print(f"run folder: {out}\n{result}")


@app.command()
def evaluate(
    run: Annotated[
        Path, typer.Argument(help="Run folder (runs/<name>-...) or a checkpoint inside it")
    ],
    events: Annotated[
        Path | None, typer.Option(help="Event file to evaluate on (default: the run's test split)")
    ] = None,
    analyze_: Annotated[
        bool, typer.Option("--analyze/--no-analyze", help="Also run the analysis and log it")
    ] = True,
) -> None:
    """Write predictions.h5 for a trained run (and analyse it, logged to the run in MLflow)."""
    from reco import experiment

    try:
        if analyze_:
            predictions, result = experiment.evaluate_and_analyze(run, events)
            _console().print(result.table_markdown)
        else:
            predictions = experiment.evaluate(run, events)
    except (OSError, ValueError, FloatingPointError) as err:
        _fail(err)
    _console().print(f"predictions: {predictions}")


@app.command()
def analyze(
    predictions: Annotated[Path, typer.Argument(help="predictions.h5")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: next to the file, analysis/)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML for the analysis section")
    ] = None,
) -> None:
    """Resolution, bias and plots from a predictions file (no tracking)."""
    from analysis.report import AnalysisConfig
    from analysis.report import analyze as run_analyze

    cfg = _load(config, None, False).analysis if config else AnalysisConfig()
    out = out or predictions.parent / "analysis"
    try:
        result = run_analyze(predictions, cfg, out)
    except (OSError, ValueError, FloatingPointError) as err:
        _fail(err)
    print(result.table_markdown)
    _console().print(f"metrics and plots: {out}")


@app.command()
def run(config: ConfigArg, set_: SetOpt = None, smoke: SmokeOpt = False) -> None:
    """The whole chain: simulate -> train -> evaluate -> analyze, one MLflow run."""
    from reco import experiment

    cfg = _load(config, set_, smoke)
    try:
        paths = _simulate(cfg)
        run_dir, result = experiment.train(cfg, paths)
        _console().print(f"trained: {result}")
        predictions, analysis = experiment.evaluate_and_analyze(run_dir)
    except (OSError, ValueError, FloatingPointError) as err:
        _fail(err)
    print(analysis.table_markdown)
    _console().print(
        f"run folder: {run_dir}\npredictions: {predictions}\nMLflow: mlflow ui --backend-store-uri sqlite:///mlflow.db"
    )


def main() -> None:  # pragma: no cover - entry point
    sys.exit(app())
