"""The DINOv3 vision transformer, with the reference's feature-extraction API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from segdino.backbone.block import Block
from segdino.backbone.rope import RopeEmbedding
from segdino.backbone.variants import ViTConfig


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (b, h*w, dim), row-major


class DinoVisionTransformer(nn.Module):
    """Token sequence `[cls, storage_1..R, patches]` through pre-norm blocks, RoPE on patches.

    Its state dict has exactly the keys and shapes of Meta's released checkpoints.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.weights_path: Path | None = None  # the file or folder load_backbone read
        dim = config.embed_dim
        self.embed_dim = dim
        self.patch_size = config.patch_size
        self.n_blocks = config.depth
        self.n_storage_tokens = config.n_storage_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, config.n_storage_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # SSL masking only: never used here
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.rope_embed = RopeEmbedding(config.head_dim, config.rope_base, config.rope_rescale)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.ffn, config.ffn_hidden, config.qkv_bias,
                  config.norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        if config.local_cls_norm:
            self.local_cls_norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.init_weights()

    def init_weights(self) -> None:
        """Random initialisation in the spirit of the reference (truncated normal, std 0.02)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for token in (self.cls_token, self.storage_tokens):
            nn.init.normal_(token, std=0.02)

    def _run_blocks(self, x: torch.Tensor, keep: Sequence[int]) -> tuple[list[torch.Tensor], int]:
        """Outputs of the blocks in `keep`, stopping after the deepest one; and the grid."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        b = tokens.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1)]
        tokens = torch.cat([*prefix, tokens], dim=1)
        rope = self.rope_embed(h, w)  # once per forward, shared by every block
        wanted = set(keep)
        outputs = {}
        for i, block in enumerate(self.blocks[: max(keep) + 1]):
            tokens = block(tokens, rope)
            if i in wanted:
                outputs[i] = tokens
        return [outputs[i] for i in keep], h

    def _block_indices(self, n: int | Sequence[int]) -> list[int]:
        indices = list(range(self.n_blocks - n, self.n_blocks)) if isinstance(n, int) else list(n)
        bad = [i for i in indices if not 0 <= i < self.n_blocks]
        if bad or not indices:
            raise ValueError(f"block indices {bad or indices} outside 0..{self.n_blocks - 1}")
        return indices

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
        *,
        return_extra_tokens: bool = False,
    ) -> tuple:
        """Patch tokens after the listed blocks (the last `n` if `n` is an int), as the reference.

        Each output is `(B, h*w, D)`, or `(B, D, h, w)` with `reshape=True`; with
        `return_class_token` / `return_extra_tokens` each becomes a tuple that adds the class
        token `(B, D)` and / or the storage tokens `(B, R, D)`.
        """
        outputs, h = self._run_blocks(x, self._block_indices(n))
        if norm:
            outputs = [self.norm(out) for out in outputs]
        start = 1 + self.n_storage_tokens
        patches = [out[:, start:] for out in outputs]
        if reshape:
            patches = [p.unflatten(1, (h, -1)).permute(0, 3, 1, 2).contiguous() for p in patches]
        extras = []
        if return_class_token:
            extras.append([out[:, 0] for out in outputs])
        if return_extra_tokens:
            extras.append([out[:, 1:start] for out in outputs])
        return tuple(zip(patches, *extras, strict=True)) if extras else tuple(patches)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The reference's output dict after the last block and the final norm."""
        (prenorm,), _ = self._run_blocks(x, [self.n_blocks - 1])
        normed = self.norm(prenorm)
        start = 1 + self.n_storage_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_storage_tokens": normed[:, 1:start],
            "x_norm_patchtokens": normed[:, start:],
            "x_prenorm": prenorm,
            "masks": None,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised class token, as the reference's eval-mode forward returns."""
        return self.forward_features(x)["x_norm_clstoken"]
