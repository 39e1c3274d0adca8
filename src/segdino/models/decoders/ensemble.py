"""`MemberHeads` (decoder "ensemble"): K decoders on one backbone's features, and how their
logits combine (the mean of the members' probabilities).

The backbone is frozen, so every member sees the same features: an ensemble costs one
backbone pass and K decoder passes. Each member's logits are resized to the input as its
own decoder says (`SegDINO.decode`), then turned into probabilities and averaged; the
ensemble's output is the logits of that mean (log-odds for one class, log-probabilities
for K), so everything that reads logits (sigmoid or softmax, threshold or argmax, ONNX)
reads an ensemble as it reads one model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NAME = "ensemble"


class MemberHeads(nn.ModuleList):
    """The members' decoders, in order; `members` says each one's decoder and options (what
    a checkpoint records)."""

    align_corners = None  # each member resizes its own logits

    def __init__(self, heads: Sequence[nn.Module], members: list[dict]) -> None:
        super().__init__(heads)
        self.members = members


def mean_probability_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The logits whose sigmoid (one channel) or softmax (K channels) is the mean of the
    members' probabilities, computed in log space so that saturated members stay finite."""
    stacked = torch.stack(list(logits))
    log_k = math.log(stacked.shape[0])
    if stacked.shape[2] == 1:
        log_p = torch.logsumexp(F.logsigmoid(stacked), 0) - log_k
        log_q = torch.logsumexp(F.logsigmoid(-stacked), 0) - log_k
        return log_p - log_q
    return torch.logsumexp(F.log_softmax(stacked, 2), 0) - log_k
