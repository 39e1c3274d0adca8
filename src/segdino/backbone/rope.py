"""Axial rotary position embedding (RoPE) for the patch tokens of a 2-D grid."""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """`periods[i] = base ** (2 i / (head_dim / 2))`, `head_dim / 4` of them, in float32."""
    exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
    return base**exponents


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """`[a, b] -> [-b, a]` on the two halves of the last dimension."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (..., tokens, head_dim) by the tables (tokens, head_dim), in float32."""
    rotated = x.float() * cos + rotate_half(x.float()) * sin
    return rotated.to(x.dtype)


class RopeEmbedding(nn.Module):
    """Sine and cosine tables for an `h x w` grid of patches.

    Coordinates are patch centres normalised per axis to [-1, 1]. In train mode the
    reference rescales them by one random log-uniform factor in [1/rescale, rescale] per
    forward; in eval mode the tables depend only on the grid, so they are cached (except
    while traced or compiled).
    """

    def __init__(self, head_dim: int, base: float = 100.0, rescale: float | None = 2.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.rescale = rescale
        self.register_buffer("periods", rope_periods(head_dim, base), persistent=True)
        self._cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _apply(self, fn, recurse=True):  # a move or cast invalidates the cached tables
        self._cache = {}
        return super()._apply(fn, recurse)

    def forward(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.periods.device
        key = (h, w, device)
        # Traced (ONNX export) or compiled, the tables are computed in the graph from the
        # grid, so that no one grid size is frozen into it.
        cached = not (self.training or torch.jit.is_tracing() or torch.compiler.is_compiling())
        if cached and key in self._cache:
            return self._cache[key]
        coords_y = torch.arange(0.5, h, device=device, dtype=torch.float32) / h
        coords_x = torch.arange(0.5, w, device=device, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(coords_y, coords_x, indexing="ij"), dim=-1)
        coords = 2.0 * coords.flatten(0, 1) - 1.0  # (hw, 2), row-major
        if self.training and self.rescale is not None:
            log_scale = torch.empty(1, device=device).uniform_(
                -math.log(self.rescale), math.log(self.rescale)
            )
            coords = coords * log_scale.exp()
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)  # (hw, head_dim): y angles, x angles, twice
        tables = (torch.sin(angles), torch.cos(angles))
        if cached and device.type != "meta":
            self._cache[key] = tables
        return tables
