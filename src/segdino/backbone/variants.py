"""The released DINOv3 ViTs as a table, and the configuration that describes any of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from segdino.backbone.ffn import swiglu_hidden


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" or "swiglu"
    ffn_hidden: int
    qkv_bias: bool = True
    n_storage_tokens: int = 4
    patch_size: int = 16
    local_cls_norm: bool = False  # an SSL-only norm some checkpoints carry; loaded, unused
    rope_base: float = 100.0
    rope_rescale: float | None = 2.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Variant:
    config: ViTConfig
    checkpoint: str  # the file name Meta publishes
    layers: tuple[int, ...]  # SegDINO's default feature layers


def _mlp(dim: int, depth: int, heads: int) -> ViTConfig:
    return ViTConfig(dim, depth, heads, "mlp", dim * 4)


def _swiglu(dim: int, depth: int, heads: int, ratio: float, align: int, **kw) -> ViTConfig:
    return ViTConfig(dim, depth, heads, "swiglu", swiglu_hidden(dim, ratio, align), **kw)


_QUARTERS = (2, 5, 8, 11)
_LARGE = (4, 11, 17, 23)
VARIANTS: dict[str, Variant] = {
    "vits16": Variant(_mlp(384, 12, 6),
                      "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", _QUARTERS),
    "vits16plus": Variant(_swiglu(384, 12, 6, ratio=6, align=8),
                          "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", _QUARTERS),
    "vitb16": Variant(_mlp(768, 12, 12),
                      "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth", _QUARTERS),
    "vitl16": Variant(_mlp(1024, 24, 16),
                      "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth", _LARGE),
    "vitl16plus": Variant(_swiglu(1024, 24, 16, ratio=6, align=8),
                          "dinov3_vitl16plus_pretrain_lvd1689m-46503df0.pth", _LARGE),
    # The reference defines no layers for H+ and 7B: we take the last block of each quarter.
    "vith16plus": Variant(_swiglu(1280, 32, 20, ratio=6, align=8),
                          "dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth", (7, 15, 23, 31)),
    "vit7b16": Variant(_swiglu(4096, 40, 32, ratio=3, align=64, qkv_bias=False,
                               local_cls_norm=True),
                       "dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth", (9, 19, 29, 39)),
}

# The names the SegDINO scripts use for --dino_size.
DINO_SIZES: dict[str, str] = {
    "s": "vits16", "s+": "vits16plus", "b": "vitb16", "l": "vitl16",
    "l+": "vitl16plus", "h+": "vith16plus", "7b": "vit7b16",
}


def variant_name(config: ViTConfig) -> str | None:
    """The released variant with this configuration, if any.

    `local_cls_norm` is not compared: it is an SSL-only extra that some copies of the same
    weights (transformers, timm) leave out.
    """
    config = replace(config, local_cls_norm=False)
    return next(
        (name for name, v in VARIANTS.items()
         if replace(v.config, local_cls_norm=False) == config),
        None,
    )


def default_layers(config: ViTConfig) -> tuple[int, ...]:
    """SegDINO's four feature layers: the variant's, else the last block of each quarter."""
    name = variant_name(config)
    if name is not None:
        return VARIANTS[name].layers
    return tuple(max(config.depth * k // 4 - 1, 0) for k in (1, 2, 3, 4))
