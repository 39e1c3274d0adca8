"""SegDINO: a frozen DINOv3 vision transformer and a 2.2 M-parameter decoder for segmentation."""

from segdino.backbone import DinoVisionTransformer, build_backbone, load_backbone
from segdino.checkpoint import load_segdino, save_reference, save_segdino
from segdino.errors import UserError
from segdino.model import Preprocessing, SegDINO
from segdino.predict import Predictor

__version__ = "0.1.0"

__all__ = [
    "DinoVisionTransformer", "Predictor", "Preprocessing", "SegDINO", "UserError", "build_backbone",
    "load_backbone", "load_segdino", "save_reference", "save_segdino",
]
