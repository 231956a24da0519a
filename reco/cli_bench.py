"""``reco bench``: the throughput table of this machine (:mod:`reco.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reco.cli import _console, _fail, app


@app.command()
def bench(
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated sections: simulation, cnn, transformer, part, part_small"
        ),
    ] = "simulation,cnn,transformer,part,part_small",
    events: Annotated[
        int,
        typer.Option(
            help="Events simulated per experiment (and per call); the loader's first epoch needs "
            "a file of several blocks to read as a real file does (2k events read ~1.6x slower)"
        ),
    ] = 16384,
    batch: Annotated[int, typer.Option(help="Batch size of the loader and the steps")] = 128,
    repeats: Annotated[int, typer.Option(help="Timed calls per number (median reported)")] = 5,
    precision: Annotated[
        str, typer.Option(help="Compute dtype of the models: float32 or bfloat16")
    ] = "float32",
    out: Annotated[Path | None, typer.Option(help="Also write the table (markdown) here")] = None,
    malloc: Annotated[
        str,
        typer.Option(
            help="keep / huge_pages / mimalloc: reuse the host memory freed between steps, as "
            "`reco train` does with that train.host_memory (reco.host_memory); system: malloc "
            "as it comes"
        ),
    ] = "system",
) -> None:
    """Throughput and peak memory of reco's own configs on this machine (run it alone).

    Simulation, loader, train step and inference, medians after warm-up."""
    from reco import cli, host_memory

    if malloc not in host_memory.MODES:
        _fail(ValueError(f"--malloc must be one of {host_memory.MODES}, got {malloc!r}"))
    # before jax starts (reco.bench loads it); huge_pages and mimalloc restart the command
    kept = host_memory.apply(malloc, restart=cli._AS_COMMAND)
    from reco import bench as b

    sections = [s.strip() for s in only.split(",") if s.strip()]
    try:
        head = b.header()
        head.append(
            "host malloc: "
            + (f"freed memory kept, {malloc} (reco.host_memory)" if kept else "system")
        )
        rows = b.run(
            sections,
            events,
            batch,
            repeats,
            progress=lambda s: _console().print(f"[dim]{s}...[/]"),
            precision=precision,
        )
    except (OSError, ValueError) as err:
        _fail(err)
    table = b.markdown(rows, head)
    print(table)
    if out is not None:
        out.write_text(table)
        _console().print(f"written: {out}")
