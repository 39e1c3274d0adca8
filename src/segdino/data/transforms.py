"""Turning images and masks into network tensors, and back.

The preprocessing is the reference's (docs: reference.md, section 3): RGB, PIL bicubic
resize (SegDINO v2's: bilinear; both antialias when downscaling), scale to [0, 1], ImageNet
normalisation; masks are resized with nearest neighbour. `Augment` is the optional SegDINO v2
style augmentation, off by default because the paper trains without it (on in v2's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from segdino.data.images import open_image, to_rgb
from segdino.errors import UserError
from segdino.picture_files import as_uint8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
# image resampling by name, as checkpoints record it: v1 trains with bicubic, v2 with bilinear
RESIZE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def load_rgb(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a file path, a PIL image, or an H x W x 3 uint8 array.

    A file is read upright by its EXIF orientation, 16-bit pixels scaled to 8 bits, as the
    reference's OpenCV decoder does (`images.open_image`, `images.to_rgb`).
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise UserError(
                f"image array has shape {source.shape} and dtype {source.dtype}; "
                "expected H x W x 3 uint8"
            )
        return Image.fromarray(source, "RGB")
    return to_rgb(open_image(source))


def _mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean (or 0/nonzero) H x W array as a 0/255 grayscale image."""
    return Image.fromarray(as_uint8(np.asarray(mask) != 0), "L")


def image_to_tensor(
    image: Image.Image,
    size: tuple[int, int],
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    resize: str = "bicubic",
) -> torch.Tensor:
    """A [3, h, w] float32 tensor: resized to `size` = (h, w) (`resize`, a `RESIZE` name),
    /255, normalised."""
    height, width = size
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((width, height), RESIZE[resize])
    x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)
    if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return (x.float() / 255.0 - _MEAN) / _STD
    return (x.float() / 255.0 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def mask_to_tensor(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A [1, h, w] float32 0/1 tensor from a boolean H x W mask: nearest resize to `size` =
    (h, w)."""
    height, width = size
    resized = _mask_image(mask).resize((width, height), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(resized) > 127).float().unsqueeze(0)


def denormalise(t: torch.Tensor) -> np.ndarray:
    """The H x W x 3 uint8 image a normalised [3, h, w] tensor came from.

    Undoes the normalisation before clamping (the reference clamps the normalised tensor,
    which saves wrong colours).
    """
    x = t.detach().cpu().float() * _STD + _MEAN
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class Augment:
    """SegDINO v2 style augmentation of an image and its mask, at their original size.

    Applied in this order:
    - horizontal flip, then vertical flip, each with probability `flip_p`;
    - rotation by an angle drawn uniformly in [-max_degrees, max_degrees] about the centre,
      same canvas, corners filled with 0 (image bilinear, mask nearest, same angle; 0 is the
      background);
    - colour jitter, image only: brightness, contrast and saturation factors each drawn
      uniformly in [1 - x, 1 + x], applied in a random order (as torchvision's ColorJitter).
    All randomness comes from the generator passed in, so a seed reproduces the result.
    """

    flip_p: float = 0.5
    max_degrees: float = 15.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(
        self, image: Image.Image, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[Image.Image, np.ndarray]:
        """The augmented (RGB image, mask); `mask` is H x W, same size, bool or uint8 class
        indices, and comes back as it went in (nearest neighbour keeps its values)."""
        if image.size != (mask.shape[1], mask.shape[0]):
            raise ValueError(f"image is {image.size} (w, h) but mask is {mask.shape} (h, w)")
        mask_im = Image.fromarray(mask.astype(np.uint8), "L")
        for flip in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM):
            if rng.random() < self.flip_p:
                image, mask_im = image.transpose(flip), mask_im.transpose(flip)
        angle = rng.uniform(-self.max_degrees, self.max_degrees)
        image = image.rotate(angle, Image.Resampling.BILINEAR, fillcolor=0)
        mask_im = mask_im.rotate(angle, Image.Resampling.NEAREST, fillcolor=0)
        enhancers = (
            (ImageEnhance.Brightness, self.brightness),
            (ImageEnhance.Contrast, self.contrast),
            (ImageEnhance.Color, self.saturation),
        )
        for k in rng.permutation(len(enhancers)):
            enhancer, amount = enhancers[k]
            image = enhancer(image).enhance(rng.uniform(1.0 - amount, 1.0 + amount))
        return image, np.asarray(mask_im).astype(mask.dtype)
