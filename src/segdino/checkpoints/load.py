"""`load_segdino`: a whole trained model from our format or the reference's layout; and
`describe_sources`, the files a loaded model came from (for reports)."""

from __future__ import annotations

from pathlib import Path

from segdino.backbone import DinoVisionTransformer
from segdino.checkpoints.build import load_model
from segdino.checkpoints.format import describe_weights, read_metadata, sha256
from segdino.models.segdino import SegDINO


def load_segdino(
    path: str | Path,
    backbone: str | Path | DinoVisionTransformer | None = None,
    layers: list[int] | None = None,
    *,
    allow_other_backbone: bool = False,
) -> SegDINO:
    """A whole trained model from our format or the reference's layout.

    `backbone` says where the backbone weights come from (a file, a folder, a Hub repo id, or
    a model). For our format they must be the weights the checkpoint records (SHA-256; see
    `verify_backbone`). A reference checkpoint carries its own trained backbone, which is
    used as the reference's test uses it, whatever `backbone` says. `allow_other_backbone`
    uses `backbone` anyway, in both cases. `layers` applies to reference checkpoints only
    (ours record theirs); the default is the reference's for the backbone's architecture.
    """
    return load_model(SegDINO, path, backbone, layers, allow_other_backbone)


def describe_sources(model: SegDINO) -> dict:
    """Which files `model` came from, each by path and SHA-256: `checkpoint` (what
    load_segdino read) and `backbone` (the weights file; for a reference checkpoint's own
    `backbone.*` weights, the checkpoint itself). None for what was built in memory."""
    file = model.checkpoint_path
    checkpoint = None if file is None else {"path": str(file.absolute()), "sha256": sha256(file)}
    if model.backbone.weights_path is not None:
        backbone = describe_weights(model.backbone.weights_path)
    elif checkpoint is not None and read_metadata(file) is None:
        backbone = {**checkpoint, "file": file.name, "weights": "the checkpoint's own backbone.*"}
    else:
        backbone = None
    return {"checkpoint": checkpoint, "backbone": backbone}
