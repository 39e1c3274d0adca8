"""Flags that several commands share, each declared once."""

from __future__ import annotations

import argparse

from segdino.inference.engines import ENGINES
from segdino.runtime import INFERENCE_PRECISIONS


def add_allow_other_backbone(parser: argparse.ArgumentParser) -> None:
    """`--allow-other-backbone`, for the commands that load a checkpoint with a backbone given."""
    parser.add_argument("--allow-other-backbone", action="store_true",
                        help="use the backbone weights given even when they are not those the "
                        "checkpoint was trained with (its recorded SHA-256; for a reference "
                        ".pth, its own backbone.* weights)")


def add_engine_flags(parser: argparse.ArgumentParser, precision: str = "auto") -> None:
    """--precision (default `precision`) and --engine, as `segdino predict` and `segdino test`
    take them."""
    auto = "bf16 where the CPU or GPU computes it natively, else fp32"
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=precision,
                        help=f"auto ({auto}), fp32 or bf16 mixed precision (default "
                        f"{precision})")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch (default: eager PyTorch), compile (torch.compile: slow "
                        "first batch, then faster) or onnx (ONNX Runtime, float32; needs "
                        "segdino[onnx])")
