"""Pictures for people: prediction/truth overlays, tile grids, training curves, PNG writing.

Colours: the prediction is magenta (a translucent fill plus an outline), the truth a green
outline drawn on top, so both stay visible where they overlap. Magenta and green stay apart
for the common red-green colour blindness. Every file is written atomically.

Class-index maps (K >= 2 classes) use one colour per class, CLASS_COLOURS: black for the
background (class 0), then the Okabe-Ito colours (told apart with any common colour
blindness), then the PASCAL VOC palette. In overlays the prediction is a translucent fill in
its class's colour and the truth an outline in its class's colour; without a truth the
prediction is outlined too.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion

from segdino.atomic import atomic_path

PRED_COLOUR = (255, 0, 255)
TRUTH_COLOUR = (0, 255, 0)
FILL_ALPHA = 0.35
OUTLINE_PX = 2
GAP_PX = 4
BACKGROUND = 255  # white between grid tiles
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


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels within OUTLINE_PX of its edge (the image border counts as an edge)."""
    return mask & ~binary_erosion(mask, iterations=OUTLINE_PX, border_value=0)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if mask.shape != shape:
        raise ValueError(f"{name} mask is {mask.shape} but the image is {shape} (h, w)")
    return mask.astype(bool, copy=False)


def _paint(out: np.ndarray, mask: np.ndarray, colour, fill: bool, outline: bool) -> None:
    """Tint `mask`'s pixels of `out` towards `colour` and/or draw its outline, in place."""
    if fill:
        tint = (1 - FILL_ALPHA) * out[mask] + FILL_ALPHA * np.asarray(colour)
        out[mask] = np.round(tint).astype(np.uint8)
    if outline:
        out[_outline(mask)] = colour


def overlay(
    image: np.ndarray,
    pred: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    num_classes: int = 1,
) -> np.ndarray:
    """`image` (H x W x 3 uint8) with the prediction filled and outlined in magenta and the
    truth outlined in green; `pred` and `truth` are H x W boolean masks, either may be None.

    With `num_classes` >= 2 they are class-index maps, drawn class by class in
    CLASS_COLOURS: the prediction filled (and outlined when there is no truth), the truth
    outlined; values that are no class (ignored pixels) are not drawn."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image has shape {image.shape} and dtype {image.dtype}; "
                         "expected H x W x 3 uint8")
    out = image.copy()
    layers = []  # (mask, its name, colour, fill, outline), drawn in this order
    if num_classes == 1:
        layers += [(pred, "prediction", PRED_COLOUR, True, True),
                   (truth, "truth", TRUTH_COLOUR, False, True)]
    else:
        classes = range(1, num_classes)
        if pred is not None:
            layers += [(np.asarray(pred) == c, "prediction", CLASS_COLOURS[c], True,
                        truth is None) for c in classes]
        if truth is not None:
            layers += [(np.asarray(truth) == c, "truth", CLASS_COLOURS[c], False, True)
                       for c in classes]
    for mask, name, colour, fill, outline in layers:
        if mask is not None:
            _paint(out, _check_mask(mask, image.shape[:2], name), colour, fill, outline)
    return out


def colour_mask(labels: np.ndarray) -> np.ndarray:
    """An H x W class-index map as an H x W x 3 uint8 picture in CLASS_COLOURS."""
    return CLASS_COLOURS[np.asarray(labels, dtype=np.intp)]


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """A boolean mask as 0/255; uint8 as it is."""
    if array.dtype == bool:
        return np.where(array, 255, 0).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"array of dtype {array.dtype}: expected uint8 or bool")
    return array


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write an H x W (grayscale; bool becomes 0/255) or H x W x 3 (RGB) array as a PNG."""
    image = Image.fromarray(_as_uint8(array))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def grid(
    tiles: list[np.ndarray], columns: int = 4, tile_size: tuple[int, int] | None = None
) -> np.ndarray:
    """The tiles (H x W x 3 or H x W, uint8 or bool) in rows of `columns`, resized to
    `tile_size` = (h, w) (default: the first tile's size), GAP_PX apart, as RGB uint8."""
    if not tiles:
        raise ValueError("grid of no tiles")
    if columns < 1:
        raise ValueError(f"columns {columns}: expected 1 or more")
    height, width = tile_size or tiles[0].shape[:2]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    out = np.full(
        (rows * height + (rows - 1) * GAP_PX, columns * width + (columns - 1) * GAP_PX, 3),
        BACKGROUND,
        np.uint8,
    )
    for k, tile in enumerate(tiles):
        im = Image.fromarray(_as_uint8(tile)).convert("RGB")
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR)
        top, left = (k // columns) * (height + GAP_PX), (k % columns) * (width + GAP_PX)
        out[top : top + height, left : left + width] = np.asarray(im)
    return out


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the epochs whose record has `key`; epochs count from 1."""
    points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(history)
              if row.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def save_curves(history: list[dict], path: str | os.PathLike) -> None:
    """A PNG of training curves from one record per epoch: loss (`train_loss`, `val_loss`)
    on the left, Dice and IoU (`val_dice`, `val_iou`, and `train_dice`) on the right.
    Missing keys are left out; an `epoch` key (1-based) places each record."""
    # Imported here: matplotlib is slow to import and only training needs it. The Figure API
    # (no pyplot) keeps no global state and always renders with Agg.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=100, layout="tight")
    loss_ax, score_ax = fig.subplots(1, 2)
    # (axes, y label, ((key, label, line style), ...)); training dashed, validation solid
    panels = (
        (loss_ax, "loss", (("train_loss", "train", "--"), ("val_loss", "validation", "-"))),
        (score_ax, "score", (("val_dice", "val Dice", "-"), ("val_iou", "val IoU", "-"),
                             ("train_dice", "train Dice", "--"))),
    )
    for ax, ylabel, series in panels:
        for key, label, style in series:
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, style, marker="o" if len(epochs) < 30 else None,
                        markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    score_ax.set_ylim(0, 1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
