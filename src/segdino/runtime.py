"""Where and in what precision the model runs: device choice and autocast."""

from __future__ import annotations

import contextlib

import torch

from segdino.errors import UserError

PRECISIONS = ("fp32", "bf16")


def pick_device(name: str | None = None) -> torch.device:
    """The named device, else the best available one: CUDA, then Apple MPS, then CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"--device {name}: expected cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError(f"--device {name}: Apple MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 mixed precision on `device`, or nothing for fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
