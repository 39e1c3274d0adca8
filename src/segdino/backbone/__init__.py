"""DINOv3 vision transformers: the released variants, built natively and loaded from any of
the weight formats users have (Meta, transformers, timm)."""

from segdino.backbone.factory import build_backbone, infer_config, load_backbone, resolve_arch
from segdino.backbone.variants import DINO_SIZES, VARIANTS, Variant, ViTConfig, default_layers
from segdino.backbone.vit import DinoVisionTransformer

__all__ = [
    "DINO_SIZES", "VARIANTS", "DinoVisionTransformer", "Variant", "ViTConfig",
    "build_backbone", "default_layers", "infer_config", "load_backbone", "resolve_arch",
]
