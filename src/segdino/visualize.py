"""Pictures for people: prediction/truth overlays with their legend, figures, tile grids.

Colours are Okabe-Ito's, told apart with any common colour blindness and visible on pink
mucosa (where the former magenta was not): the prediction is yellow (a translucent fill plus
an outline), the truth a blue outline drawn on top, and where the two outlines coincide they
are white, so an exact prediction shows as one white line. Outlines are OUTLINE_PER_PX of
the image's longest side thick (at least MIN_OUTLINE_PX), so they show on a 1000-pixel photo
and a 256-pixel tile alike.

`figure` is what a person is shown: the overlay at most MAX_SIDE pixels on its longest side
(larger overlays only take longer to write and to open) and at least MIN_SIDE (so that the
text fits), with a strip above it naming the image, its scores and what each colour means.
Figures are written as JPEG and masks as PNG (`segdino.picture_files`).

Class-index maps (K >= 2 classes) use one colour per class, CLASS_COLOURS: black for the
background (class 0), then the Okabe-Ito colours, then the PASCAL VOC palette. In overlays
the prediction is a translucent fill in its class's colour and the truth an outline in its
class's colour; without a truth the prediction is outlined too. The legend names each
class drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from segdino.metrics.surface import bounding_box
from segdino.picture_files import as_uint8

PRED_COLOUR = (240, 228, 66)  # Okabe-Ito yellow
TRUTH_COLOUR = (0, 114, 178)  # Okabe-Ito blue
BOTH_COLOUR = (255, 255, 255)  # where the two outlines coincide
FILL_ALPHA = 0.35
MIN_OUTLINE_PX = 2
OUTLINE_PER_PX = 1 / 250  # of the longest side: 4 px on a 1000-pixel image
MAX_SIDE = 1024
MIN_SIDE = 320
GAP_PX = 4
BACKGROUND = 255  # white between grid tiles
STRIP_BACKGROUND = (32, 32, 32)  # dark, so the yellow, blue and white swatches all show
TEXT_COLOUR = (255, 255, 255)
FONT_PER_PX = 1 / 55  # of the overlay's width: readable when the picture fills a screen
MIN_FONT_PX = 11
OKABE_ITO = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
             (213, 94, 0), (204, 121, 167))


def _voc_colour(index: int) -> tuple[int, int, int]:
    """Colour `index` of the PASCAL VOC palette: the index's bits spread over R, G and B."""
    rgb = [0, 0, 0]
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return rgb[0], rgb[1], rgb[2]


CLASS_COLOURS = np.array([(0, 0, 0), *OKABE_ITO, *map(_voc_colour, range(8, 256))], np.uint8)


