"""Decoding image files as a viewer shows them, for images and masks alike.

- EXIF orientation is applied (`ImageOps.exif_transpose`), to images and masks alike, as the
  reference's OpenCV decoder does for images: a phone photo is read upright, and a mask drawn
  over the upright view lines up with it. Predictions come out at the upright size.
- A file that declares more than `PIL.Image.MAX_IMAGE_PIXELS` pixels (a decompression bomb,
  or a scan far beyond any network input) is refused with one line naming it, before any
  pixel is decoded.
- `to_rgb` gives the RGB pixels OpenCV's `IMREAD_COLOR` gives: 16-bit and 32-bit integer
  grayscale shifted right by 8 (not clipped to white), CMYK converted, palette looked up,
  alpha dropped.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from segdino.errors import UserError, first_line

_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# PIL warns (rather than raises) on the first factor of two over its limit, and a warning
# filter is process-wide state: header parsing holds this lock while the filter is changed, so
# that the loaders' threads neither lose the filter nor leave it behind.
_OPEN_LOCK = threading.Lock()


def open_image(path: str | Path, reduced: bool = False) -> Image.Image:
    """The file's image, fully decoded and upright; a UserError naming the file if it is
    unreadable (truncated, not an image) or too large to decode safely.

    `reduced`, for checking a file only: a JPEG is decoded at an eighth of its size
    (libjpeg's DCT scaling, about twice as fast), which still reads and checks every byte."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except _BOMBS as exc:
        raise UserError(f"{path}: too many pixels to decode safely ({first_line(exc)}); "
                        "raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted") from None
    except Exception as exc:  # PIL raises many types for bad files
        raise UserError(f"{path}: unreadable image ({type(exc).__name__})") from None
    with im:
        try:
            if reduced:
                im.draft(None, (1, 1))  # a no-op for formats other than JPEG
            im.load()  # a full decode: a truncated file passes a header check
            upright = oriented(im)
        except Exception as exc:  # PIL raises many types for bad files
            raise UserError(f"{path}: unreadable image ({type(exc).__name__})") from None
    upright.format = im.format  # kept: a JPEG's values are noisy (see files.read_mask)
    return upright


def oriented(im: Image.Image) -> Image.Image:
    """`im` turned upright by its EXIF orientation tag (a copy; the same pixels if none)."""
    return ImageOps.exif_transpose(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as 8-bit RGB, as OpenCV's IMREAD_COLOR decodes it (`im` itself if it is)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I"):  # I;16, I;16B, I (32-bit): PIL's convert would clip at 255
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        return Image.fromarray((wide >> 8).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")
