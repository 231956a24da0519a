"""``reco compare``, ``reco sync`` and ``reco register``: runs side by side, tracking that missed
the server, and runs as versions of registered models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reco.cli import _console, _fail, _register, app


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (analysed) to compare")],
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the table to this file (and the plot beside it, as .png)"),
    ] = None,
) -> None:
    """A markdown table of finished runs: parameters, training time and the test metrics
    (regression runs: also per energy bin)."""
    from reco import compare as cmp

    try:
        rows = cmp.compare_runs(runs)
        table = cmp.render_markdown(rows)
        if out is not None:
            out.write_text(table)
            plot = cmp.plot_binned(rows, out.with_suffix(".png"))
            if plot is not None:
                _console().print(f"plot: {plot}")
    except (OSError, ValueError) as err:
        _fail(err)
    print(table)


@app.command()
def sync(
    run: Annotated[Path, typer.Argument(help="Run folder whose tracking journal to upload")],
    uri: Annotated[
        str | None,
        typer.Option(help="Tracking server to send to (default: the one the run was logged to)"),
    ] = None,
) -> None:
    """Upload to MLflow what a run logged while the tracking server was down (its journal in
    <run>/tracking/); safe to repeat: only what MLflow has not accepted is sent."""
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
    """Register a run's checkpoint as a new version of an MLflow model (pyfunc wrapper of the
    Orbax checkpoint, with its ONNX export); evaluate it with reco evaluate models:/NAME/VERSION."""
    _register(run, name, which)
