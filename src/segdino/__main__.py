"""`python -m segdino`: the `segdino` command line.

This entry point belongs to the commands, not to the library: like the console script in
pyproject.toml, it names `segdino.commands:main` as a string, so that no library module
imports a command.
"""

import importlib
import sys

try:
    main = importlib.import_module("segdino.commands").main
except KeyboardInterrupt:  # Ctrl-C before `main` can catch it
    print("segdino: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
