"""A run's pictures: `curves.png` (`segdino.training.curves`) and `val_overlays.jpg` (the
best epoch's first validation images, `validation.overlay_grid`).

A run draws them after every epoch (the overlays after every epoch that improves), so that
they can be watched. A cross-validation fold draws them once, when it ends: its epochs are
short, and K folds would otherwise spend more time drawing than training.
"""

from __future__ import annotations

from pathlib import Path

from segdino.data.dataset import SegmentationDataset
from segdino.picture_files import save_jpeg
from segdino.training.config import TrainConfig
from segdino.training.curves import save_curves
from segdino.training.validation import Shown, overlay_grid


class RunPictures:
    def __init__(self, run_dir: Path, val_set: SegmentationDataset, cfg: TrainConfig,
                 every_epoch: bool = True) -> None:
        self.run_dir, self.val_set, self.cfg = run_dir, val_set, cfg
        self.every_epoch = every_epoch
        self.best: list[Shown] = []  # the best epoch's, not drawn yet

    def epoch(self, history: list[dict], shown_if_improved: list[Shown]) -> None:
        """After an epoch: its record is the last of `history`; the validation images it
        showed if it is the best so far (else none)."""
        self.best = shown_if_improved or self.best
        if self.every_epoch:
            self._draw(history)

    def close(self, history: list[dict]) -> None:
        """At the run's end: a fold draws its pictures."""
        if not self.every_epoch:
            self._draw(history)

    def _draw(self, history: list[dict]) -> None:
        if self.best:
            save_jpeg(overlay_grid(self.val_set, self.best, self.cfg),
                     self.run_dir / "val_overlays.jpg")
            self.best = []
        if history:
            save_curves(history, self.run_dir / "curves.png", title=self.run_dir.name)
