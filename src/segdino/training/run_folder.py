"""A run folder: what a training run writes there besides its checkpoints and metric records
(`training/metric_log.py`): `state.pt` to resume from, `provenance.json` (what ran each
invocation); the lock that keeps a second run out, and the checks before a run may use a
folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segdino.atomic import atomic_path, write_text
from segdino.backbone.formats import torch_load
from segdino.checkpoints.format import describe_weights, sha256
from segdino.errors import UserError
from segdino.provenance import environment

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO
    from segdino.training.config import TrainConfig

LOCK_FILE = "train.lock"
RUN_MARKERS = ("config.json", "state.pt")  # a folder holding one is a run's
PROVENANCE = "provenance.json"
CHECKPOINTS = ("best.safetensors", "last.safetensors")


def save_state(path: Path, model: SegDINO, optimizer: torch.optim.Optimizer, epoch: int,
               history: list[dict], best: float) -> None:
    state = {"head": model.head.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "history": json.dumps(history), "best": best}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _invocations(run_dir: Path) -> list[dict]:
    path = run_dir / PROVENANCE
    return json.loads(path.read_text())["invocations"] if path.is_file() else []


def _write_invocations(run_dir: Path, invocations: list[dict]) -> None:
    write_text(run_dir / PROVENANCE, json.dumps({"invocations": invocations}, indent=2) + "\n")


def record_invocation(run_dir: Path, cfg: TrainConfig, device: torch.device,
                      epochs_done: int) -> None:
    """Add this invocation of `segdino train` to RUN/provenance.json, before its first epoch
    (so an interrupted one is recorded too): a run resumed twice lists three."""
    entry = {**environment(device, cfg.precision), "backbone": describe_weights(cfg.dino_ckpt),
             "epochs_done_before": epochs_done, "epochs": cfg.epochs}
    _write_invocations(run_dir, [*_invocations(run_dir), entry])


def record_checkpoints(run_dir: Path) -> None:
    """Add the checkpoints this invocation ended with (absolute path, SHA-256) to its entry."""
    invocations = _invocations(run_dir)
    invocations[-1]["checkpoints"] = {
        name: {"path": str((run_dir / name).absolute()), "sha256": sha256(run_dir / name)}
        for name in CHECKPOINTS if (run_dir / name).is_file()}
    _write_invocations(run_dir, invocations)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/train.lock meanwhile, so that a second `segdino train` into the same folder
    is refused rather than both writing its checkpoints. The OS drops the lock when the
    process ends, however it ends: a killed run never leaves its folder locked."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{run_dir}: another segdino train is running in this run folder (it "
                        f"holds {LOCK_FILE}); wait for it to end, or choose another --name"
                        ) from None
    try:
        yield
    finally:
        os.close(fd)


def check_not_foreign(run_dir: Path) -> None:
    """Refuse a run folder that holds files, but no run (checked before it is locked, which
    would add a file to it)."""
    if (run_dir.is_dir() and not any((run_dir / name).exists() for name in RUN_MARKERS)
            and any(p.name != LOCK_FILE for p in run_dir.iterdir())):
        raise UserError(f"{run_dir}: folder exists, is not empty and holds no run (choose "
                        "another --name)")


def read_state(run_dir: Path, resuming: bool, announce: bool) -> dict | None:
    """The state to continue from, or None to start afresh: in a new folder, or in one whose
    run was interrupted before its first state.pt (said when `announce`)."""
    if (run_dir / "state.pt").is_file():
        if not resuming:
            raise UserError(f"{run_dir}: run folder exists and is not empty (choose another "
                            f"--name, or continue it with --resume {run_dir})")
        return torch_load(run_dir / "state.pt")
    if (run_dir / "config.json").is_file() and announce:
        print(f"restarting {run_dir}: its run was interrupted before its first epoch ended "
              "(no state.pt)", flush=True)
    return None
