"""Multi-head self-attention with a masked qkv bias and RoPE on the patch tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdino.backbone.rope import apply_rope


class MaskedBiasLinear(nn.Linear):
    """The fused qkv projection. Its bias is multiplied by `bias_mask` (1 on q and v, 0 on k),
    as in the released checkpoints, which switches the key bias off."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if bias:
            third = out_features // 3
            mask = torch.ones(out_features)
            mask[third : 2 * third] = 0
            self.register_buffer("bias_mask", mask, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MaskedBiasLinear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, n, head_dim)
        sin, cos = rope
        prefix = n - sin.shape[0]  # cls and storage tokens are not rotated
        q = torch.cat([q[:, :, :prefix], apply_rope(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], apply_rope(k[:, :, prefix:], sin, cos)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))
