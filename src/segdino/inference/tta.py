"""Test-time augmentation by flips: the model runs on each flipped view of a batch, each
view's probabilities are flipped back, and their mean is the prediction.

`flip` averages the image and its horizontal mirror; `flip2` the four views that horizontal
and vertical mirroring make together (none, horizontal, vertical, both), as nnU-Net mirrors
every axis. Probabilities are averaged, not logits: the mean is then itself a probability
that each view agrees with in its units. Flips are of the network's input (after resizing),
so the resize is done once per image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# mode -> the dims each view flips on a (B, C, H, W) tensor: -1 horizontal, -2 vertical
TTA_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (-1,)),
    "flip2": ((), (-1,), (-2,), (-2, -1)),
}


def averaged(probabilities: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
             mode: str) -> torch.Tensor:
    """The mean over `mode`'s views of `probabilities` of the flipped batch, flipped back."""
    total = None
    for dims in TTA_VIEWS[mode]:
        view = probabilities(batch.flip(dims) if dims else batch)
        view = view.flip(dims) if dims else view
        total = view if total is None else total + view
    return total / len(TTA_VIEWS[mode])
