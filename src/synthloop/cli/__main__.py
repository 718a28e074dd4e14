"""`python -m synthloop.cli`: the same as the `synthloop` command."""

from synthloop.cli import entrypoint

entrypoint()
