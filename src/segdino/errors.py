"""The one exception type a user is meant to see.

Anything the user can fix (a wrong flag, a missing file, a checkpoint of another
architecture) raises `UserError` with a one-line message that names the file or flag and
says what was expected. The CLI prints it and exits with code 2; the Python API lets it
propagate like any exception.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


class MissingExtra(UserError):
    """An optional dependency (`pip install segdino[EXTRA]`) is not installed: what needs it
    fails, and a command that merely offers it (`bench`'s engine rows) can skip it."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for
    quoting a library's error inside a one-line UserError."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
