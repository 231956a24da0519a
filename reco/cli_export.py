"""``reco export``: a trained model as a deployment file (ONNX or jax.export; :mod:`reco.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reco.cli import _console, _fail, app


@app.command("export")
def export_model(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="RUN_OR_MODEL",
            help="Run folder, its checkpoints/ folder, a checkpoint folder, or a registered "
            "model version models:/NAME/VERSION",
        ),
    ],
    format_: Annotated[
        str, typer.Option("--format", help="onnx (jax2onnx) | jax (jax.export, lossless)")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            help="File to write (default: <run>/export/model.onnx or model.jaxexport; "
            "models:/NAME/VERSION: exports/NAME-vVERSION/...)"
        ),
    ] = None,
    which: Annotated[str, typer.Option(help="best | last checkpoint of a run")] = "best",
) -> None:
    """Export a trained model's inference function (raw outputs, weights included).

    Inputs are named as the loader's batch keys; the batch size (and the set length of the set
    models) is dynamic. See reco/export.py.
    """
    from reco import export

    try:
        source = Path(checkpoint)
        if checkpoint.startswith("models:/"):
            from reco import registry

            folder = registry.download_folder(checkpoint, "exports")
            source = registry.load(checkpoint, dst=folder / "model").checkpoint
            out = out or folder / export.FORMATS.get(format_, "model")
        path = export.export(source, format_, out, which)
    except (OSError, ValueError) as err:
        _fail(err)
    _console().print(f"exported: {path}")
