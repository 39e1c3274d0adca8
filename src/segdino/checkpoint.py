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

import argparse
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
from segdino.errors import UserError, first_line
from segdino.hub import WEIGHT_FILES, cache_origin, local_path
from segdino.model import PROJECTION_CHANNELS, Preprocessing, SegDINO

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
        Preprocessing.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"preprocessing unreadable ({type(exc).__name__}: {exc})")
    return problems


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
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file (expected a .safetensors "
                        "of segdino or the reference's .pth)")
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    meta = read_metadata(path)
    if meta is None:
        model = _load_reference(path, backbone, layers, allow_other_backbone)
    else:
        model = _load_ours(path, meta, backbone, allow_other_backbone)
    model.checkpoint_path = path
    return model


def _load_ours(
    path: Path, meta: dict, backbone: str | Path | DinoVisionTransformer | None,
    allow_other_backbone: bool,
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
    model = SegDINO(net, meta["num_classes"], meta["layers"])
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
    path: Path, backbone: str | Path | DinoVisionTransformer | None, layers: list[int] | None,
    allow_other_backbone: bool,
) -> SegDINO:
    sd = read_tensors(path)
    parts: dict[str, StateDict] = {"backbone": {}, "head": {}}
    for key, value in sd.items():
        prefix, _, rest = key.partition(".")
        if prefix not in parts and "cls_token" in sd:
            raise UserError(f"{path}: holds DINOv3 backbone weights, not a trained SegDINO "
                            "model (give those with --dino-ckpt or --backbone)")
        if prefix not in parts:
            raise UserError(f"{path}: unexpected key {key!r} (a SegDINO checkpoint holds "
                            "backbone.* and head.* keys)")
        parts[prefix][rest] = value
    if not parts["head"]:
        raise UserError(f"{path}: no head.* keys: not a SegDINO checkpoint")
    own = load_backbone(parts["backbone"], name=f"{path} (its backbone.* weights)"
                        ) if parts["backbone"] else None
    given = backbone if backbone is None or isinstance(backbone, DinoVisionTransformer) \
        else load_backbone(backbone)
    net = _reference_backbone(path, own, given, allow_other_backbone)
    head = head_from_reference(parts["head"])
    classes = head.get("classifier.weight", torch.empty(1)).shape[0]
    model = SegDINO(net, classes, layers)
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


def add_allow_other_backbone(parser: argparse.ArgumentParser) -> None:
    """`--allow-other-backbone`, for the commands that load a checkpoint with a backbone given."""
    parser.add_argument("--allow-other-backbone", action="store_true",
                        help="use the backbone weights given even when they are not those the "
                        "checkpoint was trained with (its recorded SHA-256; for a reference "
                        ".pth, its own backbone.* weights)")
