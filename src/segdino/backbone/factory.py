"""Build a DINOv3 ViT by name, or load one from weights and infer its architecture."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from segdino.backbone.formats import StateDict, add_zero_qkv_bias, read_backbone_weights
from segdino.backbone.rope import rope_periods
from segdino.backbone.variants import DINO_SIZES, VARIANTS, ViTConfig, variant_name
from segdino.backbone.vit import DinoVisionTransformer
from segdino.errors import UserError
from segdino.hub import WEIGHT_FILES, local_path


def resolve_arch(arch: str) -> str:
    """A variant name from its own name or a `--dino_size` alias (s, s+, b, l, l+, h+, 7b)."""
    name = DINO_SIZES.get(arch, arch)
    if name not in VARIANTS:
        known = ", ".join([*VARIANTS, *DINO_SIZES])
        raise UserError(f"unknown backbone architecture {arch!r} (expected one of: {known})")
    return name


def build_backbone(arch: str, device: str | torch.device | None = None) -> DinoVisionTransformer:
    """A randomly initialised released variant, e.g. `build_backbone("vits16")`.

    `device="meta"` builds the structure without allocating its weights.
    """
    config = VARIANTS[resolve_arch(arch)].config
    with torch.device(device or "cpu"):
        return DinoVisionTransformer(config)


def check_arch(config: ViTConfig, arch: str, where: str) -> None:
    """`arch` must name the variant these weights are. Weights of no released shape (a
    distilled or test model) must at least be of the variant's family: FFN and qkv bias."""
    wanted = resolve_arch(arch)
    found = variant_name(config)
    family = VARIANTS[wanted].config
    if found == wanted or (
        found is None and (config.ffn, config.qkv_bias) == (family.ffn, family.qkv_bias)
    ):
        return
    described = found or (f"a custom ViT (dim {config.embed_dim}, depth {config.depth}, "
                          f"{config.ffn} FFN{'' if config.qkv_bias else ', no qkv bias'})")
    raise UserError(f"{where}: holds {described}, not the {wanted} that was asked for")


def _shape(sd: StateDict, key: str, where: str) -> torch.Size:
    if key not in sd:
        raise UserError(f"{where}: not a DINOv3 backbone (no {key!r} tensor)")
    return sd[key].shape


def infer_config(
    sd: StateDict, where: str, num_heads: int | None = None, norm_eps: float | None = None,
    rope_base: float | None = None,
) -> ViTConfig:
    """The architecture a Meta-layout state dict describes.

    Width from `cls_token`, depth from the block count, heads from `rope_embed.periods`
    (or `num_heads` when the format has no periods), FFN type and width from its keys, qkv
    bias and `local_cls_norm` from their presence.
    """
    dim = _shape(sd, "cls_token", where)[-1]
    depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise UserError(f"{where}: not a DINOv3 backbone (no blocks.N.* tensors)")
    if "rope_embed.periods" in sd:
        heads_from_periods = dim // (4 * sd["rope_embed.periods"].numel())
        if num_heads is not None and num_heads != heads_from_periods:
            raise UserError(f"{where}: has {heads_from_periods} attention heads, "
                            f"not {num_heads} as asked")
        num_heads = heads_from_periods
    swiglu = "blocks.0.mlp.w1.weight" in sd
    hidden = _shape(sd, "blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight",
                    where)[0]
    config = ViTConfig(
        embed_dim=dim, depth=depth, num_heads=num_heads or 0,
        ffn="swiglu" if swiglu else "mlp", ffn_hidden=hidden,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        n_storage_tokens=_shape(sd, "storage_tokens", where)[1],
        patch_size=_shape(sd, "patch_embed.proj.weight", where)[-1],
        local_cls_norm="local_cls_norm.weight" in sd,
    )
    if norm_eps is not None:
        config = replace(config, norm_eps=norm_eps)
    if rope_base is not None:
        config = replace(config, rope_base=rope_base)
    if num_heads is None:
        # No periods and no config: a released variant of this shape fixes the head count.
        candidates = {v.config.num_heads for v in VARIANTS.values()
                      if variant_name(replace(config, num_heads=v.config.num_heads))}
        if len(candidates) != 1:
            raise UserError(f"{where}: this format does not record the number of attention "
                            "heads; pass num_heads=... or an architecture name (arch=...)")
        config = replace(config, num_heads=candidates.pop())
    return config


def check_state_dict(model: torch.nn.Module, sd: StateDict, where: str) -> None:
    """Strict loading, with every missing, unexpected or mis-shaped key named."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in expected]
    problems += [
        f"{k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items() if k in sd and sd[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more"
                                           if len(problems) > 6 else "")
        raise UserError(f"{where}: does not match the architecture it describes: {shown}")


def load_backbone(
    source: str | Path | Mapping[str, torch.Tensor],
    arch: str | None = None,
    num_heads: int | None = None,
    *,
    name: str | None = None,
) -> DinoVisionTransformer:
    """A DINOv3 ViT with weights from `source`, its architecture inferred from them.

    `source`: a Meta `.pth` file, a state dict, a `transformers` checkpoint folder
    (`config.json` + `model.safetensors`), a timm safetensors file or folder, or a Hugging
    Face Hub repo id of either folder kind (`facebook/dinov3-vits16-pretrain-lvd1689m`,
    `timm/vit_small_patch16_dinov3_qkvb.lvd1689m`, optionally `@revision`), read through the
    Hub cache. `arch`, when given, must agree with the weights; it also supplies the head
    count that timm files lack. `name` is how errors call a state dict (default "state dict").
    """
    where = (name or "state dict") if isinstance(source, Mapping) else str(source)
    path = None if isinstance(source, Mapping) else local_path(source, WEIGHT_FILES)
    sd, hints = read_backbone_weights(source if path is None else path)
    wanted = resolve_arch(arch) if arch else None
    named = wanted or hints.get("arch")
    if num_heads is None and "rope_embed.periods" not in sd:  # else the periods tell
        num_heads = hints.get("num_heads") or (VARIANTS[named].config.num_heads if named
                                               else None)
    config = infer_config(sd, where, num_heads, hints.get("norm_eps"), hints.get("rope_base"))
    if hints.get("timm_without_qkv_bias"):
        config = _zero_qkv_bias(sd, config, named)
    if arch is not None:
        check_arch(config, arch, where)
    sd.setdefault("rope_embed.periods", rope_periods(config.head_dim, config.rope_base))
    with torch.device("meta"):
        model = DinoVisionTransformer(config)
    check_state_dict(model, sd, where)
    model.load_state_dict(sd, strict=True, assign=True)
    model.weights_path = path
    return model.eval()


def _zero_qkv_bias(sd: StateDict, config: ViTConfig, named: str | None) -> ViTConfig:
    """timm's DINOv3 copies without `_qkvb` leave out the q and v biases (timm holds that the
    released ones are zero). Where the variant has them (all but 7B), load zeros, so the
    weights are the released architecture; the variant comes from its name, else its shape."""
    family = named or variant_name(replace(config, qkv_bias=True))
    if family is None or not VARIANTS[family].config.qkv_bias:
        return config
    add_zero_qkv_bias(sd)
    _note_zero_qkv_bias()
    return replace(config, qkv_bias=True)


@functools.cache  # said once per process
def _note_zero_qkv_bias() -> None:
    warnings.warn("timm's DINOv3 weights without `_qkvb` carry no q and v biases: loaded with "
                  "zero biases (timm holds that those of the released weights are zero)",
                  UserWarning, stacklevel=4)
