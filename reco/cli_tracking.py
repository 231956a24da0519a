"""``reco compare``, ``reco sync`` and ``reco register``: runs side by side, tracking that missed
the server, and runs as versions of registered models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reco.cli import _console, _fail, _register, app


@app.command()
def compare(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders (analysed) to compare")
    ] = None,
    best_per_model: Annotated[
        str | None,
        typer.Option(
            help="Instead of folders: the best finished run of each model in this MLflow "
            "experiment (airshower, jets), ranked by --metric"
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Ranking metric for --best-per-model (default: test/energy_resolution_68 "
            "for airshower, test/auc_macro for jets)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Table file (markdown); the overlay plots go beside it (default: "
            "runs/comparisons/compare-<time>.md)"
        ),
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log/--no-log",
            help="Log table and plots as a comparison run in the runs' MLflow experiment",
        ),
    ] = True,
) -> None:
    """A table and overlay plots of finished runs, logged as a comparison run.

    The table: parameters, training time, test metrics (regression runs also per energy bin);
    the plots: resolution vs energy, ROC curves per class."""
    import time

    from rich.console import Console
    from rich.markdown import Markdown

    from pipeline.tracking import default_tracking_uri
    from reco import compare as cmp
    from reco import comparison

    if bool(runs) == bool(best_per_model):
        _fail(ValueError("give run folders or --best-per-model EXPERIMENT (one of the two)"))
    try:
        if best_per_model:
            runs, notes = comparison.best_runs(best_per_model, metric, default_tracking_uri())
            for note in notes:
                _console().print(f"[yellow]left out: {note}[/]")
        rows = cmp.compare_runs(runs)
        table = cmp.render_markdown(rows)
        out = out or Path("runs") / "comparisons" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        plots = comparison.overlay_plots(rows, out)
    except (OSError, ValueError) as err:
        _fail(err)
    stdout = Console()
    if stdout.is_terminal:
        stdout.print(Markdown(table))
    else:
        print(table)
    run_id = None
    if log:
        try:
            run_id = comparison.log_comparison(rows, out, plots)
        except Exception as err:  # noqa: BLE001 - the table and plots are written either way
            _console().print(f"[yellow]comparison not logged to MLflow: {err}[/]")
    for path in (out, *plots):
        _console().print(f"written: {path}")
    if run_id:
        _console().print(f"MLflow comparison run: {run_id}")


@app.command()
def sync(
    run: Annotated[Path, typer.Argument(help="Run folder whose tracking journal to upload")],
    uri: Annotated[
        str | None,
        typer.Option(help="Tracking server to send to (default: the one the run was logged to)"),
    ] = None,
) -> None:
    """Upload to MLflow what a run logged while the tracking server was down.

    The run's journal is in <run>/tracking/; safe to repeat: only what MLflow has not accepted
    is sent."""
    from reco import experiment

    try:
        result = experiment.sync_tracking(run, uri=uri)
    except (OSError, ValueError) as err:
        _fail(err)
    except Exception as err:  # noqa: BLE001 - the server refused: say so, nothing is lost
        _fail(RuntimeError(f"{run}: MLflow did not take the journal ({err}); nothing was lost"))
    for path in result["missing"]:
        _console().print(f"[yellow]artifact no longer on disk, not uploaded: {path}[/]")
    _console().print(f"sent {result['sent']} tracking entries to MLflow run {result['run_id']}")


@app.command()
def register(
    run: Annotated[Path, typer.Argument(help="Run folder (trained, logged to MLflow)")],
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. airshower-energy")],
    which: Annotated[str, typer.Option(help="best | last checkpoint")] = "best",
) -> None:
    """Register a run's checkpoint as a new version of an MLflow model.

    A pyfunc wrapper of the Orbax checkpoint, with its ONNX export; evaluate it with reco
    evaluate models:/NAME/VERSION."""
    _register(run, name, which)
