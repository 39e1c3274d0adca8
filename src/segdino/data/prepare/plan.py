"""What a dataset module hands back: which (image, mask) pairs go to which split.

Also the few rules the datasets share: pairing a list of images with a masks folder and the
note when a count differs from the full dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segdino.data.files import list_images, pair_by_stem

Pair = tuple[Path, Path]


@dataclass(frozen=True)
class Options:
    """The user's choices; each dataset module names the ones it reads in its `OPTIONS`."""

    fold: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    masks: Path | None = None
    mask_suffix: str = ""


@dataclass
class Split:
    pairs: list[Pair]
    source: str  # where in SOURCE the pairs come from and by which rule, for split.json


@dataclass
class Plan:
    splits: dict[str, Split]  # "train", "val", "test"
    problems: list[str] = field(default_factory=list)  # one line each, the file named
    notes: list[str] = field(default_factory=list)  # worth a warning, not an error


def find_pairs(
    images: list[Path], masks_dir: Path, mask_suffix: str = ""
) -> tuple[list[Pair], list[str]]:
    """Pair `images` with the masks in `masks_dir`; problems: images without masks and masks
    without images (a sign of a broken download)."""
    masks = list_images(masks_dir)
    pairs, problems = pair_by_stem(images, masks, mask_suffix)
    used = {mask for _, mask in pairs}
    problems += [f"{mask}: a mask without an image" for mask in masks if mask not in used]
    return pairs, problems


def count_note(what: str, found: int, expected: int) -> list[str]:
    if found == expected:
        return []
    return [f"{found} {what} found; the full dataset has {expected}"]
