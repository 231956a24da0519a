"""`python -m reco` = the `reco` command."""

from reco.cli import app

app()