def outline_px(shape: tuple[int, ...]) -> int:
    """How thick outlines are drawn on an image of `shape` (h, w, ...)."""
    return max(MIN_OUTLINE_PX, round(max(shape[:2]) * OUTLINE_PER_PX))


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The mask's pixels within `thickness` of its edge (the image border counts as an edge).
    Eroded on the mask's bounding box only: outside it all is background, as outside the
    image, so the result is the same and a small mask on a large image costs little."""
    edge = np.zeros_like(mask)
    if (box := bounding_box(mask)) is not None:
        edge[box] = mask[box] & ~binary_erosion(mask[box], iterations=thickness,
                                                border_value=0)
    return edge


def _check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if mask.shape != shape:
        raise ValueError(f"{name} mask is {mask.shape} but the image is {shape} (h, w)")
    return mask


def _fill(out: np.ndarray, mask: np.ndarray, colour: Sequence[int]) -> None:
    """Tint `mask`'s pixels of `out` towards `colour`, in place: each channel's value v
    becomes round((1 - FILL_ALPHA) v + FILL_ALPHA c), by a table of the 256 values of v (PIL's
    `point` and `paste` through the mask, several times faster than arithmetic on the pixels)."""
    levels = np.arange(256)
    table = np.concatenate([np.round((1 - FILL_ALPHA) * levels + FILL_ALPHA * c) for c in colour])
    picture = Image.fromarray(out)
    picture.paste(picture.point(table.astype(np.uint8).tolist()), mask=Image.fromarray(mask))
    out[...] = np.asarray(picture)


def overlay(
    image: np.ndarray,
    pred: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    num_classes: int = 1,
) -> np.ndarray:
    """`image` (H x W x 3 uint8) with the prediction filled and outlined in yellow and the
    truth outlined in blue (white where the outlines coincide); `pred` and `truth` are
    H x W boolean masks, either may be None.

    With `num_classes` >= 2 they are class-index maps, drawn class by class in
    CLASS_COLOURS: the prediction filled (and outlined when there is no truth), the truth
    outlined; values that are no class (ignored pixels) are not drawn."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image has shape {image.shape} and dtype {image.dtype}; "
                         "expected H x W x 3 uint8")
    out, thickness = image.copy(), outline_px(image.shape)
    if pred is not None:
        pred = _check_mask(pred, image.shape[:2], "prediction")
    if truth is not None:
        truth = _check_mask(truth, image.shape[:2], "truth")
    if num_classes == 1:
        pred_edge = truth_edge = None
        if pred is not None:
            pred = pred.astype(bool, copy=False)
            _fill(out, pred, PRED_COLOUR)
            pred_edge = _outline(pred, thickness)
            out[pred_edge] = PRED_COLOUR
        if truth is not None:
            truth_edge = _outline(truth.astype(bool, copy=False), thickness)
            out[truth_edge] = TRUTH_COLOUR
        if pred_edge is not None and truth_edge is not None:
            out[pred_edge & truth_edge] = BOTH_COLOUR
        return out
    for c in range(1, num_classes):
        if pred is not None:
            _fill(out, pred == c, CLASS_COLOURS[c])
            if truth is None:
                out[_outline(pred == c, thickness)] = CLASS_COLOURS[c]
        if truth is not None:
            out[_outline(truth == c, thickness)] = CLASS_COLOURS[c]
    return out


def legend(
    pred: np.ndarray | None,
    truth: np.ndarray | None,
    num_classes: int = 1,
    class_names: Sequence[str] | None = None,
) -> list[tuple[tuple[int, int, int], str]]:
    """(colour, meaning) of each colour `overlay` draws for these masks: prediction, truth
    and both for one class; each class present in either mask, by name, for K classes."""
    if num_classes == 1:
        return [entry for entry, drawn in (
            ((PRED_COLOUR, "prediction"), pred is not None),
            ((TRUTH_COLOUR, "truth"), truth is not None),
            ((BOTH_COLOUR, "both"), pred is not None and truth is not None)) if drawn]
    present = set().union(*(np.unique(m).tolist() for m in (pred, truth) if m is not None))
    return [(tuple(int(v) for v in CLASS_COLOURS[c]),
             class_names[c] if class_names else f"class {c}")
            for c in range(1, num_classes) if c in present]


def caption(name: str, scores: Mapping[str, float] | None = None) -> str:
    """An image's name and its scores, e.g. `a.png  Dice 0.812  IoU 0.700  HD95 12.3 px`."""
    def number(label: str, value: float) -> str:
        if not np.isfinite(value):
            return f"{label} n/a" if np.isnan(value) else f"{label} inf"
        return f"{label} {value:.1f} px" if label == "HD95" else f"{label} {value:.3f}"
    return "  ".join([name, *(number(k, v) for k, v in (scores or {}).items())])


