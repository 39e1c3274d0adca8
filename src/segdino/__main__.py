"""`python -m segdino`: the `segdino` command line (an entry point, like the console script)."""

import sys

try:
    from segdino.commands import cli
except KeyboardInterrupt:  # Ctrl-C before `main` can catch it
    print("segdino: interrupted", file=sys.stderr)
    sys.exit(130)

cli()
