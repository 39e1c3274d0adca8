"""Segmenting images with a trained model: the `Predictor` API.

An image goes through the model's own preprocessing (bicubic resize to its input size,
normalisation), the model and a sigmoid; the probability map is resized back to the image's
own size (bilinear, on the probabilities, so the mask's edge is not blocky), then
thresholded. Masks therefore always have the size of the image they came from.

A model of K >= 2 classes goes the same way with a softmax: the K class probabilities are
resized, and each pixel takes the most probable class (uint8 class indices, 0 the background).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segdino.checkpoints.load import load_segdino
from segdino.data.transforms import image_to_tensor, load_rgb
from segdino.errors import UserError
from segdino.inference.engines import make_engine
from segdino.inference.tta import TTA_VIEWS, averaged
from segdino.models.segdino import SegDINO
from segdino.runtime import pick_device

ImageSource = str | os.PathLike | Image.Image | np.ndarray
Prediction = np.ndarray | tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one channel, softmax over K."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(1)


def to_size(prob: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (C, h, w) probability map resized to `size` = (H, W): bilinear, as float32; H x W
    for one channel (binary), else C x H x W."""
    resized = F.interpolate(prob[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0].squeeze(0).cpu().numpy()


class Predictor:
    """Masks from a SegDINO model for images at their own size.

    `predictor(image)` takes a path, a PIL image or an H x W x 3 uint8 array and returns a
    boolean H x W mask (or `(mask, probabilities)` with `return_probabilities=True`); a list
    of images gives a list of those. For a model of K >= 2 classes the mask is H x W uint8
    class indices and the probabilities K x H x W float32. Images are run `batch_size` at a
    time. The model is moved to `device` (default: the best available) and put in eval mode.

    `engine` runs the model (see `segdino.inference.engines`): "torch" (eager, the default),
    "compile" (`torch.compile`) or "onnx" (exported at once, run by ONNX Runtime).
    `precision` "auto" (the default) is bf16 autocast where the hardware computes bf16
    natively, float32 elsewhere (`segdino.runtime.resolve_precision`); "fp32" or "bf16" choose.
    `tta` "flip" or "flip2" averages the probabilities over flipped views of each image
    (`segdino.inference.tta`); "none" (the default) runs the image as it is.
    """

    def __init__(
        self,
        model: SegDINO,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        precision: str = "auto",
        engine: str = "torch",
        tta: str = "none",
    ) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: expected 1 or more")
        if tta not in TTA_VIEWS:
            raise UserError(f"--tta {tta}: expected one of {', '.join(TTA_VIEWS)}")
        self.tta = tta
        self.device = pick_device(None if device is None else str(device))
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()
        self.engine = make_engine(self.model, self.device, precision, engine)
        self.precision = self.engine.precision  # "auto" resolved: "fp32" or "bf16"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        backbone: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        precision: str = "auto",
        engine: str = "torch",
        tta: str = "none",
        *,
        allow_other_backbone: bool = False,
    ) -> Predictor:
        """A predictor for a checkpoint in our format or the reference's `.pth` layout
        (`backbone` and `allow_other_backbone` as `load_segdino` takes them)."""
        model = load_segdino(path, backbone, allow_other_backbone=allow_other_backbone)
        return cls(model, device, batch_size, precision, engine, tta)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The (3, h, w) network input for an RGB image, by the model's preprocessing."""
        pre = self.model.preprocessing
        return image_to_tensor(image, pre.input_size, pre.mean, pre.std, pre.resize)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities, float32 on the CPU, for a preprocessed batch (B, 3, h, w): the
        foreground's (B, 1, h, w) for one class (sigmoid), else each class's (B, K, h, w)
        (softmax); averaged over the flipped views of `tta`."""
        return averaged(self._view_probabilities, batch, self.tta)

    def _view_probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return _probabilities(self.engine(batch)).cpu()

    def member_probabilities(self, images: Sequence[Image.Image]) -> list[list[np.ndarray]]:
        """Each ensemble member's probabilities (as `to_size` gives them) per RGB image, at
        its size, each averaged over `tta`'s views as `probabilities` are; run in eager
        PyTorch whatever the engine (the engines run the combined model), so an ensemble's
        members cost a second pass."""
        out = []
        for chunk in chunks(images, self.batch_size):
            batch = torch.stack([self.preprocess(image) for image in chunk]).to(self.device)
            probs = averaged(self._member_view, batch, self.tta)  # (members, B, C, h, w)
            out += [[to_size(p[i], (image.height, image.width)) for p in probs]
                    for i, image in enumerate(chunk)]
        return out

    def _member_view(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model.member_logits(self.model.features(batch), batch.shape[-2:])
        return torch.stack([_probabilities(member) for member in logits]).cpu()

    def decide(self, prob: np.ndarray) -> np.ndarray:
        """The mask for `to_size`'s probabilities: bool H x W, foreground above the threshold
        (one class), or uint8 H x W, the most probable class (K classes)."""
        if prob.ndim == 2:
            return prob > self.model.preprocessing.threshold
        return prob.argmax(0).astype(np.uint8)

    def _predict(self, sources: Sequence[ImageSource], with_prob: bool) -> Iterator[Prediction]:
        for chunk in chunks(sources, self.batch_size):
            images = [load_rgb(source) for source in chunk]
            probs = self.probabilities(torch.stack([self.preprocess(im) for im in images]))
            for image, prob in zip(images, probs, strict=True):
                full = to_size(prob, (image.height, image.width))
                mask = self.decide(full)
                yield (mask, full) if with_prob else mask

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        return_probabilities: bool = False,
    ) -> Prediction | list[Prediction]:
        if isinstance(images, list | tuple):
            return list(self._predict(images, return_probabilities))
        return next(self._predict([images], return_probabilities))
