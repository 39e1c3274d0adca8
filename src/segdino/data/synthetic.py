"""A small synthetic segmentation dataset in the reference layout, for the demo and tests.

Each image is a muted, textured background (low-frequency waves plus pixel noise) with one
or two ellipses of a warmer, brighter colour; the mask marks the ellipses. The foreground
differs from the background in colour and brightness, not only in texture, because the demo
trains on the features of a randomly initialised backbone, which keep colour but not much
else. Image sizes vary around `size`, so metrics at each image's own resolution get tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segdino.errors import UserError

SPLITS = ("train", "val", "test")


def _sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One (H x W x 3 uint8 image, H x W bool mask), its size within 15% of `size`."""
    h, w = (int(round(s * rng.uniform(0.85, 1.15))) for s in size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    background = rng.uniform(50, 110, 3).astype(np.float32)
    waves = np.zeros((h, w), np.float32)
    for _ in range(2):
        fy, fx = rng.uniform(0.02, 0.12, 2)
        waves += 15 * np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))
    image = background + waves[..., None]

    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 3)):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        ay, ax = rng.uniform(0.1, 0.25, 2) * min(h, w)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / ax
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ay
        blob = u**2 + v**2 <= 1
        # Warmer and brighter than the background by a varying margin (the contrast).
        lift = rng.uniform(50, 110) * np.array([1.0, 0.55, 0.35], np.float32)
        image[blob] = background + lift + 0.5 * waves[blob, None]
        mask |= blob

    image += 10 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def make_synthetic_dataset(
    root: Path,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> Path:
    """Write `root/{train,val,test}/{image,mask}/NNNN.png` and return `root`.

    `size` is the typical (height, width). Masks are 0/255 grayscale PNGs. `n_val=0` writes
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
            image, mask = _sample(np.random.default_rng([seed, split_no, i]), size)
            # Fast PNG compression: the files are small and written often (tests, demo).
            Image.fromarray(image, "RGB").save(image_dir / f"{i:04d}.png", compress_level=1)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(
                mask_dir / f"{i:04d}.png", compress_level=1
            )
    return root
