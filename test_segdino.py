"""The SegDINO reference's `test_segdino.py`, with its flags and meanings, run by segdino.

`python test_segdino.py --data_dir ... ` is `segdino test --data-dir ...`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before installing too

from segdino.commands import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
