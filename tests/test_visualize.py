"""Overlays, grids, PNG writing and training curves, checked pixel by pixel where it matters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segdino.visualize import (
    FILL_ALPHA,
    GAP_PX,
    PRED_COLOUR,
    TRUTH_COLOUR,
    grid,
    overlay,
    save_curves,
    save_png,
)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, (64, 64, 3), np.uint8)


def square(top: int, left: int, bottom: int, right: int, shape=(64, 64)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_overlay_colours(image: np.ndarray) -> None:
    pred, truth = square(10, 10, 30, 30), square(20, 20, 50, 50)
    out = overlay(image, pred, truth)
    assert out.dtype == np.uint8 and out.shape == image.shape
    # pred spans rows/columns 10..29: its 2 px outline is 10-11 and 28-29
    assert tuple(out[10, 15]) == PRED_COLOUR
    assert tuple(out[11, 15]) == PRED_COLOUR
    inside = (15, 15)
    tinted = np.round((1 - FILL_ALPHA) * image[inside] + FILL_ALPHA * np.array(PRED_COLOUR))
    assert np.array_equal(out[inside], tinted)
    assert not np.array_equal(out[inside], image[inside])
    assert tuple(out[12, 15]) != PRED_COLOUR  # outlines are 2 px, not thicker
    # the truth outline: outside the prediction, and drawn over it where they overlap
    assert tuple(out[20, 40]) == TRUTH_COLOUR
    assert tuple(out[49, 35]) == TRUTH_COLOUR
    assert tuple(out[20, 25]) == TRUTH_COLOUR
    assert tuple(out[35, 35]) != TRUTH_COLOUR  # truth's inside is not filled
    assert np.array_equal(out[35, 35], image[35, 35])
    # far from both: unchanged
    assert np.array_equal(out[60, 5], image[60, 5])
    assert np.array_equal(out[:8], image[:8])


def test_overlay_outline_at_image_border(image: np.ndarray) -> None:
    out = overlay(image, truth=square(0, 0, 64, 64))
    assert (out[0] == TRUTH_COLOUR).all() and (out[:, -1] == TRUTH_COLOUR).all()
    assert np.array_equal(out[32, 32], image[32, 32])


def test_overlay_without_masks_and_bad_shapes(image: np.ndarray) -> None:
    out = overlay(image)
    assert np.array_equal(out, image) and out is not image
    with pytest.raises(ValueError, match="mask"):
        overlay(image, pred=np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        overlay(image[..., 0])


def test_grid_layout() -> None:
    rng = np.random.default_rng(1)
    tiles = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in [(20, 30), (40, 10), (7, 9)]]
    tiles += [square(2, 2, 10, 10, (20, 30)), rng.integers(0, 256, (20, 30), np.uint8)]
    out = grid(tiles, columns=2)  # default tile size: the first tile's, 20 x 30
    assert out.shape == (3 * 20 + 2 * GAP_PX, 2 * 30 + GAP_PX, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:20, :30], tiles[0])
    assert (out[20 : 20 + GAP_PX] == 255).all() and (out[:, 30 : 30 + GAP_PX] == 255).all()
    second = np.asarray(Image.fromarray(tiles[1]).resize((30, 20), Image.Resampling.BILINEAR))
    assert np.array_equal(out[:20, 30 + GAP_PX :], second)
    mask_tile = out[2 * (20 + GAP_PX) :, :30]  # fifth tile, third row
    assert np.array_equal(mask_tile[..., 0], tiles[4])
    assert (out[2 * (20 + GAP_PX) :, 30 + GAP_PX :] == 255).all()  # no sixth tile: background

    assert grid(tiles[:2], columns=4, tile_size=(8, 6)).shape == (8, 2 * 6 + GAP_PX, 3)
    with pytest.raises(ValueError):
        grid([])


def test_save_png_round_trip(tmp_path) -> None:
    mask = square(3, 4, 9, 12, (16, 20))
    save_png(mask, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "L" and im.size == (20, 16)
        assert np.array_equal(np.asarray(im), np.where(mask, 255, 0))
    rgb = np.random.default_rng(2).integers(0, 256, (5, 7, 3), np.uint8)
    save_png(rgb, tmp_path / "sub" / "rgb.png")
    with Image.open(tmp_path / "sub" / "rgb.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m.png", "rgb.png", "sub"]
    with pytest.raises(ValueError, match="float"):
        save_png(np.zeros((4, 4), np.float32), tmp_path / "f.png")


@pytest.mark.parametrize(
    "history",
    [
        [{"epoch": e, "train_loss": 1 / e, "train_dice": 0.2 * e, "val_loss": 1.2 / e,
          "val_dice": 0.25 * e, "val_iou": 0.2 * e, "seconds": 3.0} for e in (1, 2, 3)],
        [{"train_loss": 0.7}, {"train_loss": 0.5}],  # no validation, no epoch numbers
    ],
)
def test_save_curves(tmp_path, history) -> None:
    path = tmp_path / "curves.png"
    save_curves(history, path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
