"""The bad-input catalogue's harness: run a command as a user would, then check that it
failed the way the project promises (exit code 2, one line on stderr naming the file or
flag, no traceback) and that nothing outside the command's own outputs changed.

Each `test_catalogue_*.py` file holds the cases of one area as a parametrised table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from segdino.commands import main


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_segdino(*argv: str | Path) -> Outcome:
    """`segdino ARGV` in this process (fast: torch is imported once)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse exits by itself
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def run_segdino_process(*argv: str | Path, cwd: Path | None = None, timeout: float = 300,
                        interrupt_after: float | None = None) -> Outcome:
    """`python -m segdino ARGV` in a process of its own (for signals, locks, real exits).
    With `interrupt_after`, Ctrl-C (SIGINT) is sent that many seconds after the start, unless
    the process has ended by then."""
    with subprocess.Popen([sys.executable, "-m", "segdino", *map(str, argv)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        if interrupt_after is not None:
            try:
                proc.wait(interrupt_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return Outcome(proc.returncode, stdout, stderr)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` (path -> SHA-256 of its bytes), for "nothing else changed"."""
    seen: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def assert_refused(outcome: Outcome, names: str | Path | list[str | Path],
                   progress_ok: bool = False) -> str:
    """Exit code 2, no traceback, and one error line that names each of `names` (a file, a
    flag). With `progress_ok`, progress lines may come before the error; the error is still
    one line and the last one. Returns the error line."""
    assert outcome.code == 2, f"exit {outcome.code}, stderr:\n{outcome.stderr}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr_lines
    assert lines, "nothing on stderr"
    if not progress_ok:
        assert len(lines) == 1, f"expected one line on stderr, got:\n{outcome.stderr}"
    error = lines[-1]
    assert "error:" in error, error
    for name in names if isinstance(names, list) else [names]:
        assert str(name) in error, f"{name!r} not named in: {error}"
    return error
