"""Progress bars, drawn only where someone watches them: on a terminal. Off one (a log file,
a pipe, a notebook's captured stderr) a bar would be hundreds of carriage-return redraws, so
there is none; `segdino train` prints a line per epoch either way. The command line and the
Python API follow this one rule."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def drawing(wanted: bool = True) -> bool:
    """Whether a bar is drawn: wanted, and stderr (where tqdm draws) is a terminal."""
    return wanted and sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, wanted: bool = True, **kwargs) -> tqdm:
    """A tqdm bar over `iterable` (tqdm's keyword arguments), silent unless `drawing(wanted)`."""
    return tqdm(iterable, disable=not drawing(wanted), **kwargs)


def format_interval(seconds: float) -> str:
    """Seconds as tqdm shows them: [H:]MM:SS."""
    return tqdm.format_interval(seconds)
