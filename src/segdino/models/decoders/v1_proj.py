"""`SegDINOProjHead` (decoder "v1-proj"): the paper's head at the reference's newest commit,
which adds a transposed convolution on level 1 and classifies on a 4x finer grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdino.models.decoders.v1 import FEATURES, PROJECTION_CHANNELS, SegDINOHead

SCALE = 4  # head.proj: kernel 4, stride 4, so level 1's grid grows fourfold


class SegDINOProjHead(SegDINOHead):
    """v1 plus `proj = ConvTranspose2d(128, 128, 4, stride 4, no bias)` on level 1's refined
    map; levels 2-4 are resized (bilinear, align_corners=True) to its `(4h, 4w)` grid and the
    classifier runs there. Still linear, but not one convolution on the patch grid any more,
    so it runs factor by factor rather than folded."""

    def __init__(self, in_channels: int, num_classes: int = 1) -> None:
        super().__init__(in_channels, num_classes)
        self.proj = nn.ConvTranspose2d(FEATURES, FEATURES, SCALE, stride=SCALE, bias=False)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """The levels' maps stacked along channels, `(B, L*D, h, w)` -> logits
        `(B, K, 4h, 4w)`."""
        levels = stacked.chunk(len(PROJECTION_CHANNELS), dim=1)
        refined = [refine(project(level)) for project, refine, level
                   in zip(self.projections, self.refinements, levels, strict=True)]
        first = self.proj(refined[0])
        rest = [F.interpolate(r, size=first.shape[-2:], mode="bilinear", align_corners=True)
                for r in refined[1:]]
        return self.classifier(torch.cat([first, *rest], dim=1))
