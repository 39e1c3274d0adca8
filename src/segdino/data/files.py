"""Finding images and masks on disk, pairing them, and the one rule that reads a binary mask.

Shared by the training datasets, `segdino test` and `segdino prepare`, so that all of them
pair files and read masks alike.

How a binary mask is read (`read_mask`; class-index masks are `masks.MaskFormat`'s). The file
is decoded upright by its EXIF orientation (`images.open_image`), then by its coding:

- 1-bit: as is.
- Grayscale (8 or 16 bit; RGB whose channels are equal counts as grayscale): a mask of only
  0 and 1 is 0/1; a mask of two values, the lower one dark (below a quarter of the scale),
  has the higher one as foreground (0/255, 0/65535, 0/38 from a palette turned gray);
  otherwise foreground is above half the scale, and values between a quarter and three
  quarters (anti-aliasing, blur, JPEG noise) may only be a thin band along edges.
- Colour on black (a red object is common): foreground is the non-black colour (with JPEG
  noise: brighter than half the brightest pixel); it must be one colour.
- Alpha: when the colour is the same everywhere and only the alpha channel varies, the alpha
  is the mask (read as grayscale); otherwise the alpha is ignored.
- Palette: of at most two used indices, foreground is the one whose colour is not the black
  one (VOC's palette, whose index 1 is a dark red, reads right).

Refused, with the file named and the flags that read it as classes: a lossless grayscale mask
of a few dark levels (0/1/2: `--num-classes 3`; 0/1 with a 255 boundary, VOC style:
`--num-classes 2 --ignore-index 255`), a mask with more than a thin band of mid-grey (0/128/255:
`--class-map`), several colours, a palette of three or more used indices, two palette colours
neither of them black. In a JPEG, dark levels are compression noise (a JPEG cannot keep class
indices) and read as background.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from segdino.data.images import open_image
from segdino.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

DARK, BRIGHT = 0.25, 0.75  # fractions of the scale: below is background, above foreground
EDGE_PX = 2  # how close to background or foreground a mid-grey pixel must be to be edge
MAX_UNCLEAR = 0.005  # the share of pixels that may be off-edge mid-grey (or off-colour)
MAX_CLASS_LEVELS = 8  # more distinct dark levels than this are noise, not class indices
LOSSY_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEG of some cameras


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


def read_mask(path: Path) -> np.ndarray:
    """A binary mask file as a boolean H x W array, by the module's rule; a UserError naming
    the file when the file is unreadable or its coding is not clearly binary."""
    return binary_mask(open_image(path), path)


def binary_mask(im: Image.Image, name: str | Path) -> np.ndarray:
    """A decoded mask image as a boolean H x W array, by the module's rule (`name` is the
    file, for errors). `im.format` (the file's format) tells whether values may be noisy."""
    if im.mode == "1":
        return np.array(im)
    if im.mode in ("P", "PA"):
        return _from_palette(im, name)
    lossy = im.format in LOSSY_FORMATS
    bands = im.getbands()
    if "A" in bands:
        im, alpha = im.convert("RGB" if len(bands) > 2 else "L"), np.asarray(im.getchannel("A"))
        if _constant(np.asarray(im)) and not _constant(alpha):
            return _from_gray(alpha, 255, lossy, name)
    if len(im.getbands()) == 1:
        values = np.asarray(im)
        return _from_gray(values, _gray_scale(im.mode, values), lossy, name)
    rgb = np.asarray(im.convert("RGB"))
    if (rgb == rgb[..., :1]).all():
        return _from_gray(rgb[..., 0], 255, lossy, name)
    return _from_colour(rgb, name)


def _gray_scale(mode: str, values: np.ndarray) -> float:
    """The value of white: 65535 for 16- and 32-bit integer images, 1 for floats up to 1."""
    if mode.startswith("I"):
        return 65535
    if mode == "F" and values.max(initial=0) <= 1:
        return 1.0
    return 255


def _levels(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)`; a mask of two levels (the usual case) found without sorting its
    pixels, several times faster on a photograph-sized mask."""
    low, high = values.min(), values.max()
    ends = np.count_nonzero(values == low) + np.count_nonzero(values == high)
    if low == high or ends == values.size:
        return np.unique([low, high])
    return np.unique(values)


def _from_gray(values: np.ndarray, scale: float, lossy: bool, name: str | Path) -> np.ndarray:
    levels = _levels(values)
    # A JPEG of an empty mask can decode to a constant 1: one level in a JPEG is no 0/1 mask.
    if set(levels.tolist()) <= {0, 1} and not (lossy and len(levels) == 1):
        return values == 1
    if len(levels) == 1:
        return values > scale / 2
    if len(levels) == 2 and levels[0] < DARK * scale:
        return values == levels[1]
    has_mid = ((levels >= DARK * scale) & (levels <= BRIGHT * scale)).any()
    if not lossy and not has_mid and len(levels) <= MAX_CLASS_LEVELS:
        # A few exact levels are class indices, not noise or anti-aliasing (which leave
        # mid-grey): a 0/1/2 mask, or a 0/1 mask with a VOC-style boundary of 255.
        bright = levels[levels > BRIGHT * scale]
        boundary = len(bright) == 1 and bright[0] == scale
        flags = _class_flags(levels.tolist(), boundary)
        raise UserError(f"{name}: values {_listed(levels)} look like class indices, not a "
                        f"binary mask: train and test with {flags}")
    unclear = _off_edge(values < DARK * scale, values > BRIGHT * scale) if has_mid else 0
    if unclear > MAX_UNCLEAR * values.size:
        flags = (_class_flags(levels.tolist(), False) if len(levels) <= MAX_CLASS_LEVELS
                 else "--num-classes K with --class-map VALUE:CLASS,...")
        raise UserError(f"{name}: {unclear / values.size:.1%} of the pixels are mid-grey "
                        f"(neither background nor foreground) away from any edge: a class "
                        f"mask? train and test with {flags}")
    return values > scale / 2


def _from_colour(rgb: np.ndarray, name: str | Path) -> np.ndarray:
    # A coloured object on black is bright in its own channels: its brightness is the
    # largest channel (a red object's luminance, 76, would read as background).
    brightness = rgb.max(axis=2)
    codes, inverse = np.unique(_colour_codes(rgb), return_inverse=True)
    inverse = inverse.reshape(brightness.shape)
    if len(codes) == 2:  # lossless: one colour on black, however dark the colour
        code_brightness = np.maximum.reduce([codes >> 16, codes >> 8 & 255, codes & 255])
        if code_brightness.min() < DARK * 255:
            return inverse != np.argmin(code_brightness)
    top = int(brightness.max())
    if top < DARK * 255:
        return np.zeros(brightness.shape, bool)
    foreground = brightness > top / 2
    # Each colour's hue and saturation, without its brightness: an edge pixel blended with
    # black keeps its object's colour.
    tint = rgb[foreground] / brightness[foreground, None]
    steps = np.round(tint * 4).astype(int) @ np.array([25, 5, 1])
    main = np.bincount(steps).argmax()
    main_tint = np.array([main // 25, main // 5 % 5, main % 5]) / 4
    others = np.abs(tint - main_tint).max(axis=1) > 0.35
    # A second, dimmer colour would sit below the threshold: not black, yet off any edge.
    dim = _off_edge(brightness < DARK * 255, foreground)
    if max(others.sum(), dim) > MAX_UNCLEAR * brightness.size:
        shown = ", ".join(f"#{c:06x}" for c in _main_colours(codes, inverse))
        raise UserError(f"{name}: a mask of several colours ({shown}): a class mask? save "
                        "the classes as indices (grayscale or palette PNG) and train and test "
                        "with --num-classes K")
    return foreground


def _from_palette(im: Image.Image, name: str | Path) -> np.ndarray:
    indices = np.asarray(im.getchannel("P"))
    used = np.unique(indices)
    if len(used) > 2:
        raise UserError(f"{name}: a palette mask using indices {_listed(used)}: a class mask? "
                        f"train and test with {_class_flags(used.tolist(), used[-1] == 255)} (the "
                        "palette indices are the classes)")
    palette = np.zeros((256, 3), int)
    colours = np.asarray(im.getpalette("RGB") or [], int).reshape(-1, 3)
    palette[: len(colours)] = colours
    brightness = palette[used].max(axis=1)
    if len(used) == 1:
        return np.full(indices.shape, brightness[0] >= DARK * 255)
    if brightness.min() >= DARK * 255:
        raise UserError(f"{name}: neither of the palette mask's colours is black, so which one "
                        "is the object is unclear: train and test with --num-classes 2 (index 0 "
                        "the background)")
    return indices != used[np.argmin(brightness)]


def _off_edge(background: np.ndarray, foreground: np.ndarray) -> int:
    """How many pixels are neither `background` nor `foreground` and not within EDGE_PX of
    either (anti-aliasing, blur and JPEG noise leave a thin band along edges, and a small
    object can be all edge)."""
    sides = Image.fromarray((background | foreground).astype(np.uint8) * 255)
    near = np.asarray(sides.filter(ImageFilter.MaxFilter(2 * EDGE_PX + 1))) > 0
    return int((~near).sum())


def _constant(values: np.ndarray) -> bool:
    """Whether every pixel of an H x W (x C) array has the same value."""
    return bool((values == values[0, 0]).all())


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """One integer per pixel, 0xRRGGBB."""
    wide = rgb.astype(np.uint32)
    return (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]


def _main_colours(codes: np.ndarray, inverse: np.ndarray, n: int = 4) -> list[int]:
    counts = np.bincount(inverse.ravel(), minlength=len(codes))
    return [int(codes[i]) for i in np.argsort(-counts)[:n]]


def _class_flags(values: list[int], boundary: bool) -> str:
    """The flags that read masks of these values as classes; with `boundary`, the highest
    value is an outline to ignore (VOC style)."""
    classes = values[:-1] if boundary else values
    flags = f"--num-classes {len(classes)}"
    if classes != list(range(len(classes))):
        flags += " --class-map " + ",".join(f"{v}:{i}" for i, v in enumerate(classes))
    return flags + (f" --ignore-index {values[-1]}" if boundary else "")


def _listed(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_pair(image: Path, mask: Path,
               read: Callable[[Path], np.ndarray] = read_mask) -> str | None:
    """A problem line if the image is unreadable, the mask unreadable by `read` (the binary
    rule, or a class-index format's), or their upright sizes differ; else None."""
    try:
        width, height = open_image(image).size
        mask_height, mask_width = read(mask).shape
    except UserError as exc:
        return str(exc)
    if (width, height) != (mask_width, mask_height):
        return (f"{image}: image is {width}x{height} but its mask {mask.name} "
                f"is {mask_width}x{mask_height}")
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
