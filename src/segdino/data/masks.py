"""How mask files become training targets and truths: binary, or class indices.

A one-class (binary) model reads masks as foreground/background, by `files.read_mask`'s
rule (which refuses masks that look like classes, naming the flags below). A model of K >= 2
classes reads every pixel as a class index 0..K-1, 0 being the background, and never
binarises:

- a grayscale PNG (8 or 16 bit): its values are the classes;
- a palette ("P" mode) PNG: its palette indices are the classes (the colours do not matter);
- with a class map (`--class-map "0:0,128:1,255:2"`, pixel value : class), whatever values
  the map names, in either kind of file.

A pixel whose value is the ignore index (`--ignore-index N`, N >= K), or that the map sends to
it, belongs to no class: it is left out of the loss and of the metrics. Any other value is
an error that names the file and the values.

In NumPy a class mask is H x W uint8 with ignored pixels IGNORED (255); as a training
target it is an int64 tensor with ignored pixels IGNORE_INDEX (-100, the default
`ignore_index` of `torch.nn.functional.cross_entropy`, so the loss skips them by itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdino.data.files import read_mask
from segdino.data.images import open_image
from segdino.data.transforms import mask_to_tensor
from segdino.errors import UserError

MAX_CLASSES = 255  # class indices are uint8, and 255 is kept for ignored pixels
IGNORED = 255
IGNORE_INDEX = -100


def parse_class_map(text: str) -> dict[int, int]:
    """`"0:0,128:1,255:2"` as {pixel value: class}; a UserError naming `--class-map`."""
    mapping: dict[int, int] = {}
    for item in text.split(","):
        value, _, label = item.strip().partition(":")
        try:
            value_int, label_int = int(value), int(label)
        except ValueError:
            raise UserError(f"--class-map {text!r}: expected VALUE:CLASS pairs separated by "
                            f"commas, e.g. 0:0,128:1,255:2 (got {item.strip()!r})") from None
        if value_int < 0 or value_int in mapping:
            raise UserError(f"--class-map {text!r}: pixel value {value_int} is negative or "
                            "named twice")
        mapping[value_int] = label_int
    return mapping


def _pixel_values(path: Path) -> np.ndarray:
    """A mask file's pixel values (H x W integers), upright by its EXIF orientation: grey
    levels, or a palette image's indices. An RGB file is accepted when it is gray (all
    channels equal)."""
    values = np.asarray(open_image(path))
    if values.ndim == 3:
        # LA or PA: the alpha channel is not part of the mask; RGB(A): taken when it is gray
        if values.shape[2] > 2 and (values[..., :3] != values[..., :1]).any():
            raise UserError(f"{path}: a colour mask (expected class indices as a grayscale "
                            "or palette PNG)")
        values = values[..., 0]
    if values.dtype == bool:  # a 1-bit image
        values = values.astype(np.uint8)
    if not np.issubdtype(values.dtype, np.integer):
        raise UserError(f"{path}: mask of {values.dtype} values (expected integers)")
    return values


@dataclass(frozen=True)
class MaskFormat:
    """How masks are read: binary (`num_classes` 1, the default) or K-class indices, with an
    optional `class_map` (`"value:class,..."`) and `ignore_index`. Bad settings raise a
    UserError naming the flag."""

    num_classes: int = 1
    class_map: str | None = None
    ignore_index: int | None = None
    _lookup: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.num_classes
        if not 1 <= k <= MAX_CLASSES:
            raise UserError(f"--num-classes {k}: expected 1 (binary) to {MAX_CLASSES}")
        if k == 1 and (self.class_map is not None or self.ignore_index is not None):
            raise UserError("--class-map and --ignore-index are for class-index masks: "
                            "give --num-classes 2 or more")
        if self.ignore_index is not None and self.ignore_index < k:
            raise UserError(f"--ignore-index {self.ignore_index}: is a class (0..{k - 1}); "
                            f"expected a value of {k} or more")
        lookup = {} if self.class_map is None else parse_class_map(self.class_map)
        wrong = sorted({c for c in lookup.values() if not 0 <= c < k and c != self.ignore_index})
        if wrong:
            raise UserError(f"--class-map {self.class_map!r}: class(es) {_listed(wrong)} out "
                            f"of range (expected 0..{k - 1}, or the --ignore-index)")
        object.__setattr__(self, "_lookup", lookup)

    @property
    def binary(self) -> bool:
        return self.num_classes == 1

    def _class_of(self, value: int) -> int:
        """The class of a pixel value: 0..K-1, IGNORED, or -1 when it has none."""
        unmapped = IGNORED if value == self.ignore_index else -1
        if self._lookup:
            label = self._lookup.get(value, unmapped)
        else:
            label = value if value < self.num_classes else unmapped
        return IGNORED if label == self.ignore_index else label

    def read(self, path: Path) -> np.ndarray:
        """The mask file as bool H x W (binary) or uint8 class indices (ignored: IGNORED)."""
        if self.binary:
            return read_mask(path)
        values = _pixel_values(path)
        unique, inverse = np.unique(values, return_inverse=True)
        table = np.array([self._class_of(int(v)) for v in unique])
        bad = unique[table < 0]
        if bad.size:
            if self._lookup:
                expected = f"in --class-map {self.class_map}"
            else:
                expected = f"a class 0..{self.num_classes - 1} (see --num-classes, --class-map)"
            ignore = "" if self.ignore_index is None else f" or --ignore-index {self.ignore_index}"
            raise UserError(f"{path}: value(s) {_listed(bad.tolist())} not {expected}{ignore}")
        return table[inverse].reshape(values.shape).astype(np.uint8)

    def resize(self, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A mask from `read` at `size` = (h, w), by nearest neighbour."""
        if self.binary:
            return mask_to_tensor(mask, size)[0].numpy() > 0.5
        height, width = size
        return np.asarray(Image.fromarray(mask, "L").resize((width, height),
                                                            Image.Resampling.NEAREST))

    def to_tensor(self, mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """The training target at `size`: [1, h, w] float 0/1 (binary), or [h, w] int64
        class indices with ignored pixels IGNORE_INDEX."""
        if self.binary:
            return mask_to_tensor(mask, size)
        target = torch.from_numpy(self.resize(mask, size).astype(np.int64))
        target[target == IGNORED] = IGNORE_INDEX
        return target


BINARY = MaskFormat()


def _listed(values: list, limit: int = 8) -> str:
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(map(str, values[:limit])) + more
