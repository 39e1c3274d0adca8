"""Flags that several commands share, each declared once: one canonical spelling, and as
aliases the names some commands used before and the reference's spellings."""

from __future__ import annotations

import argparse
import os

from segdino.argtypes import int_at_least, open_unit_float
from segdino.progress import drawing
from segdino.statistics import DEFAULT_RESAMPLES

MAX_DEFAULT_WORKERS = 8  # more data-loading processes than this rarely speed anything up


def default_workers() -> int:
    """Data-loading processes: the CPUs this process may run on (its affinity, not the
    machine's count, so a container's or `taskset`'s limit counts), capped."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def add_backbone(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--dino-ckpt (alias --backbone), the DINOv3 weights, as `args.dino_ckpt`."""
    parser.add_argument("--dino-ckpt", "--backbone", dest="dino_ckpt", metavar="WEIGHTS",
                        help=help_text)


def add_progress(parser: argparse.ArgumentParser) -> None:
    """--no-progress (alias --quiet), as `args.no_progress`."""
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bars (where the output is not a terminal there are "
                        "none anyway: a line per epoch or step instead)")


def progress_bars(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: asked for, and onto a terminal (`segdino.progress`'s
    rule, which the library applies too)."""
    return drawing(not args.no_progress)


def add_threshold(parser: argparse.ArgumentParser, dest: str, help_text: str) -> None:
    """--threshold (alias --dice-thr, the reference's name), the foreground probability."""
    parser.add_argument("--threshold", "--dice-thr", dest=dest, type=open_unit_float,
                        metavar="T", help=help_text)


def add_workers(parser: argparse.ArgumentParser, dest: str = "num_workers", minimum: int = 0,
                default: int | None = None, help_text: str = "data-loading processes") -> None:
    """--num-workers (alias --workers)."""
    parser.add_argument("--num-workers", "--workers", dest=dest, type=int_at_least(minimum),
                        metavar="N", default=default, help=help_text)


def add_seed(parser: argparse.ArgumentParser, default: int | None,
             help_text: str | None = None) -> None:
    parser.add_argument("--seed", type=int, default=default, help=help_text)


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    """--bootstrap N, the resamples of a bootstrap confidence interval (`segdino.statistics`),
    and --seed (default 0), the seed they are drawn from."""
    parser.add_argument("--bootstrap", type=int_at_least(1), default=DEFAULT_RESAMPLES,
                        metavar="N", help="bootstrap resamples for each 95%% confidence "
                        "interval")
    add_seed(parser, 0, "the bootstrap's seed (the same seed, the same intervals)")


def add_allow_other_backbone(parser: argparse.ArgumentParser) -> None:
    """`--allow-other-backbone`, for the commands that load a checkpoint with a backbone given."""
    parser.add_argument("--allow-other-backbone", action="store_true",
                        help="use the backbone weights given even when they are not those the "
                        "checkpoint was trained with (its recorded SHA-256; for a reference "
                        ".pth, its own backbone.* weights)")


def add_tta(parser: argparse.ArgumentParser) -> None:
    """--tta, test-time augmentation by flips (`segdino.inference.tta`)."""
    from segdino.inference.tta import TTA_VIEWS  # torch: see add_engine_flags

    parser.add_argument("--tta", choices=list(TTA_VIEWS), default="none",
                        help="test-time augmentation: flip (the image and its horizontal "
                        "mirror) or flip2 (also the vertical mirror and both), probabilities "
                        "averaged; each view costs one more forward pass")


def add_engine_flags(parser: argparse.ArgumentParser, precision: str = "auto") -> None:
    """--precision (default `precision`) and --engine, as `segdino predict` and `segdino test`
    take them."""
    # Here, not at the top: the other flags are shared by `segdino prepare`, which runs
    # without importing torch.
    from segdino.inference.engines import ENGINES
    from segdino.runtime import INFERENCE_PRECISIONS

    auto = "bf16 where the CPU or GPU computes it natively, else fp32"
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=precision,
                        help=f"auto ({auto}), fp32 or bf16 mixed precision (default "
                        f"{precision})")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch (default: eager PyTorch), compile (torch.compile: slow "
                        "first batch, then faster) or onnx (ONNX Runtime, float32; needs "
                        "segdino[onnx])")
