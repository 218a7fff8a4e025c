"""`python -m descent`, the same as the `descent` command."""

from descent.cli import app

app()
