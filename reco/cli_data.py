"""``reco convert-*`` and ``reco export-jetclass``: real jet files to and from event files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reco.cli import _console, _fail, app


@app.command("convert-jetclass")
def convert_jetclass(
    files: Annotated[list[Path], typer.Argument(help="JetClass ROOT files (TTree 'tree')")],
    out: Annotated[Path, typer.Option(help="Event file to write, e.g. data/jetclass/test.h5")],
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated label names in index order (default: those present)"),
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test (a file attribute)")] = "test",
    entry_stop: Annotated[int | None, typer.Option(help="At most this many jets per file")] = None,
    drop_unlisted: Annotated[
        bool, typer.Option(help="Skip jets of classes not in --classes instead of failing")
    ] = False,
) -> None:
    """JetClass ROOT files -> one jets event file that train/evaluate read (data.simulate: false)."""
    from simulation.readers.jetclass import convert_jetclass as convert

    names = [c.strip() for c in classes.split(",")] if classes else None
    try:
        path = convert(
            files,
            out,
            classes=names,
            drop_unlisted=drop_unlisted,
            split=split,
            entry_stop=entry_stop,
        )
    except (OSError, ValueError) as err:
        _fail(err)
    _console().print(f"event file: {path}")


@app.command("convert-toptagging")
def convert_toptagging(
    file: Annotated[
        Path, typer.Argument(help="Top-tagging reference file (train.h5 / val.h5 / test.h5)")
    ],
    out: Annotated[Path, typer.Option(help="Event file to write, e.g. data/toptagging/test.h5")],
    split: Annotated[str, typer.Option(help="train, val or test (a file attribute)")] = "test",
    entry_stop: Annotated[int | None, typer.Option(help="At most this many jets")] = None,
) -> None:
    """Top-tagging reference HDF5 (pandas table) -> one jets event file, classes QCD / Tbqq."""
    from simulation.readers.toptagging import convert_toptagging as convert

    try:
        path = convert(file, out, split=split, entry_stop=entry_stop)
    except (OSError, ValueError) as err:
        _fail(err)
    _console().print(f"event file: {path}")


@app.command("export-jetclass")
def export_jetclass(
    events: Annotated[Path, typer.Argument(help="A jets event file (e.g. data/jets-*/test.h5)")],
    out: Annotated[Path, typer.Argument(help="ROOT file to write (TTree 'tree', JetClass schema)")],
) -> None:
    """A jets event file -> a ROOT file in the JetClass schema, for tools written for JetClass."""
    from simulation.readers.jetclass import write_jetclass_root

    try:
        path = write_jetclass_root(out, events)
    except (OSError, ValueError) as err:
        _fail(err)
    _console().print(f"ROOT file: {path}")


@app.command("convert-delphes")
def convert_delphes(
    files: Annotated[list[Path], typer.Argument(help="Delphes ROOT files (TTree 'Delphes')")],
    out: Annotated[Path, typer.Option(help="Event file to write, e.g. data/delphes/test.h5")],
    label: Annotated[
        str, typer.Option(help="JetClass label of every jet (no truth matching is done)")
    ],
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated label names in index order (default: the label)"),
    ] = None,
    radius: Annotated[float, typer.Option(help="Anti-kT radius R (JetClass 0.8)")] = 0.8,
    min_jet_pt: Annotated[float, typer.Option(help="Minimum jet pT, GeV")] = 20.0,
    max_jet_pt: Annotated[float | None, typer.Option(help="Maximum jet pT, GeV")] = None,
    max_abs_eta: Annotated[float, typer.Option(help="Maximum jet |eta|")] = 2.5,
    max_jets_per_event: Annotated[int, typer.Option(help="Hardest jets kept per event")] = 2,
    split: Annotated[str, typer.Option(help="train, val or test (a file attribute)")] = "test",
    entry_stop: Annotated[
        int | None, typer.Option(help="At most this many events per file")
    ] = None,
) -> None:
    """Delphes ROOT files -> anti-kT jets of the EFlow candidates in one jets event file."""
    from simulation.readers.delphes import convert_delphes as convert

    names = [c.strip() for c in classes.split(",")] if classes else None
    try:
        path = convert(
            files,
            out,
            label=label,
            classes=names,
            radius=radius,
            min_jet_pt=min_jet_pt,
            max_jet_pt=max_jet_pt,
            max_abs_eta=max_abs_eta,
            max_jets_per_event=max_jets_per_event,
            split=split,
            entry_stop=entry_stop,
        )
    except (OSError, ValueError, ImportError) as err:
        _fail(err)
    _console().print(f"event file: {path}")
