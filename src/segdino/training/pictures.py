"""A run's pictures: `curves.png` (`segdino.training.curves`) and `val_overlays.jpg` (the
best epoch's first validation images, `validation.overlay_grid`), drawn after every epoch
(the overlays after every epoch that improves), so that they can be watched.

A cross-validation fold draws neither: its epochs are short, and K folds would spend more
time drawing than training. The cross-validation draws its folds' curves side by side
once, in `cv_curves.png`, and each fold's held-out report its worst overlays.
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
                 drawn: bool = True) -> None:
        self.run_dir, self.val_set, self.cfg, self.drawn = run_dir, val_set, cfg, drawn

    def epoch(self, history: list[dict], shown_if_improved: list[Shown]) -> None:
        """After an epoch: its record is the last of `history`; the validation images it
        showed if it is the best so far (else none)."""
        if not self.drawn:
            return
        if shown_if_improved:
            save_jpeg(overlay_grid(self.val_set, shown_if_improved, self.cfg),
                      self.run_dir / "val_overlays.jpg")
        save_curves(history, self.run_dir / "curves.png", title=self.run_dir.name)
