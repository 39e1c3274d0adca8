"""A model from a checkpoint file, ours or the reference's, given the model class; and which
backbone weights it gets (found where the checkpoint says, or given and checked).

The model class is a parameter, so that `SegDINO.from_pretrained` (its Hub mixin) builds
through `cls` and this module never imports the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segdino.backbone import DinoVisionTransformer, load_backbone
from segdino.backbone.formats import StateDict, read_tensors
from segdino.checkpoints.format import read_metadata, sha256, weights_file
from segdino.checkpoints.reference import REFERENCE_PREFIXES, head_from_reference, reference_decoder
from segdino.errors import UserError
from segdino.hub import WEIGHT_FILES, local_path
from segdino.models.decoders import DEFAULT
from segdino.models.preprocessing import Preprocessing

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO


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
                        "was trained with; pass the right file with --backbone (segdino test: "
                        "--dino-ckpt)")
    raise UserError(f"{checkpoint}: needs the backbone weights {info['file']} "
                    f"(sha256 {info['sha256'][:12]}...); put the file beside the checkpoint, "
                    "set SEGDINO_WEIGHTS to its folder, or pass it with --backbone (segdino "
                    "test: --dino-ckpt)")


def verify_backbone(
    recorded_sha: str,
    source: str | Path,
    allow_other_backbone: bool = False,
    checkpoint: str | Path | None = None,
) -> str:
    """Check backbone weights given explicitly (a file, a folder or a Hub repo id) against
    the SHA-256 a checkpoint records; return the weights file's SHA-256.

    A decoder only fits the features it was trained on: other weights (another variant,
    another download, a fine-tuned copy) give wrong masks without any error. So a mismatch
    is a UserError naming `source`, unless `allow_other_backbone`, which uses them on
    purpose (and says so)."""
    actual = sha256(weights_file(source))
    if actual == recorded_sha:
        return actual
    trained = f"the backbone {checkpoint} was trained with" if checkpoint else \
        "the backbone the checkpoint was trained with"
    if not allow_other_backbone:
        raise UserError(f"{source}: not {trained} (SHA-256 {actual[:12]}..., recorded "
                        f"{recorded_sha[:12]}...); pass those weights, or add "
                        "--allow-other-backbone to use these on purpose")
    print(f"note: {source}: not {trained}; used anyway (--allow-other-backbone)")
    return actual


def load_model(
    model_class: type[SegDINO],
    path: str | Path,
    backbone: str | Path | DinoVisionTransformer | None = None,
    layers: list[int] | None = None,
    allow_other_backbone: bool = False,
) -> SegDINO:
    """`load_segdino` for `model_class` (see there): a `model_class(backbone, num_classes,
    layers)` with the checkpoint's decoder and preprocessing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file (expected a .safetensors "
                        "of segdino or the reference's .pth)")
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    meta = read_metadata(path)
    if meta is None:
        model = _load_reference(model_class, path, backbone, layers, allow_other_backbone)
    else:
        model = _load_ours(model_class, path, meta, backbone, allow_other_backbone)
    model.checkpoint_path = path
    return model


def _load_ours(
    model_class: type[SegDINO], path: Path, meta: dict,
    backbone: str | Path | DinoVisionTransformer | None, allow_other_backbone: bool,
) -> SegDINO:
    recorded = meta["backbone"]["sha256"]
    if isinstance(backbone, DinoVisionTransformer):
        if backbone.weights_path is not None:
            verify_backbone(recorded, backbone.weights_path, allow_other_backbone, path)
        elif not allow_other_backbone:
            raise UserError(f"{path}: the backbone given was not loaded from a weights file, "
                            "so it cannot be checked against the one this checkpoint was "
                            "trained with (pass allow_other_backbone=True to use it anyway)")
        net = backbone
    elif backbone is not None:
        verify_backbone(recorded, backbone, allow_other_backbone, path)
        net = load_backbone(backbone)
    else:
        net = load_backbone(find_backbone_file(meta, path))
    trained, found = meta["backbone"]["config"], net.config.to_dict()
    if found != trained:
        differ = ", ".join(f"{k} {trained.get(k)} not {found.get(k)}"
                           for k in sorted(trained.keys() | found.keys())
                           if trained.get(k) != found.get(k))
        raise UserError(f"{path}: was trained on another backbone architecture ({differ})")
    model = model_class(net, meta["num_classes"], meta["layers"],
                        meta.get("decoder", DEFAULT), **meta.get("decoder_options", {}))
    _load_head(model, read_tensors(path), path)
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
    model_class: type[SegDINO], path: Path, backbone: str | Path | DinoVisionTransformer | None,
    layers: list[int] | None, allow_other_backbone: bool,
) -> SegDINO:
    sd = read_tensors(path)
    parts: dict[str, StateDict] = {"backbone": {}, **{p: {} for p in REFERENCE_PREFIXES}}
    for key, value in sd.items():
        prefix, _, rest = key.partition(".")
        if prefix not in parts and "cls_token" in sd:
            raise UserError(f"{path}: holds DINOv3 backbone weights, not a trained SegDINO "
                            "model (give those with --dino-ckpt or --backbone)")
        if prefix not in parts:
            raise UserError(f"{path}: unexpected key {key!r} (a SegDINO checkpoint holds "
                            "backbone.* and head.* or decoder.* keys)")
        parts[prefix][rest] = value
    found = [p for p in REFERENCE_PREFIXES if parts[p]]
    if len(found) != 1:
        raise UserError(f"{path}: " + ("both head.* and decoder.* keys" if found else
                                       "no head.* or decoder.* keys: not a SegDINO checkpoint"))
    own = load_backbone(parts["backbone"], name=f"{path} (its backbone.* weights)"
                        ) if parts["backbone"] else None
    given = backbone if backbone is None or isinstance(backbone, DinoVisionTransformer) \
        else load_backbone(backbone)
    net = _reference_backbone(path, own, given, allow_other_backbone)
    head = head_from_reference(parts[found[0]])
    decoder, options, classes = reference_decoder(found[0], head)
    model = model_class(net, classes, layers, decoder, **options)
    _load_head(model, head, path)
    return model


def _reference_backbone(
    path: Path, own: DinoVisionTransformer | None, given: DinoVisionTransformer | None,
    allow_other_backbone: bool,
) -> DinoVisionTransformer:
    """The backbone of a reference checkpoint: its own `backbone.*` weights, or those given.

    The reference's training updates the backbone (it never freezes it) and its test loads
    the checkpoint's `backbone.*` weights over the backbone `--dino_ckpt` built, so those are
    the model's, and they win over the given ones (with a note when they differ) unless
    `allow_other_backbone`. Given weights equal to its own are taken as they are, so that
    the model keeps the name of the weights file (for save_pretrained and test reports)."""
    if own is None or given is None:
        if own is None and given is None:
            raise UserError(f"{path}: holds no backbone.* weights; pass the backbone weights "
                            "(--dino-ckpt or --backbone)")
        return given if own is None else own
    if _same_weights(own, given):
        return given
    label = given.weights_path or "the backbone given"
    if allow_other_backbone:
        print(f"note: {path}: using {label} instead of its own backbone.* weights "
              "(--allow-other-backbone)")
        return given
    print(f"note: {path} carries its own trained backbone weights: using those, not {label} "
          f"(as the reference's test does; --allow-other-backbone uses {label})")
    return own


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    # a backbone given to the API may already sit on a GPU; the checkpoint's is on the CPU
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)
