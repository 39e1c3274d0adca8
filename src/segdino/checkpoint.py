"""Whole-model checkpoints: the project's format and the reference's layout.

Ours is one safetensors file holding the decoder's tensors and, in its header, JSON metadata:
architecture, layers, classes, preprocessing, and the backbone checkpoint's file name and
SHA-256 (and Hub repo and commit, for weights from the Hugging Face Hub). The backbone weights
stay in their own file (large, and under Meta's licence) and are found beside the checkpoint,
at the recorded path, on the Hub, or where the caller says.

The reference's layout (users' `tn3k.pth`) is one PyTorch state dict with `backbone.*` and
`head.*` keys, bare or as `{"state_dict": ...}`; both directions of conversion exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from segdino.atomic import atomic_path
from segdino.backbone import DinoVisionTransformer, load_backbone
from segdino.backbone.formats import StateDict, read_tensors
from segdino.backbone.variants import variant_name
from segdino.errors import UserError
from segdino.hub import WEIGHT_FILES, cache_origin, local_path
from segdino.model import Preprocessing, SegDINO

FORMAT = "segdino"
VERSION = 1

# our decoder key -> the reference's head key (without the `head.` prefix)
_TO_REFERENCE = [
    (r"^projections\.(\d)\.", r"projects.\1."),
    (r"^refinements\.(\d)\.", lambda m: f"scratch.layer{int(m.group(1)) + 1}_rn."),
    (r"^classifier\.", "scratch.output_conv."),
]
_FROM_REFERENCE = [
    (r"^projects\.(\d)\.", r"projections.\1."),
    (r"^scratch\.layer(\d)_rn\.", lambda m: f"refinements.{int(m.group(1)) - 1}."),
    (r"^scratch\.output_conv\.", "classifier."),
]


def _rename(sd: Mapping[str, torch.Tensor], rules: list) -> StateDict:
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key, count = re.subn(pattern, repl, key)
            if count:
                break
        out[key] = value
    return out


def head_to_reference(head: Mapping[str, torch.Tensor]) -> StateDict:
    """Our decoder's state dict in the reference's head key names."""
    return _rename(head, _TO_REFERENCE)


def head_from_reference(head: Mapping[str, torch.Tensor]) -> StateDict:
    """The reference's head state dict (keys without `head.`) in our decoder's key names."""
    return _rename(head, _FROM_REFERENCE)


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


def describe_weights(source: str | Path) -> dict:
    """How our format records backbone weights: the file's name, path and SHA-256, and its
    Hub repo id and commit when the file is in the Hub cache (so it can be fetched again)."""
    path = local_path(source, WEIGHT_FILES, local_files_only=True)  # loaded, hence cached
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{source}: no backbone weights file there")
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


def save_reference(model: SegDINO, path: str | Path) -> None:
    """Write `model` in the reference's layout: a bare state dict, `backbone.*` and `head.*`."""
    sd = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    sd.update({f"head.{k}": v for k, v in head_to_reference(model.head.state_dict()).items()})
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)


def read_metadata(path: str | Path) -> dict | None:
    """Our format's metadata, or None when `path` is not a checkpoint of ours."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = (f.metadata() or {}).get(FORMAT)
    except Exception as exc:  # safetensors raises several types for a bad header
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    return json.loads(meta) if meta else None


def _backbone_candidates(info: dict, checkpoint: Path) -> Iterator[Path]:
    """Where the recorded backbone file may be, in order; the Hub is asked last, and only
    when nothing before it matched."""
    if "path" in info:
        yield Path(info["path"])
    folders = [checkpoint.parent, checkpoint.parent.parent, Path.cwd()]
    if os.environ.get("SEGDINO_WEIGHTS"):
        folders.insert(0, Path(os.environ["SEGDINO_WEIGHTS"]))
    yield from (folder / info["file"] for folder in folders)
    if info.get("hub_id"):
        try:
            yield local_path(f"{info['hub_id']}@{info['hub_revision']}", WEIGHT_FILES
                             ) / info["file"]
        except UserError as exc:
            raise UserError(f"{exc}; or pass the backbone weights with --backbone") from None


def find_backbone_file(meta: dict, checkpoint: Path) -> Path:
    """The backbone weights a checkpoint of ours names: at the recorded path, else by file
    name beside the checkpoint, in its parent folder, in `$SEGDINO_WEIGHTS`, or here, else
    from the Hub repo and commit it records (through the Hub cache)."""
    info = meta["backbone"]
    differs = None
    for candidate in _backbone_candidates(info, checkpoint):
        # a folder from save_pretrained holds the decoder as model.safetensors too
        if candidate.is_file() and candidate.resolve() != checkpoint.resolve():
            if sha256(candidate) == info["sha256"]:
                return candidate
            differs = differs or candidate
    if differs is not None:
        raise UserError(f"{differs}: SHA-256 differs from the backbone {checkpoint} "
                        "was trained with; pass the right file with --backbone")
    raise UserError(f"{checkpoint}: needs the backbone weights {info['file']} "
                    f"(sha256 {info['sha256'][:12]}...); put the file beside the checkpoint, "
                    "set SEGDINO_WEIGHTS to its folder, or pass it with --backbone")


def load_segdino(
    path: str | Path,
    backbone: str | Path | DinoVisionTransformer | None = None,
    layers: list[int] | None = None,
) -> SegDINO:
    """A whole trained model from our format or the reference's layout.

    `backbone` overrides where the backbone weights come from (a file, a folder, or a model).
    `layers` applies to reference checkpoints only (ours record theirs); the default is the
    reference's for the backbone's architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    meta = read_metadata(path)
    if meta is None:
        return _load_reference(path, backbone, layers)
    if not isinstance(backbone, DinoVisionTransformer):
        backbone = load_backbone(backbone or find_backbone_file(meta, path))
    if backbone.config.to_dict() != meta["backbone"]["config"]:
        raise UserError(f"{path}: was trained on another backbone ({meta['backbone']['arch']})")
    model = SegDINO(backbone, meta["num_classes"], meta["layers"])
    head = read_tensors(path)
    _load_head(model, head, path)
    model.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    return model


def _load_head(model: SegDINO, head: StateDict, where: Path) -> None:
    expected = model.head.state_dict()
    problems = sorted(set(expected) ^ set(head)) + [
        f"{k} {tuple(head[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items() if k in head and head[k].shape != v.shape]
    if problems:
        raise UserError(f"{where}: decoder does not match: {', '.join(problems[:6])}")
    model.head.load_state_dict(head)


def _load_reference(
    path: Path, backbone: str | Path | DinoVisionTransformer | None, layers: list[int] | None
) -> SegDINO:
    sd = read_tensors(path)
    parts: dict[str, StateDict] = {"backbone": {}, "head": {}}
    for key, value in sd.items():
        prefix, _, rest = key.partition(".")
        if prefix not in parts:
            raise UserError(f"{path}: unexpected key {key!r} (a SegDINO checkpoint holds "
                            "backbone.* and head.* keys)")
        parts[prefix][rest] = value
    if not parts["head"]:
        raise UserError(f"{path}: no head.* keys: not a SegDINO checkpoint")
    if isinstance(backbone, DinoVisionTransformer):
        net = backbone
    else:
        net = load_backbone(backbone or parts["backbone"])
    head = head_from_reference(parts["head"])
    classes = head.get("classifier.weight", torch.empty(1)).shape[0]
    model = SegDINO(net, classes, layers)
    _load_head(model, head, path)
    return model
