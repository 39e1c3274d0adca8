"""`SegDINOHead` (decoder "v1"): the paper's decoder, and how it folds into one convolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

PROJECTION_CHANNELS = (96, 192, 384, 768)
FEATURES = 128


class SegDINOHead(nn.Module):
    """The paper's decoder. All levels share the backbone's patch grid, so the reference's
    resize of levels 2-4 to level 1's size is the identity and is left out."""

    # the reference upsamples the logits with align_corners=True; its state dict says `head.`
    align_corners: ClassVar[bool] = True
    reference_prefix: ClassVar[str] = "head"

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        projection_channels: Sequence[int] = PROJECTION_CHANNELS,
        features: int = FEATURES,
    ) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in projection_channels)
        self.refinements = nn.ModuleList(
            nn.Conv2d(c, features, 3, padding=1, bias=False) for c in projection_channels
        )
        self.classifier = nn.Conv2d(features * len(projection_channels), num_classes, 1)

    def options(self) -> dict:
        """The constructor's options a checkpoint records (none: the paper's sizes are fixed)."""
        return {}

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder as one 3 x 3 convolution: its kernel `(K, L*D, 3, 3)` and the kernel
        `(K, 1, 3, 3)` that carries the projections' biases.

        The paper's decoder has no nonlinearity: projection, refinement and classifier are
        linear, so their product is one convolution from the stacked features to the logits.
        It computes the same function (to float rounding) with about a hundredth of the
        work, and autograd carries the gradients back to the three factors, so the model
        still trains the paper's parameters.
        """
        n_out = self.classifier.out_channels
        classifier = self.classifier.weight.reshape(n_out, len(self.refinements), -1)
        kernels, bias_kernel = [], 0
        for level, (project, refine) in enumerate(zip(self.projections, self.refinements,
                                                      strict=True)):
            width, channels = refine.weight.shape[:2]
            # classifier o refine: (K, c, 9); then o project: (K, D, 9)
            head = (classifier[:, level] @ refine.weight.reshape(width, channels * 9))
            head = head.reshape(n_out, channels, 9)
            kernels.append((head.transpose(1, 2) @ project.weight.flatten(1)).transpose(1, 2))
            bias_kernel = bias_kernel + project.bias @ head
        kernel = torch.cat(kernels, dim=1).reshape(n_out, -1, 3, 3)
        return kernel, bias_kernel.reshape(n_out, 1, 3, 3)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """The levels' maps stacked along channels, `(B, L*D, h, w)` -> logits `(B, K, h, w)`."""
        kernel, bias_kernel = self.folded()
        logits = F.conv2d(stacked, kernel.to(stacked.dtype), padding=1)
        # zero padding: the projections' biases reach a border pixel through fewer taps
        ones = stacked.new_ones(1, 1, *stacked.shape[-2:])
        bias = F.conv2d(ones, bias_kernel.to(stacked.dtype), padding=1)
        return logits + bias + self.classifier.bias.to(stacked.dtype)[:, None, None]
