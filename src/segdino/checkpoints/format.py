"""Our checkpoint format: one safetensors file holding the decoder's tensors and, in its
header, JSON metadata: architecture, layers, classes, preprocessing, and the backbone
checkpoint's file name and SHA-256 (and Hub repo and commit, for weights from the Hugging Face
Hub). The backbone weights stay in their own file (large, and under Meta's licence).

These functions read and write state dicts and metadata; they never build a model (that is
`segdino.checkpoints.build`), so the model's Hub mixin can use them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open
from safetensors.torch import save_file

from segdino.atomic import atomic_path
from segdino.backbone.variants import variant_name
from segdino.errors import UserError, first_line
from segdino.hub import WEIGHT_FILES, cache_origin, local_path
from segdino.models.decoders import DEFAULT, decoder_options
from segdino.models.decoders.v1 import PROJECTION_CHANNELS
from segdino.models.preprocessing import Preprocessing

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO

FORMAT = "segdino"
VERSION = 1


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process for an unchanged file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def weights_file(source: str | Path, local_files_only: bool = False) -> Path:
    """The one file that holds backbone weights given as a file, a folder (its
    model.safetensors) or a Hub repo id (through the Hub cache)."""
    path = local_path(source, WEIGHT_FILES, local_files_only=local_files_only)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{source}: no backbone weights file there")
    return file


def describe_weights(source: str | Path) -> dict:
    """How our format records backbone weights: the file's name, path and SHA-256, and its
    Hub repo id and commit when the file is in the Hub cache (so it can be fetched again)."""
    file = weights_file(source, local_files_only=True)  # loaded, hence cached
    # absolute(), not resolve(): a Hub cache file links to a nameless blob
    info = {"file": file.name, "path": str(file.absolute()), "sha256": sha256(file)}
    if origin := cache_origin(file):
        info["hub_id"], info["hub_revision"] = origin
    return info


def metadata(
    model: SegDINO, backbone_file: str | Path | None = None, extra: dict | None = None
) -> dict:
    """What our format records about `model`. `backbone_file` names the weights the backbone
    came from (a file, folder or Hub repo id); by default those `load_backbone` read."""
    source = model.backbone.weights_path if backbone_file is None else backbone_file
    if source is None:
        raise UserError("the backbone was not loaded from a weights file, folder or Hub repo, "
                        "so a checkpoint cannot name its weights: load it with load_backbone("
                        "FILE, FOLDER or HUB_ID), or name the file with backbone_file=")
    return {
        "format": FORMAT,
        "version": VERSION,
        "backbone": {
            "arch": variant_name(model.backbone.config),
            "config": model.backbone.config.to_dict(),
            **describe_weights(source),
        },
        "layers": list(model.layers),
        "num_classes": model.num_classes,
        "decoder": model.decoder,
        "decoder_options": model.decoder_options,
        "preprocessing": asdict(model.preprocessing),
        **(extra or {}),
    }


def save_segdino(
    model: SegDINO, path: str | Path, backbone_file: str | Path | None = None,
    extra: dict | None = None, record_path: bool = True,
) -> None:
    """Write `model` in the project's format (atomically). The backbone's weights (by default
    those it was loaded from) are recorded by name, SHA-256 and Hub id, so they can be found
    and checked when the model is loaded; and by their local path unless `record_path` is
    False (for a model that is shared: the path says nothing elsewhere and may say too much)."""
    meta = metadata(model, backbone_file, extra)
    if not record_path:
        del meta["backbone"]["path"]
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={FORMAT: json.dumps(meta)})


def read_metadata(path: str | Path) -> dict | None:
    """Our format's metadata, checked, or None when `path` is not a checkpoint of ours."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(path, framework="pt") as f:
            text = (f.metadata() or {}).get(FORMAT)
    except Exception as exc:  # safetensors raises several types for a bad header
        raise UserError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    if text is None:
        return None
    if not text.strip():
        raise UserError(f"{path}: its {FORMAT} metadata is empty (a damaged checkpoint)")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path}: its {FORMAT} metadata is not valid JSON ({exc}): a damaged "
                        "checkpoint") from None
    problems = _metadata_problems(meta)
    if problems:
        raise UserError(f"{path}: damaged {FORMAT} metadata: {'; '.join(problems)}")
    return meta


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _metadata_problems(meta: object) -> list[str]:
    """What keeps `meta` from describing a model: every field load_segdino reads, checked,
    so that a damaged or hand-edited header is one error rather than a KeyError."""
    if not isinstance(meta, dict):
        return [f"expected a JSON object, found {type(meta).__name__}"]
    if meta.get("format") != FORMAT:
        return [f"format {meta.get('format')!r}, expected {FORMAT!r}"]
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        return [f"version {version!r}, expected a positive integer"]
    if version > VERSION:
        return [f"format version {version} is newer than this segdino reads ({VERSION}): "
                "upgrade segdino"]
    problems = []
    backbone = meta.get("backbone")
    if not isinstance(backbone, dict):
        problems.append("no backbone description")
    else:
        if not isinstance(backbone.get("file"), str) or not backbone["file"]:
            problems.append("no backbone file name")
        if not isinstance(backbone.get("sha256"), str) or not _SHA256.match(backbone["sha256"]):
            problems.append(f"backbone sha256 {backbone.get('sha256')!r} is not a SHA-256")
        if not isinstance(backbone.get("config"), dict):
            problems.append("no backbone config")
    layers = meta.get("layers")
    if (not isinstance(layers, list) or len(layers) != len(PROJECTION_CHANNELS)
            or not all(isinstance(n, int) and n >= 0 for n in layers)):
        problems.append(f"layers {layers!r}, expected {len(PROJECTION_CHANNELS)} block indices")
    classes = meta.get("num_classes")
    if not isinstance(classes, int) or classes < 1:
        problems.append(f"num_classes {classes!r}, expected 1 or more")
    try:
        # checkpoints from before the decoder field hold the paper's decoder
        decoder_options(meta.get("decoder", DEFAULT), meta.get("decoder_options"))
    except (TypeError, ValueError) as exc:
        problems.append(f"decoder unreadable ({exc})")
    try:
        Preprocessing.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"preprocessing unreadable ({type(exc).__name__}: {exc})")
    return problems
