"""SegDINO: a frozen DINOv3 backbone and a light multi-level decoder.

Four intermediate layers of the backbone, each projected (1x1 conv) and refined (3x3 conv)
to 128 channels, are concatenated and classified per patch (1x1 conv); the logits are then
upsampled bilinearly to the input size. Only the decoder trains (2,213,793 parameters on
ViT-S/16 for one class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelHubMixin
from torch import nn

from segdino.backbone import DinoVisionTransformer, default_layers
from segdino.data.transforms import IMAGENET_MEAN, IMAGENET_STD

PROJECTION_CHANNELS = (96, 192, 384, 768)
FEATURES = 128


@dataclass
class Preprocessing:
    """How images reach the model and how logits become masks; saved with every checkpoint.

    The defaults are the reference's: 256 x 256 bicubic resize, ImageNet normalisation,
    foreground where sigmoid > 0.5. A model of K >= 2 classes takes the most probable class
    instead (the threshold is unused) and may record how its mask files map to classes
    (`class_map`, `ignore_index`: see `segdino.data.masks`) and the classes' names.
    """

    input_size: tuple[int, int] = (256, 256)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5
    class_map: str | None = None  # "value:class,..."; None: mask values are the classes
    ignore_index: int | None = None
    class_names: tuple[str, ...] | None = None  # K names, background first

    @classmethod
    def from_dict(cls, saved: dict) -> Preprocessing:
        """From its JSON form in a checkpoint (older ones have no class fields)."""
        names = saved.get("class_names")
        return cls(tuple(saved["input_size"]), tuple(saved["mean"]), tuple(saved["std"]),
                   saved["threshold"], saved.get("class_map"), saved.get("ignore_index"),
                   tuple(names) if names else None)


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


class SegDINO(
    nn.Module, ModelHubMixin, library_name="segdino", pipeline_tag="image-segmentation",
    tags=["segdino", "dinov3", "image-segmentation"], paper_url="https://arxiv.org/abs/2509.00833",
):
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

    def decode(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Decoder logits for an input of `size` (H, W): upsampled to the padded grid, cropped."""
        logits = self.head(features)
        patch = self.backbone.patch_size
        grid = (logits.shape[-2] * patch, logits.shape[-1] * patch)
        logits = F.interpolate(logits, size=grid, mode="bilinear", align_corners=True)
        return logits[..., : size[0], : size[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x), x.shape[-2:])

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # The Hugging Face Hub (`save_pretrained`, `push_to_hub` and `from_pretrained`): the work is
    # in segdino.pretrained and segdino.model_card, imported here because they import this.

    def _save_pretrained(self, save_directory: Path) -> None:
        """`save_pretrained`'s files but the card: the decoder and its metadata; the backbone
        is recorded (file name, SHA-256, Hub repo and commit), not copied."""
        from segdino.pretrained import write_pretrained

        write_pretrained(self, save_directory)

    def generate_model_card(self, run_dir: str | Path | None = None,
                            test_summary: str | Path | None = None,
                            repo_id: str | None = None) -> ModelCard:
        """The README.md `save_pretrained` writes; describe the training run with
        `model_card_kwargs={"run_dir": ..., "test_summary": ..., "repo_id": ...}`."""
        from segdino.model_card import model_card

        return model_card(self, run_dir, test_summary, repo_id)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        backbone: str | Path | DinoVisionTransformer | None = None,
        revision: str | None = None,
        allow_other_backbone: bool = False,
    ) -> SegDINO:
        """A model from a `save_pretrained` folder or a Hub repo id (`OWNER/NAME[@REVISION]`,
        through the Hub cache, so offline after the first time). The backbone comes from
        `backbone` when given (checked against the recorded SHA-256 unless
        `allow_other_backbone`), else from where the model's metadata says, its Hub repo
        included."""
        from segdino.pretrained import load_pretrained

        return load_pretrained(pretrained_model_name_or_path, backbone, revision,
                               allow_other_backbone)
