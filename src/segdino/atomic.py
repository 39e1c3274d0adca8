"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A write that the system refuses (a read-only folder, a full disk, a name taken by a folder)
raises a `UserError` naming the file, as one line. Commands call `check_writable_folder` or
`check_writable_file` on their outputs before any work, so that most such problems show
before a long run rather than at its end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segdino.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: setting it to read it is not thread-safe


def _cannot_write(path: Path, exc: OSError) -> UserError:
    return UserError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    The temporary file keeps `path`'s suffix, so writers that choose a format by suffix
    (PIL, safetensors) behave as for the final name. On error it is removed. An OSError in
    creating, writing (one about the temporary file or no file in particular, as a full disk
    gives) or renaming becomes a UserError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                   suffix=path.suffix)
        os.close(fd)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 is for the temporary file only
        os.replace(tmp_path, path)
    except OSError as exc:
        # An error about another file (an input the writer reads) is not this write's.
        if exc.filename not in (None, str(tmp_path), str(path)):
            raise
        raise _cannot_write(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (existing or to be made), or None. Nothing
    is created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "is a file, not a folder" if existing == folder else \
            f"{existing} is a file, not a folder"
    try:  # a real write: permission bits alone do not tell (root, read-only mounts, ACLs)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        return "folder is not writable" if existing == folder else \
            f"folder {existing} is not writable"
    return None


def check_writable_folder(path: str | os.PathLike, flag: str) -> None:
    """A UserError naming `flag` and `path` unless files can be written in folder `path`,
    existing or to be made: no part of it may be a file, and its nearest existing folder
    must be writable. Nothing is created."""
    if problem := folder_problem(Path(path)):
        raise UserError(f"{flag} {path}: {problem}")


def check_writable_file(path: str | os.PathLike, flag: str) -> None:
    """A UserError naming `flag` and `path` unless file `path` can be written: it is not a
    folder, and files can be written in its folder (see `check_writable_folder`)."""
    path = Path(path)
    problem = "is a folder, expected a file name" if path.is_dir() else \
        folder_problem(path.parent)
    if problem:
        raise UserError(f"{flag} {path}: {problem}")
