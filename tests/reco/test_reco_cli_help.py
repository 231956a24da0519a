"""The command line's own text: ``reco --help`` lists each command with its one-line summary;
messages stay on one line."""

from __future__ import annotations

import inspect


def test_every_command_has_a_one_line_summary():
    """The command list shows a docstring's first paragraph with its line breaks kept (typer's
    rich help): a summary over several lines broke into ragged fragments there. One line of at
    most 95 characters, then the details after a blank line (PEP 257)."""
    import reco.cli  # registers every command, those of the cli_* modules too

    long, names = {}, set()
    for info in reco.cli.app.registered_commands:
        name = info.name or info.callback.__name__
        names.add(name)
        summary = (inspect.getdoc(info.callback) or "").split("\n\n")[0]
        if not summary or "\n" in summary or len(summary) > 95:
            long[name] = summary
    assert long == {}
    assert {"train", "bench", "submit", "convert-jetclass", "export", "register"} <= names


def test_messages_stay_on_one_line():
    """A long path is not broken off its label at 80 columns (what rich assumes of a batch
    job's log): "predictions:" and the path on one line, for grep and copy-paste."""
    from reco.cli import _console

    console = _console()
    path = "/scratch/user/runs/" + "airshower_cnn_energy-20261207-114859-040e63f9/" * 3
    with console.capture() as captured:
        console.print(f"predictions: {path}predictions.h5")
    assert captured.get() == f"predictions: {path}predictions.h5\n"
