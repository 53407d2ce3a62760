"""``python -m edgeprune`` = the ``edgeprune`` command.

SIGINT is handled before the (slow) imports, so a Ctrl-C while they run also exits 130."""

from edgeprune import interrupt

interrupt.install()
try:
    from edgeprune.cli import run
except KeyboardInterrupt:
    interrupt.finish(130)

run()
