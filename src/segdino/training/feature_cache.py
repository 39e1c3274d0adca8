"""Training on cached features.

The backbone is frozen and deterministic, so its feature maps depend only on the image (and
its augmentation). `build_cache` runs it once over the training set, `views` times with
augmentation, and keeps the maps: in memory when they fit, else in a memory-mapped file in the
run folder. Each epoch then trains the decoder from the cache, skipping the backbone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from segdino.errors import UserError
from segdino.models.segdino import SegDINO
from segdino.progress import progress_bar
from segdino.runtime import batches, quiet_worker

CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CACHE_FILE = "feature_cache.{name}.bin"


def available_memory() -> int:
    """Bytes of memory free for use now (Linux and macOS; 4 GiB when unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class FeatureCache(Dataset):
    """(stacked feature maps `(L*D, h, w)`, mask, index) per image; `set_epoch` picks the view."""

    def __init__(self, features: torch.Tensor, masks: torch.Tensor, mask_dtype: torch.dtype,
                 on_disk: bool) -> None:
        self.features = features  # (views, N, L*D, h, w)
        self.masks = masks  # (views, N, ...) int16: binary or class-index masks
        self.mask_dtype = mask_dtype
        self.on_disk = on_disk
        self.view = 0

    def set_epoch(self, epoch: int) -> None:
        self.view = epoch % self.features.shape[0]

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return (self.features[self.view, i].float(),
                self.masks[self.view, i].to(self.mask_dtype), i)


def build_cache(
    model: SegDINO,
    plain: Dataset,
    augmented: Dataset | None,
    views: int,
    dtype: str,
    folder: Path,
    device: torch.device,
    seed: int,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    name: str = "train",
    announce: bool = True,
) -> FeatureCache:
    """Run the backbone over a dataset `views` times: view 0 is `plain`, the others are
    `augmented` (each drawn under its own seed, so the cache is reproducible). `name` names
    the memory-mapped file, when one is needed."""
    if views > 1 and augmented is None:
        raise UserError(f"--cache-views {views}: extra views are augmented ones; add --augment")
    if dtype not in CACHE_DTYPES:
        raise UserError(f"--cache-dtype {dtype}: expected one of {', '.join(CACHE_DTYPES)}")
    image, mask, _ = plain[0]
    per_image = model.features(image[None].to(device)).shape[1:]
    shape = (views, len(plain), *per_image)
    torch_dtype = CACHE_DTYPES[dtype]
    nbytes = math.prod(shape) * torch_dtype.itemsize
    on_disk = nbytes > available_memory() // 2
    if on_disk:
        path = folder / CACHE_FILE.format(name=name)
        path.unlink(missing_ok=True)
        features = torch.from_file(str(path), shared=True, size=math.prod(shape),
                                   dtype=torch_dtype).view(shape)
    else:
        features = torch.empty(shape, dtype=torch_dtype)
    masks = torch.empty((views, len(plain), *mask.shape), dtype=torch.int16)
    if announce:
        where = f"a memory-mapped file {path}" if on_disk else "memory"
        print(f"caching {name} features: {views} view(s) of {len(plain)} images, "
              f"{nbytes / 2**20:.0f} MiB as {dtype} in {where}", flush=True)
    for view in range(views):
        torch.manual_seed(seed + 7919 * view)  # the augmentation of view `view`
        loader = DataLoader(augmented if view else plain, batch_size=batch_size,
                            num_workers=num_workers, worker_init_fn=quiet_worker,
                            generator=torch.Generator().manual_seed(seed + 7919 * view))
        bar = progress_bar(batches(loader), progress, total=len(loader), leave=False,
                           desc=f"caching {name} view {view + 1}/{views}")
        for images, batch_masks, index in bar:
            features[view, index] = model.features(images.to(device)).to(torch_dtype).cpu()
            masks[view, index] = batch_masks.to(torch.int16)
    return FeatureCache(features, masks, mask.dtype, on_disk)


class CacheSubset(Dataset):
    """Some of a cache's images, numbered from 0 (cross-validation's folds share one cache);
    `plain` reads view 0 always (held-out images are never augmented)."""

    def __init__(self, cache: FeatureCache, indices: list[int], plain: bool = False) -> None:
        self.cache, self.indices, self.plain = cache, indices, plain

    def set_epoch(self, epoch: int) -> None:
        self.cache.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        view, i = 0 if self.plain else self.cache.view, self.indices[j]
        return (self.cache.features[view, i].float(),
                self.cache.masks[view, i].to(self.cache.mask_dtype), j)
