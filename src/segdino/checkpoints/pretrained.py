"""Hugging Face model folders: what `SegDINO.save_pretrained` writes and `from_pretrained`
reads (`segdino publish` makes one of a training run).

A folder holds `model.safetensors` (the decoder in our checkpoint format, metadata in its
header), `config.json` (the same metadata, to read) and `README.md` (the model card). The
backbone is not copied: its weights are large and under Meta's licence. The metadata names
them by file name and SHA-256, and, when they came from the Hub, by repo and commit, from
where `from_pretrained` fetches them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from segdino.atomic import write_text
from segdino.backbone import DinoVisionTransformer
from segdino.checkpoints.build import load_model
from segdino.checkpoints.format import read_metadata, save_segdino
from segdino.errors import UserError
from segdino.hub import local_path

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO

WEIGHTS = "model.safetensors"
MODEL_FILES = ("config.json", WEIGHTS)


def write_pretrained(model: SegDINO, folder: Path) -> None:
    """The decoder and its metadata (`model.safetensors`), and the metadata as `config.json`."""
    save_segdino(model, folder / WEIGHTS, record_path=False)
    meta = read_metadata(folder / WEIGHTS)  # exactly what the checkpoint holds
    write_text(folder / "config.json", json.dumps(meta, indent=2) + "\n")


def load_pretrained(
    model_class: type[SegDINO],
    name_or_path: str | Path,
    backbone: str | Path | DinoVisionTransformer | None = None,
    revision: str | None = None,
    allow_other_backbone: bool = False,
) -> SegDINO:
    """A `model_class` from a folder `save_pretrained` wrote, or from a Hub repo id of one
    (through the Hub cache). `backbone` and `allow_other_backbone` as `load_segdino` takes
    them."""
    folder = local_path(name_or_path, MODEL_FILES, revision=revision)
    if not folder.is_dir():
        raise UserError(f"{name_or_path}: no such folder (expected a folder written by "
                        "save_pretrained, or a Hub repo id OWNER/NAME)")
    weights = folder / WEIGHTS
    if not weights.is_file() or read_metadata(weights) is None:
        raise UserError(f"{name_or_path}: not a segdino model (expected the {WEIGHTS} "
                        "that save_pretrained writes)")
    return load_model(model_class, weights, backbone, None, allow_other_backbone)
