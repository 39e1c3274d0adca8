"""Atomic writes: the old file or the new one, never half of one, with the usual mode."""

from __future__ import annotations

import os
import stat

import pytest

from segdino.atomic import atomic_path, write_text


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
