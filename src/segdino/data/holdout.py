"""Seeded hold-outs: the one rule by which training and `segdino prepare` set data aside.

The order is a hash of the seed and each item's id, so it depends neither on the order the
files were listed in nor on the Python or NumPy version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from segdino.errors import UserError

Pair = tuple[Path, Path]


def seeded_order(ids: list[str], seed: int) -> list[str]:
    """`ids` in an order fixed by `seed`."""
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}/{i}".encode()).hexdigest())


def share(n: int, fraction: float) -> int:
    """How many of `n` items a `fraction` holds out: at least one, and one kept, once n >= 2."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(round(fraction * n), 1), n - 1)


def holdout(pairs: list[Pair], fraction: float = 0.1, seed: int = 0
            ) -> tuple[list[Pair], list[Pair]]:
    """Split (image, mask) pairs into (train, val), a seeded `fraction` held out by image
    stem; `fraction` 0 holds nothing out. Both lists come back sorted by image path."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"validation fraction {fraction}: expected a number from 0 to below 1")
    order = seeded_order([image.stem for image, _ in pairs], seed)
    held = set(order[: share(len(order), fraction)])
    ordered = sorted(pairs)
    return ([p for p in ordered if p[0].stem not in held],
            [p for p in ordered if p[0].stem in held])
