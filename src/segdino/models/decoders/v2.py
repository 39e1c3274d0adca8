"""`TPASADDecoder` (decoder "v2"): SegDINO v2's token pyramid (TPA) and scale-aware decoding
(SAD), with the reference's module names so that its `decoder.*` keys load as they are."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = 256
LEVELS = 4
UPSAMPLING = (8, 4, 2, 1)  # levels 1..4 reach level 1's grid, 8x the patch grid


def _up(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Branch(nn.Module):
    """A pyramid level after its upsampling: one 3 x 3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Residual(nn.Module):
    """`x + gamma * GELU(GroupNorm(Pw(Dw(x))))`; gamma starts at 0, so each block starts as
    the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(min(32, channels), channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * F.gelu(self.norm(self.pointwise(self.depthwise(x))))


class TPASADDecoder(nn.Module):
    """SegDINO v2's decoder of width `channels` (256 by default, 512 in the authors' "more
    challenging" setting): logits on a grid 8x the patch grid, `(B, K, 8h, 8w)`."""

    # v2 resizes with align_corners=False throughout; its state dict says `decoder.`
    align_corners: ClassVar[bool] = False
    reference_prefix: ClassVar[str] = "decoder"

    def __init__(self, in_channels: int, num_classes: int = 1, channels: int = CHANNELS) -> None:
        super().__init__()
        self.channels = channels
        self.token_projections = nn.ModuleList(
            nn.Conv2d(in_channels, channels, 1, bias=False) for _ in range(LEVELS))
        for level in range(1, LEVELS + 1):
            self.add_module(f"tpa_branch_{level}", _Branch(channels))
            self.add_module(f"sad_intra_{level}", _Residual(channels))
            self.add_module(f"sad_inter_{level}", _Residual(channels))
        self.out_conv = nn.Conv2d(channels, num_classes, 1)

    def options(self) -> dict:
        """The constructor's options a checkpoint records."""
        return {"channels": self.channels}

    def _level(self, kind: str, level: int) -> nn.Module:
        return self.get_submodule(f"{kind}_{level}")

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """The levels' maps stacked along channels, `(B, L*D, h, w)` -> logits
        `(B, K, 8h, 8w)`."""
        levels = stacked.chunk(LEVELS, dim=1)
        local = []
        for level, (project, x, scale) in enumerate(
                zip(self.token_projections, levels, UPSAMPLING, strict=True), start=1):
            x = project(x)
            if scale != 1:
                x = _up(x, (x.shape[-2] * scale, x.shape[-1] * scale))
            local.append(self._level("sad_intra", level)(self._level("tpa_branch", level)(x)))
        # coarse to fine: each level adds the upsampled result of the level below it
        x = self._level("sad_inter", LEVELS)(local[-1])
        for level in range(LEVELS - 1, 0, -1):
            finer = local[level - 1]
            x = self._level("sad_inter", level)(_up(x, finer.shape[-2:]) + finer)
        return self.out_conv(x)
