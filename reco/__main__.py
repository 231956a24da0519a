"""`python -m reco` = the `reco` command."""

from reco.cli import main

main()
