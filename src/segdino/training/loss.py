"""The training losses: BCE (+ soft Dice) for one class, cross-entropy (+ soft Dice) for more."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segdino.data.masks import IGNORE_INDEX

BINARY_LOSSES = ("bce", "bce+dice")  # one class: sigmoid
CLASS_LOSSES = ("ce", "ce+dice")  # K >= 2 classes: softmax
LOSSES = BINARY_LOSSES + CLASS_LOSSES


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image and channel, averaged; both (B, C, H, W)."""
    prob, target = prob.flatten(2), target.flatten(2)
    overlap = (prob * target).sum(2)
    return (1 - (2 * overlap + 1) / (prob.sum(2) + target.sum(2) + 1)).mean()


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss `kind` of a batch. One class: BCE (+ soft Dice of the sigmoid) against 0/1
    masks (B, 1, H, W). K classes: cross-entropy (+ soft Dice of the softmax over the
    foreground classes) against class indices (B, H, W), pixels IGNORE_INDEX left out."""
    if kind in BINARY_LOSSES:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss + dice_loss(logits.sigmoid(), target) if kind == "bce+dice" else loss
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    if kind == "ce":
        return loss
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2)
    return loss + dice_loss((logits.softmax(1) * valid)[:, 1:], (onehot * valid)[:, 1:].float())
