"""SegDINO: a frozen DINOv3 backbone and a light multi-level decoder.

Four intermediate layers of the backbone, each projected (1x1 conv) and refined (3x3 conv)
to 128 channels, are concatenated and classified per patch (1x1 conv); the logits are then
upsampled bilinearly to the input size. Only the decoder trains (2,213,793 parameters on
ViT-S/16 for one class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segdino.backbone import DinoVisionTransformer, default_layers
from segdino.data.transforms import IMAGENET_MEAN, IMAGENET_STD

PROJECTION_CHANNELS = (96, 192, 384, 768)
FEATURES = 128


@dataclass
class Preprocessing:
    """How images reach the model and how logits become masks; saved with every checkpoint.

    The defaults are the reference's: 256 x 256 bicubic resize, ImageNet normalisation,
    foreground where sigmoid > 0.5.
    """

    input_size: tuple[int, int] = (256, 256)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5


class SegDINOHead(nn.Module):
    """The paper's decoder. All levels share the backbone's patch grid, so the reference's
    resize of levels 2-4 to level 1's size is the identity and is left out."""

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

    def forward(self, feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """`(B, D, h, w)` maps, one per level -> `(B, num_classes, h, w)` logits."""
        levels = [
            refine(project(f))
            for f, project, refine in zip(feature_maps, self.projections, self.refinements,
                                          strict=True)
        ]
        return self.classifier(torch.cat(levels, dim=1))


class SegDINO(nn.Module):
    """`SegDINO(backbone, num_classes=1, layers=None)`: logits `(B, num_classes, H, W)`.

    The backbone is frozen for real: no gradients, and it stays in eval mode when the model
    trains (so its train-mode RoPE jitter never runs). Any input size works: a size that is
    not a multiple of the patch size is zero-padded (the mean colour, after normalisation) at
    the bottom and right to the next multiple, and the logits are cropped back.
    """

    def __init__(
        self,
        backbone: DinoVisionTransformer,
        num_classes: int = 1,
        layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.layers = tuple(layers if layers is not None else default_layers(backbone.config))
        if len(self.layers) != len(PROJECTION_CHANNELS):
            raise ValueError(f"SegDINO decodes {len(PROJECTION_CHANNELS)} layers, "
                             f"got {list(self.layers)}")
        self.num_classes = num_classes
        self.head = SegDINOHead(backbone.embed_dim, num_classes)
        self.preprocessing = Preprocessing()

    def train(self, mode: bool = True) -> SegDINO:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's feature maps `(B, D, h, w)` for an input padded to the grid."""
        with torch.no_grad():
            return list(self.backbone.get_intermediate_layers(x, n=self.layers, reshape=True))

    def decode(self, feature_maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Decoder logits upsampled to `size` (the padded input's size)."""
        logits = self.head(feature_maps)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        patch = self.backbone.patch_size
        padded = F.pad(x, (0, -w % patch, 0, -h % patch)) if h % patch or w % patch else x
        logits = self.decode(self.features(padded), padded.shape[-2:])
        return logits[..., :h, :w]

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
