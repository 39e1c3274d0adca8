"""Image/mask pairs of one split on disk, and the torch Dataset that reads them.

A split folder has the reference layout `SPLIT/{IMG_DIR,MASK_DIR}/`, image and mask paired
by file stem. Every pair is decoded once up front so that a bad dataset fails before training
starts, with every problem listed in one error.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segdino.data.files import check_pair, list_images, pair_by_stem, raise_problems
from segdino.data.holdout import Pair
from segdino.data.masks import BINARY, MaskFormat
from segdino.data.transforms import Augment, image_to_tensor, load_rgb
from segdino.errors import UserError


def _with_ext(paths: list[Path], ext: str | None) -> list[Path]:
    """The paths whose extension is `ext` (".png" or "png", any case); all if None."""
    if ext is None:
        return paths
    wanted = "." + ext.lower().lstrip(".")
    return [p for p in paths if p.suffix.lower() == wanted]


def _shared_stems(paths: list[Path], flag: str) -> list[str]:
    """A problem line per stem that several files share (pairing by stem is then ambiguous)."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        by_stem[p.stem.lower()].append(p.name)
    return [
        f"{paths[0].parent}: {', '.join(names)} share a stem (pick one type with {flag})"
        for names in by_stem.values()
        if len(names) > 1
    ]


def find_pairs(
    split_dir: Path,
    img_dir_name: str = "image",
    mask_dir_name: str = "mask",
    img_ext: str | None = None,
    mask_ext: str | None = None,
    mask_format: MaskFormat = BINARY,
) -> list[Pair]:
    """The (image, mask) pairs of `split_dir`, in image-name order, each checked readable.

    Images are the files of `split_dir/img_dir_name` with extension `img_ext` (default: any
    common image type); each is paired with the file of `split_dir/mask_dir_name` of the same
    stem (and extension `mask_ext` if given). A missing mask, an unreadable file, an image
    and mask of different sizes, two files of one stem, or (class-index `mask_format`) a
    mask value that is no class: one UserError listing them all.
    """
    split_dir = Path(split_dir)
    img_folder, mask_folder = split_dir / img_dir_name, split_dir / mask_dir_name
    images = _with_ext(list_images(img_folder), img_ext)
    if not images:
        of_type = f" of type {img_ext}" if img_ext else ""
        raise UserError(f"{img_folder}: no images{of_type} (expected the split's images)")
    masks = _with_ext(list_images(mask_folder), mask_ext)
    problems = _shared_stems(images, "--img_ext") + _shared_stems(masks, "--mask_ext")
    pairs, missing = pair_by_stem(images, masks)
    problems += missing
    # Decoding dominates; PIL releases the GIL while decoding, so threads run in parallel.
    with ThreadPoolExecutor() as pool:
        problems += [p for p in pool.map(
            lambda pair: check_pair(*pair, mask_format.read), pairs) if p]
    raise_problems(str(split_dir), problems)
    return pairs


class SegmentationDataset(Dataset):
    """(image [3, h, w] float32 normalised, target, index) per pair; the target is
    `mask_format.to_tensor`'s: [1, h, w] float32 0/1 (binary, the default) or [h, w] int64 classes.

    With `augment`, each item draws its augmentation seed from torch's generator, so
    `torch.manual_seed` makes runs reproducible, in the main process and in DataLoader
    workers alike (each worker's torch generator is seeded from the base seed).
    """

    def __init__(self, pairs: list[Pair], size: tuple[int, int], augment: bool = False,
                 mask_format: MaskFormat = BINARY, resize: str = "bicubic") -> None:
        self.pairs = list(pairs)
        self.resize = resize
        self.size = size
        self.augment = Augment() if augment else None
        self.mask_format = mask_format

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_path, mask_path = self.pairs[i]
        image, mask = load_rgb(image_path), self.mask_format.read(mask_path)
        if image.size != (mask.shape[1], mask.shape[0]):
            raise UserError(f"{image_path}: image and its mask {mask_path.name} differ in size")
        if self.augment is not None:
            rng = np.random.default_rng(torch.randint(2**31, ()).item())
            image, mask = self.augment(image, mask, rng)
        x = image_to_tensor(image, self.size, resize=self.resize)
        return x, self.mask_format.to_tensor(mask, self.size), i
