"""What produced a run folder or a report, so that it can be traced and rerun: the versions
of segdino, torch and Python, the git commit when segdino runs from a checkout, the device
and precision, the command line and the date. The files a run used (each by absolute path
and SHA-256) are added by the caller, which knows them: `segdino test`'s `summary.json`,
`segdino train`'s `provenance.json`."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from segdino.version import __version__

PACKAGE = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    """A git command's output in the package's folder; None when git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict:
    """`git_commit` (and `git_dirty`: whether the package's files differ from it) when this
    package is a checkout's own files; nothing for an installed copy, even one that lies
    inside some other repository (a virtual environment in a project folder)."""
    if _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return {}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {}
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"git_commit": commit, "git_dirty": bool(changes)}


def environment(device: torch.device | str, precision: str) -> dict:
    """The versions, where and how it ran, the command line and the date (UTC)."""
    return {
        "segdino": __version__, "torch": torch.__version__,
        "python": platform.python_version(), **git_state(),
        "device": str(device), "precision": precision,
        "command": shlex.join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
