"""SegDINO: a frozen DINOv3 backbone and a light multi-level decoder.

Four intermediate layers of the backbone feed one of the decoders in
`segdino.models.decoders`; its logits are upsampled bilinearly to the input size. The paper's
decoder ("v1", the default) projects (1x1 conv) and refines (3x3 conv) each layer to 128
channels, concatenates them and classifies per patch (1x1 conv). Only the decoder trains
(2,213,793 parameters on ViT-S/16 for one class with v1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segdino.backbone import DinoVisionTransformer, default_layers
from segdino.models.decoders import DEFAULT, ENSEMBLE, build_decoder, decoder_options
from segdino.models.decoders.ensemble import mean_probability_logits
from segdino.models.decoders.v1 import PROJECTION_CHANNELS
from segdino.models.hub_mixin import SegDINOHubMixin
from segdino.models.preprocessing import Preprocessing


class SegDINO(
    nn.Module, SegDINOHubMixin, library_name="segdino", pipeline_tag="image-segmentation",
    tags=["segdino", "dinov3", "image-segmentation"], paper_url="https://arxiv.org/abs/2509.00833",
):
    """`SegDINO(backbone, num_classes=1, layers=None, decoder="v1", **options)`: logits
    `(B, num_classes, H, W)`; `decoder` names one in `segdino.models.decoders.DECODERS`
    and `options` override its defaults (v2: `channels`). `decoder="ensemble"` with
    `members=[{"decoder": ..., "decoder_options": ...}, ...]` holds K decoders on the one
    backbone (`head` is then their `MemberHeads`) and returns the logits of the mean of their
    probabilities.

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
        decoder: str = DEFAULT,
        **options: object,
    ) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.layers = tuple(layers if layers is not None else default_layers(backbone.config))
        if len(self.layers) != len(PROJECTION_CHANNELS):
            raise ValueError(f"SegDINO decodes {len(PROJECTION_CHANNELS)} layers, "
                             f"got {list(self.layers)}")
        self.num_classes = num_classes
        self.decoder = decoder
        self.decoder_options = decoder_options(decoder, options)
        self.head = build_decoder(decoder, backbone.embed_dim, num_classes,
                                  **self.decoder_options)
        self.preprocessing = Preprocessing()
        self.checkpoint_path: Path | None = None  # the file load_segdino read, for reports

    def train(self, mode: bool = True) -> SegDINO:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's feature maps of the decoded layers, stacked along channels
        `(B, L*D, h, w)`, the input zero-padded to whole patches. They depend on the image
        alone: training can cache them."""
        patch = self.backbone.patch_size
        h, w = x.shape[-2:]
        if h % patch or w % patch:
            x = F.pad(x, (0, -w % patch, 0, -h % patch))
        with torch.no_grad():
            maps = self.backbone.get_intermediate_layers(x, n=self.layers, reshape=True)
            return torch.cat(maps, dim=1)

    @property
    def is_ensemble(self) -> bool:
        return self.decoder == ENSEMBLE

    def member_logits(self, features: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """Each decoder's logits for an input of `size` (H, W) (one decoder, unless an
        ensemble): upsampled to the padded grid, cropped, divided by the calibrated
        temperature (`Preprocessing.temperature`, 1 until calibrated)."""
        patch = self.backbone.patch_size
        grid = (features.shape[-2] * patch, features.shape[-1] * patch)
        out = []
        for head in self.head if self.is_ensemble else (self.head,):
            logits = F.interpolate(head(features), size=grid, mode="bilinear",
                                   align_corners=head.align_corners)
            out.append(logits[..., : size[0], : size[1]] / self.preprocessing.temperature)
        return out

    def decode(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The model's logits for an input of `size` (H, W): its decoder's, or for an
        ensemble the logits of the members' mean probability."""
        logits = self.member_logits(features, size)
        return mean_probability_logits(logits) if self.is_ensemble else logits[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x), x.shape[-2:])

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
