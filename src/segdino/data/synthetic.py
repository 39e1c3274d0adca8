"""A small synthetic segmentation dataset in the reference layout, for the demo and tests.

Each image is a muted, textured background (low-frequency waves plus pixel noise) with one
or two ellipses of a warmer, brighter colour; the mask marks the ellipses. The foreground
differs from the background in colour and brightness, not only in texture, because the demo
trains on the features of a randomly initialised backbone, which keep colour but not much
else. Image sizes vary around `size`, so metrics at each image's own resolution get tested.

With `num_classes` K >= 2, each image has one ellipse of each class 1..K-1, each class lifted
towards its own colour, and the masks hold class indices (0 the background).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segdino.errors import UserError

SPLITS = ("train", "val", "test")
# Per class, how much each of R, G, B is lifted: class 1 warm (the binary data's), then cold,
# green, and so on; repeated beyond the last.
TINTS = ((1.0, 0.55, 0.35), (0.3, 0.6, 1.0), (0.35, 1.0, 0.4), (1.0, 0.3, 1.0), (1.0, 1.0, 0.3))


def sample_pair(rng: np.random.Generator, size: tuple[int, int], num_classes: int = 1,
                jitter: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """One (H x W x 3 uint8 image, H x W uint8 class mask), its size within `jitter` (a
    fraction) of `size`: one or two ellipses of class 1 (binary), or one of each class 1..K-1."""
    h, w = (int(round(s * rng.uniform(1 - jitter, 1 + jitter))) for s in size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    background = rng.uniform(50, 110, 3).astype(np.float32)
    waves = np.zeros((h, w), np.float32)
    for _ in range(2):
        fy, fx = rng.uniform(0.02, 0.12, 2)
        waves += 15 * np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))
    image = background + waves[..., None]

    mask = np.zeros((h, w), np.uint8)
    classes = [1] * rng.integers(1, 3) if num_classes == 1 else range(1, num_classes)
    for label in classes:
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ay, ax = rng.uniform(0.1, 0.25, 2) * min(h, w)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / ax
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ay
        blob = u**2 + v**2 <= 1
        # Warmer and brighter than the background by a varying margin (the contrast).
        lift = rng.uniform(50, 110) * np.array(TINTS[(label - 1) % len(TINTS)], np.float32)
        image[blob] = background + lift + 0.5 * waves[blob, None]
        mask[blob] = label  # a later ellipse covers an earlier one

    image += 10 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def make_synthetic_dataset(
    root: Path,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    num_classes: int = 1,
) -> Path:
    """Write `root/{train,val,test}/{image,mask}/NNNN.png` and return `root`.

    `size` is the typical (height, width). Masks are 0/255 grayscale PNGs, or with
    `num_classes` K >= 2 grayscale PNGs of class indices 0..K-1. `n_val=0` writes
    no `val/` folder (so training holds out part of `train`). Each image depends only on
    `seed`, its split and its number, so a larger dataset extends a smaller one.
    `root` must be empty or absent, so that no stale file joins the dataset.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root}: folder is not empty (expected a new or empty folder)")
    counts = dict(zip(SPLITS, (n_train, n_val, n_test), strict=True))
    for split_no, split in enumerate(SPLITS):
        if counts[split] == 0:
            continue
        image_dir, mask_dir = root / split / "image", root / split / "mask"
        image_dir.mkdir(parents=True)
        mask_dir.mkdir()
        for i in range(counts[split]):
            rng = np.random.default_rng([seed, split_no, i])
            image, mask = sample_pair(rng, size, num_classes)
            # Fast PNG compression: the files are small and written often (tests, demo).
            Image.fromarray(image, "RGB").save(image_dir / f"{i:04d}.png", compress_level=1)
            Image.fromarray(mask * 255 if num_classes == 1 else mask, "L").save(
                mask_dir / f"{i:04d}.png", compress_level=1
            )
    return root
