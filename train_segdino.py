"""The SegDINO reference's `train_segdino.py`, with its flags and meanings, run by segdino.

`python train_segdino.py --data_dir ... ` is `segdino train --data-dir ...`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before installing too

from segdino.commands import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
