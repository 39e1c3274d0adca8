import sys

from segdino.cli import main

sys.exit(main())
