"""The two feed-forward networks of DINOv3: a GELU MLP and SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(dim: int, ratio: float, align: int) -> int:
    """SwiGLU width: two thirds of `dim * ratio`, rounded up to a multiple of `align`."""
    hidden = int(dim * ratio * 2 / 3)
    return hidden + (-hidden % align)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)  # gate
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


FFNS: dict[str, type[nn.Module]] = {"mlp": Mlp, "swiglu": SwiGLU}
