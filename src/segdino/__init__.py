"""SegDINO: a frozen DINOv3 vision transformer and a 2.2 M-parameter decoder for segmentation.

The public names are imported on first use (module `__getattr__`): importing `segdino` itself
must stay instant, because `python -m segdino` imports this package before the command line
can catch a Ctrl-C, and `segdino --help` needs no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from segdino.version import __version__ as __version__

# public name -> the module that defines it
_PUBLIC = {
    "DinoVisionTransformer": "segdino.backbone",
    "build_backbone": "segdino.backbone",
    "load_backbone": "segdino.backbone",
    "load_segdino": "segdino.checkpoints.load",
    "save_reference": "segdino.checkpoints.reference",
    "save_segdino": "segdino.checkpoints.format",
    "UserError": "segdino.errors",
    "Preprocessing": "segdino.models.preprocessing",
    "SegDINO": "segdino.models.segdino",
    "Predictor": "segdino.inference.predictor",
}

__all__ = [  # a literal list, for the linters; the names of _PUBLIC
    "DinoVisionTransformer", "Predictor", "Preprocessing", "SegDINO", "UserError", "build_backbone",
    "load_backbone", "load_segdino", "save_reference", "save_segdino",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` does this
    from segdino.backbone import DinoVisionTransformer, build_backbone, load_backbone
    from segdino.checkpoints.format import save_segdino
    from segdino.checkpoints.load import load_segdino
    from segdino.checkpoints.reference import save_reference
    from segdino.errors import UserError
    from segdino.inference.predictor import Predictor
    from segdino.models.preprocessing import Preprocessing
    from segdino.models.segdino import SegDINO


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        # AttributeError lets `from segdino import metrics` fall back to importing the submodule
        raise AttributeError(f"module 'segdino' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
