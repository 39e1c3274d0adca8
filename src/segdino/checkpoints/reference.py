"""The authors' checkpoint layouts: one PyTorch state dict, bare or as `{"state_dict": ...}`,
with `backbone.*` keys and the decoder's: `head.*` for v1 (users' `tn3k.pth`; with
`head.proj.weight` at v1's newest commit) or `decoder.*` for v2 (`latest_model.pth`,
`best_dice_*.pth`); which decoder a file holds, and both directions of conversion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segdino.atomic import atomic_path
from segdino.backbone.formats import StateDict
from segdino.errors import UserError

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO

# our decoder key -> the reference's head key (v1's renamed modules; v1-proj's `proj` and
# v2's modules already carry the reference's names) (without the `head.` prefix)
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


REFERENCE_PREFIXES = ("head", "decoder")


def reference_decoder(prefix: str, head: Mapping[str, torch.Tensor]) -> tuple[str, dict, int]:
    """Which decoder a reference state dict holds, its options and its number of classes,
    from its keys: `prefix` (`head` or `decoder`) and the decoder's keys in our names."""
    if prefix == "decoder":
        out = head.get("out_conv.weight", torch.empty(1, 256))
        return "v2", {"channels": out.shape[1]}, out.shape[0]
    classes = head.get("classifier.weight", torch.empty(1)).shape[0]
    return ("v1-proj" if "proj.weight" in head else "v1"), {}, classes


def save_reference(model: SegDINO, path: str | Path) -> None:
    """Write `model` in its authors' layout: a bare state dict, `backbone.*` and the
    decoder's `head.*` (v1, v1-proj) or `decoder.*` (v2) keys."""
    if model.is_ensemble:
        raise UserError("an ensemble has no reference layout (the authors' files hold one "
                        "decoder): save it with save_segdino")
    prefix = model.head.reference_prefix
    sd = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    sd.update({f"{prefix}.{k}": v for k, v in head_to_reference(model.head.state_dict()).items()})
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
