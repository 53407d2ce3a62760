"""``python -m edgeprune`` = the ``edgeprune`` command."""

from edgeprune.cli import run

run()
