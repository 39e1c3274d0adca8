"""The reference's checkpoint layout (users' `tn3k.pth`): one PyTorch state dict with
`backbone.*` and `head.*` keys, bare or as `{"state_dict": ...}`; both directions of conversion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segdino.atomic import atomic_path
from segdino.backbone.formats import StateDict

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO

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


def save_reference(model: SegDINO, path: str | Path) -> None:
    """Write `model` in the reference's layout: a bare state dict, `backbone.*` and `head.*`."""
    sd = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    sd.update({f"head.{k}": v for k, v in head_to_reference(model.head.state_dict()).items()})
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
