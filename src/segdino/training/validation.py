"""Scoring the model during training: a batch's masks, its Dice, and a validation pass.

The pass's overlays are drawn at each image's own aspect ratio (the network sees it squashed
to the input size), as long on their longest side as the input, named and scored."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

import segdino.metrics as metrics
from segdino.data.dataset import SegmentationDataset
from segdino.data.images import open_image
from segdino.data.transforms import denormalise
from segdino.runtime import autocast, batches
from segdino.training.config import TrainConfig
from segdino.training.loss import compute_loss
from segdino.visualize import MIN_SIDE, caption, figure, fitted, grid

if TYPE_CHECKING:
    from segdino.training.loop import TrainingStep

Shown = tuple[int, np.ndarray, np.ndarray, dict[str, float]]  # (index, pred, truth, scores)


def batch_masks(logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """A batch's predicted and true masks (B, H, W) in NumPy: bool for one class (sigmoid
    above --dice-thr), else class indices (argmax; ignored truth pixels IGNORE_INDEX)."""
    if cfg.num_classes == 1:
        return ((logits.float().sigmoid() > cfg.dice_thr).cpu().numpy()[:, 0],
                masks.cpu().numpy()[:, 0] > 0.5)
    return logits.argmax(1).cpu().numpy(), masks.cpu().numpy()


@torch.no_grad()
def validate(step: TrainingStep, loader: DataLoader, images: SegmentationDataset, cfg: TrainConfig,
             device: torch.device) -> tuple[dict[str, float], list[Shown]]:
    """Mean loss, Dice and IoU at the input size (for K classes, the mean over the foreground
    classes), and what `overlay_grid` draws of the first images (drawn only for an epoch
    that improves: a tenth of a second per tile)."""
    step.model.eval()
    losses, dices, ious, shown = [], [], [], []
    for inputs, masks, index in batches(loader):
        inputs, masks = inputs.to(device), masks.to(device)
        with autocast(device, cfg.precision):
            logits = step(inputs)
        losses.append(compute_loss(logits.float(), masks, cfg.loss).item() * len(inputs))
        preds, truths = batch_masks(logits, masks, cfg)
        for i, pred, truth in zip(index.tolist(), preds, truths, strict=True):
            dices.append(metrics.foreground_mean(metrics.dice, pred, truth, cfg.num_classes))
            ious.append(metrics.foreground_mean(metrics.iou, pred, truth, cfg.num_classes))
            if len(shown) < 8:
                shown.append((i, pred, truth, {"Dice": dices[-1], "IoU": ious[-1]}))
    n = max(len(dices), 1)
    return {"val_loss": sum(losses) / n, "val_dice": float(np.mean(dices)),
            "val_iou": float(np.mean(ious))}, shown


def overlay_grid(images: SegmentationDataset, shown: list[Shown], cfg: TrainConfig
                 ) -> np.ndarray:
    """`val_overlays.jpg`: the tiles of `validate`'s first images (`images` holds them, for
    when the pass ran on cached features)."""
    return grid([_tile(images, i, pred, truth, cfg, scores) for i, pred, truth, scores in shown])


def _tile(images: SegmentationDataset, i: int, pred: np.ndarray, truth: np.ndarray,
          cfg: TrainConfig, scores: dict[str, float]) -> np.ndarray:
    """Validation image `i`'s figure: the input-size picture and masks stretched back to the
    image's proportions, as long as the input (at least MIN_SIDE), with its name and scores."""
    image_path = images.pairs[i][0]
    size = fitted(open_image(image_path).size, max(MIN_SIDE, *images.size))
    return figure(denormalise(images[i][0]), pred, truth, cfg.num_classes,
                  caption(image_path.name, scores), cfg.class_names, size=size)


def batch_dice(logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig) -> list[float]:
    """The Dice of each image of a training batch (for the progress bar); for K classes,
    the mean over the foreground classes."""
    return [metrics.foreground_mean(metrics.dice, p, t, cfg.num_classes)
            for p, t in zip(*batch_masks(logits, masks, cfg), strict=True)]
