"""Finding images and masks on disk, pairing them and reading masks.

Shared by the training datasets and by `segdino prepare`, so that both pair files and
binarise masks by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from segdino.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (expected a folder of images)")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def pair_by_stem(
    images: Iterable[Path], masks: Iterable[Path], mask_suffix: str = ""
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair each image with the mask whose stem is the image's stem plus `mask_suffix`.

    Returns the pairs (in image order) and one problem line per image without a mask.
    Matching of the suffix ignores case (ISIC ships both `_segmentation` and `_Segmentation`).
    """
    by_stem = {m.stem.lower(): m for m in masks}
    pairs, problems = [], []
    for image in images:
        mask = by_stem.get((image.stem + mask_suffix).lower())
        if mask is None:
            problems.append(f"{image}: no mask named {image.stem}{mask_suffix}.*")
        else:
            pairs.append((image, mask))
    return pairs, problems


def binarise_mask(gray: np.ndarray) -> np.ndarray:
    """Foreground is a value above 127, except in a 0/1 mask (nothing above 1), read as 0/1.

    A threshold, never a dithering conversion: JPEG masks carry compression noise, and an
    empty JPEG mask with noise up to 7 stays empty.
    """
    if gray.max(initial=0) == 1:
        return gray == 1
    return gray > 127


def read_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean H x W array."""
    with Image.open(path) as im:
        return binarise_mask(np.asarray(im.convert("L")))


def check_pair(image: Path, mask: Path) -> str | None:
    """A problem line if either file is unreadable or their sizes differ, else None."""
    sizes = []
    for path in (image, mask):
        try:
            with Image.open(path) as im:
                im.load()  # a full decode: a truncated file passes a header check
                sizes.append(im.size)
        except Exception as exc:  # PIL raises many types for bad files
            return f"{path}: unreadable image ({type(exc).__name__})"
    if sizes[0] != sizes[1]:
        return (
            f"{image}: image is {sizes[0][0]}x{sizes[0][1]} but its mask {mask.name} "
            f"is {sizes[1][0]}x{sizes[1][1]}"
        )
    return None


def raise_problems(what: str, problems: list[str], limit: int = 50) -> None:
    """Raise one UserError listing every problem (the first `limit` in full); a single
    problem, which names its file, is the error's one line."""
    if not problems:
        return
    if len(problems) == 1:
        raise UserError(problems[0])
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    raise UserError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)
