"""The app's model: loaded once at start-up and kept for every request."""

from __future__ import annotations

from pathlib import Path

from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO


def load_predictor(
    source: str,
    backbone: str | None = None,
    device: str | None = None,
    allow_other_backbone: bool = False,
) -> Predictor:
    """A predictor for a checkpoint file (ours or the reference's), or for a model folder
    from `save_pretrained` / a Hub repo id (`OWNER/NAME[@REVISION]`)."""
    if Path(source).is_file():
        return Predictor.from_checkpoint(source, backbone, device,
                                         allow_other_backbone=allow_other_backbone)
    model = SegDINO.from_pretrained(source, backbone=backbone,
                                    allow_other_backbone=allow_other_backbone)
    return Predictor(model, device)
