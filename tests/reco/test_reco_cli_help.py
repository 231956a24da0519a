"""``reco --help`` lists each command with its one-line summary."""

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
