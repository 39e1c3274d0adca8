"""A run's metric records, written after each epoch: `metrics.csv` (a row per epoch),
`steps.csv` (each step's epoch, step, loss and learning rate), with `--log tensorboard` the
same numbers as TensorBoard scalars in RUN/tensorboard/, and the line printed per epoch.

TensorBoard's x axis is the run's step: step k of epoch e is (e - 1) * steps_per_epoch + k.
`step/loss` and `step/lr` are logged at every step, the epoch's `metrics.csv` columns as
`epoch/<column>` at its last step. A resumed run opens a new event file whose `purge_step`
is its first step, so TensorBoard drops anything an interrupted invocation logged past the
run's last `state.pt`, as `steps.csv` drops those rows: a resumed run appends, never repeats.

Weights & Biases and MLflow are not offered: neither reads TensorBoard's event files
without its own client, account or server, so neither comes for free through this interface.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from segdino.atomic import write_text
from segdino.errors import MissingExtra
from segdino.progress import format_interval

LOGS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"


def write_metrics(history: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def append_steps(path: Path, steps: list[dict]) -> None:
    """Add an epoch's steps (epoch, step, loss, lr) to RUN/steps.csv. Rows of that epoch or
    later already there are dropped first: an interrupted run that wrote them before its
    state.pt reruns that epoch when resumed."""
    if not steps:
        return
    kept = []
    if path.is_file():
        with path.open(newline="") as f:
            kept = [row for row in csv.DictReader(f) if int(row["epoch"]) < steps[0]["epoch"]]
    write_metrics(kept + steps, path)


def summary_writer_class() -> type:
    """TensorBoard's event writer (PyTorch's, on the `tensorboard` package), or a UserError
    that names the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise MissingExtra("--log tensorboard needs TensorBoard: "
                           "pip install segdino[tensorboard]") from None
    return SummaryWriter


class MetricLog:
    """The records of one invocation of a run (rank 0's; the others' `log` is None and they
    call only `close()`): `epoch()` and `report()` after each epoch, `close()` at the end.
    `epochs_done` is how many epochs the run had finished before this invocation."""

    def __init__(self, run_dir: Path, log: str | None, steps_per_epoch: int,
                 epochs_done: int = 0) -> None:
        self.run_dir, self.steps_per_epoch = run_dir, steps_per_epoch
        self.writer: Any = None
        if log == "tensorboard":
            first = epochs_done * steps_per_epoch + 1
            self.writer = summary_writer_class()(str(run_dir / TENSORBOARD_DIR),
                                                 purge_step=first if epochs_done else None)

    def epoch(self, history: list[dict], steps: list[dict]) -> None:
        """Record the epoch whose row ends `history`, and its `steps`."""
        write_metrics(history, self.run_dir / "metrics.csv")
        append_steps(self.run_dir / "steps.csv", steps)
        if self.writer is not None:
            self.tensorboard(history[-1], steps)

    @staticmethod
    def report(row: dict, epochs: int, best: bool, eta: float) -> None:
        """Print an epoch's line, once everything of it is saved (`best`: its validation
        Dice is the best so far; `eta`: the run's seconds left)."""
        scores = "".join(f"  {label} {row[key]:.4f}" for key, label in (
            ("val_loss", "val loss"), ("val_dice", "val Dice"), ("val_iou", "val IoU"))
            if key in row)
        print(f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}{scores}  "
              f"{row['seconds']:.1f}s" + ("  *best" if best else "")
              + (f"  eta {format_interval(eta)}" if eta else ""), flush=True)

    def tensorboard(self, last: dict, steps: list[dict]) -> None:
        for row in steps:
            at = (row["epoch"] - 1) * self.steps_per_epoch + row["step"]
            self.writer.add_scalar("step/loss", row["loss"], at)
            self.writer.add_scalar("step/lr", row["lr"], at)
        for key, value in last.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value,
                                       last["epoch"] * self.steps_per_epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
