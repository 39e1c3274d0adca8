"""Atomic writes: the old file or the new one, never half of one, with the usual mode."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from segdino.atomic import atomic_path, check_writable_file, check_writable_folder, write_text
from segdino.errors import UserError


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_written_file_has_the_umask_mode(tmp_path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask


def test_a_refused_write_is_one_line_naming_the_file(tmp_path, monkeypatch) -> None:
    def full_disk(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "mask.png"
    with pytest.raises(UserError, match=f"^{target}: cannot write \\(No space left on device\\)$"):
        write_text(target, "x")
    assert not list(tmp_path.iterdir())  # no temporary left behind


def test_an_error_reading_another_file_is_not_the_writes(tmp_path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.txt"):
        (tmp_path / "missing.txt").read_text()


def test_a_folder_under_a_file_cannot_be_written(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=f"^{tmp_path}/file/a/b.txt: cannot write"):
        write_text(tmp_path / "file" / "a" / "b.txt", "x")
    with pytest.raises(UserError, match=f"^--out {tmp_path}/file/a: {tmp_path}/file is a file"):
        check_writable_folder(tmp_path / "file" / "a", "--out")
    with pytest.raises(UserError, match=f"^--out {tmp_path}/file: is a file, not a folder"):
        check_writable_folder(tmp_path / "file", "--out")
    with pytest.raises(UserError, match=f"^--out {tmp_path}: is a folder, expected a file"):
        check_writable_file(tmp_path, "--out")
    check_writable_folder(tmp_path / "new" / "deeper", "--out")  # to be made: fine
    check_writable_file(tmp_path / "file", "--out")  # an existing file may be replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing made


FULL_DISK = """
import resource, signal, sys
import numpy as np
from segdino.errors import UserError
from segdino.picture_files import save_jpeg, save_png
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails or falls short
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))
picture = np.random.default_rng(0).integers(0, 256, (80, 80, 3), np.uint8)  # about 9 kB
for save, name in ((save_jpeg, "a.jpg"), (save_png, "a.png")):
    try:
        save(picture, f"{sys.argv[1]}/{name}")
    except UserError as exc:
        print(exc)
"""


def test_a_picture_that_does_not_fit_is_one_line_and_no_file(tmp_path) -> None:
    """Where the disk takes only part of a write (a file-size limit stands in for a nearly full
    disk), the picture is refused, never left truncated under its name: PIL's encoders,
    writing to a file's descriptor, ignored the short write and kept a broken JPEG."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"{tmp_path / name}: cannot write (File too large)"
                                        for name in ("a.jpg", "a.png")]
    assert list(tmp_path.iterdir()) == []