def _resized(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """`array` (an RGB image, a boolean mask or a class-index map) resized to `size` = (w, h),
    in its own dtype; class maps through 32-bit integers, so that no value (an ignored
    pixel's -100 say) wraps around into a class."""
    kind = np.uint8 if array.dtype in (np.uint8, bool) else np.int32
    resized = np.asarray(Image.fromarray(array.astype(kind)).resize(size, resample))
    return resized.astype(array.dtype, copy=False)


def fitted(size: tuple[int, int], longest: int | None = None) -> tuple[int, int]:
    """(w, h) in the proportions of `size` = (w, h), `longest` on its longest side (default:
    its own, brought within MIN_SIDE..MAX_SIDE)."""
    width, height = size
    if longest is None:
        longest = min(max(width, height, MIN_SIDE), MAX_SIDE)
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def figure(
    image: np.ndarray,
    pred: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    num_classes: int = 1,
    title: str = "",
    class_names: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    opacity: float = 1.0,
) -> np.ndarray:
    """The overlay of `pred` and `truth` on `image`, drawn at `size` = (w, h) (default: the
    image's `fitted`), under a strip with `title` and the legend; `opacity` below 1 fades
    the drawing into the image (0: the image alone)."""
    height, width = image.shape[:2]
    size = size or fitted((width, height))
    if size != (width, height):
        # the photo by area averaging when shrunk (as good, and faster than bilinear); the
        # masks nearest-neighbour: a class index must not blend with its neighbour's
        shrunk = size[0] < width
        image = _resized(image, size,
                         Image.Resampling.BOX if shrunk else Image.Resampling.BILINEAR)
        pred, truth = (None if m is None else
                       _resized(_check_mask(m, (height, width), name), size,
                                Image.Resampling.NEAREST)
                       for m, name in ((pred, "prediction"), (truth, "truth")))
    drawn = overlay(image, pred, truth, num_classes)
    if opacity != 1:
        drawn = np.round(image + opacity * (drawn.astype(np.float32) - image)).astype(np.uint8)
    strip = _strip(size[0], title, legend(pred, truth, num_classes, class_names))
    return np.concatenate([strip, drawn])


def _strip(width: int, title: str, entries: list[tuple[tuple[int, int, int], str]]
           ) -> np.ndarray:
    """A dark strip `width` pixels wide: the title's parts (split at double spaces), then on
    a line of their own the legend's swatches and meanings, wrapped at the width."""
    px = max(MIN_FONT_PX, round(width * FONT_PER_PX))
    font = ImageFont.load_default(size=px)
    pad, line = max(2, px // 2), round(px * 1.5)
    rows = [[(None, part) for part in title.split("  ") if part], entries]
    placed, y = [], pad  # (x, y, swatch colour or None, text)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for row in filter(None, rows):
        x = pad
        for colour, text in row:
            item = (px + pad if colour else 0) + round(measure.textlength(text, font=font))
            if x > pad and x + item > width - pad:
                x, y = pad, y + line
            placed.append((x, y, colour, text))
            x += item + px
        y += line
    if not placed:
        return np.zeros((0, width, 3), np.uint8)
    strip = Image.new("RGB", (width, y + pad - (line - px)), STRIP_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for x, top, colour, text in placed:
        if colour:
            draw.rectangle((x, top, x + px - 1, top + px - 1), fill=colour, outline=(128,) * 3)
            x += px + pad
        draw.text((x, top), text, fill=TEXT_COLOUR, font=font)
    return np.asarray(strip)


def colour_mask(labels: np.ndarray) -> np.ndarray:
    """An H x W class-index map as an H x W x 3 uint8 picture in CLASS_COLOURS."""
    return CLASS_COLOURS[np.asarray(labels, dtype=np.intp)]


def grid(
    tiles: list[np.ndarray], columns: int = 4, tile_size: tuple[int, int] | None = None
) -> np.ndarray:
    """The tiles (H x W x 3 or H x W, uint8 or bool) in rows of `columns`, GAP_PX apart, as
    RGB uint8. Each sits centred in a cell of `tile_size` = (h, w) (default: the largest
    tile's height and width), scaled to fit it with its own aspect ratio kept."""
    if not tiles:
        raise ValueError("grid of no tiles")
    if columns < 1:
        raise ValueError(f"columns {columns}: expected 1 or more")
    height, width = tile_size or (max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles))
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    out = np.full(
        (rows * height + (rows - 1) * GAP_PX, columns * width + (columns - 1) * GAP_PX, 3),
        BACKGROUND,
        np.uint8,
    )
    for k, tile in enumerate(tiles):
        im = Image.fromarray(as_uint8(tile)).convert("RGB")
        scale = min(height / im.height, width / im.width)
        if scale != 1:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        top = (k // columns) * (height + GAP_PX) + (height - im.height) // 2
        left = (k % columns) * (width + GAP_PX) + (width - im.width) // 2
        out[top : top + im.height, left : left + im.width] = np.asarray(im)
    return out
