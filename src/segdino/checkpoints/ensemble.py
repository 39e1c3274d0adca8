"""Ensembles of trained checkpoints: compatible models of our format combined into one model
that runs the backbone once and every member's decoder (`segdino ensemble`, and the models
of a cross-validation run).

Members must share what the backbone and the data see: the backbone weights (SHA-256) and
architecture, the decoded layers, the classes and the preprocessing (input size,
normalisation, resize, threshold, temperature, class map). Their decoders may differ. A
member that is itself an ensemble adds its members.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segdino.backbone import DinoVisionTransformer
from segdino.backbone.formats import read_tensors
from segdino.checkpoints.format import read_metadata, save_segdino, sha256
from segdino.checkpoints.load import load_segdino
from segdino.errors import UserError
from segdino.models.decoders import ENSEMBLE
from segdino.models.segdino import SegDINO

# metadata fields that must agree, with how an error names them
SHARED = {("backbone", "sha256"): "backbone weights (SHA-256)",
          ("backbone", "config"): "backbone architecture", ("layers",): "decoded layers",
          ("num_classes",): "number of classes", ("preprocessing",): "preprocessing"}


def _field(meta: dict, keys: tuple[str, ...]) -> object:
    for key in keys:
        meta = meta[key]
    return meta


def _difference(first: dict, other: dict) -> str | None:
    """What keeps two checkpoints' metadata from one ensemble, in words; None if nothing."""
    for keys, name in SHARED.items():
        a, b = _field(first, keys), _field(other, keys)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            what = [f"{k} {b.get(k)!r} not {a.get(k)!r}"
                    for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        elif keys[-1] == "sha256":
            what = [f"{b[:12]}... not {a[:12]}..."]
        else:
            what = [f"{b} not {a}"]
        return f"{name} differ ({', '.join(what)})"
    return None


def member_metadata(paths: Sequence[str | Path]) -> list[dict]:
    """Each checkpoint's metadata, checked to be ours and compatible with the first's."""
    if not paths:
        raise UserError("no checkpoints to combine (expected one or more .safetensors)")
    metas = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint file")
        meta = read_metadata(path)
        if meta is None:
            raise UserError(f"{path}: not a segdino .safetensors checkpoint (a reference .pth "
                            "carries its own trained backbone, so it cannot share one)")
        if metas and (difference := _difference(metas[0], meta)):
            raise UserError(f"{path}: cannot join an ensemble with {paths[0]}: {difference}")
        metas.append(meta)
    return metas


def _members(meta: dict) -> list[dict]:
    if meta["decoder"] == ENSEMBLE:
        return meta["decoder_options"]["members"]
    return [{"decoder": meta["decoder"], "decoder_options": meta["decoder_options"]}]


def combine(
    paths: Sequence[str | Path],
    backbone: str | Path | DinoVisionTransformer | None = None,
    *,
    allow_other_backbone: bool = False,
) -> SegDINO:
    """One ensemble model of the checkpoints at `paths` (at least one), their members in
    order; the backbone found or checked as `load_segdino` does for the first."""
    metas = member_metadata(paths)
    first = load_segdino(paths[0], backbone, allow_other_backbone=allow_other_backbone)
    members, head = [], {}
    for path, meta in zip(paths, metas, strict=True):
        tensors = read_tensors(Path(path))
        if meta["decoder"] != ENSEMBLE:
            tensors = {f"0.{k}": v for k, v in tensors.items()}
        for key, value in tensors.items():
            index, _, rest = key.partition(".")
            head[f"{int(index) + len(members)}.{rest}"] = value
        members += _members(meta)
    model = SegDINO(first.backbone, first.num_classes, first.layers, ENSEMBLE, members=members)
    model.head.load_state_dict(head)
    model.preprocessing = first.preprocessing
    return model


def save_ensemble(model: SegDINO, path: str | Path, sources: Sequence[str | Path]) -> None:
    """Write an ensemble in our format, recording the checkpoints it was made of (path and
    SHA-256)."""
    made_of = [{"path": str(Path(p).absolute()), "sha256": sha256(Path(p))} for p in sources]
    save_segdino(model, path, extra={"ensemble_of": made_of})
