import sys

try:
    from segdino.cli import main
except KeyboardInterrupt:  # Ctrl-C before `main` can catch it
    print("segdino: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
