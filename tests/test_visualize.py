"""Overlays, figures, grids, PNG writing and training curves, checked pixel by pixel where
it matters, and the colours checked for colour-blind readers and on pink mucosa."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from segdino.data.dataset import SegmentationDataset
from segdino.picture_files import save_jpeg, save_png
from segdino.training.config import TrainConfig
from segdino.training.curves import BEST_COLOUR, best_epoch, save_curves, save_fold_curves
from segdino.training.validation import _tile
from segdino.visualize import (
    BOTH_COLOUR,
    CLASS_COLOURS,
    FILL_ALPHA,
    GAP_PX,
    MAX_SIDE,
    MIN_SIDE,
    PRED_COLOUR,
    STRIP_BACKGROUND,
    TEXT_COLOUR,
    TRUTH_COLOUR,
    caption,
    figure,
    grid,
    legend,
    overlay,
)

MUCOSA_PINK = (230, 140, 150)  # a typical colonoscopy mucosa
# Machado, Oliveira & Fernandes (2009): full deuteranopia, on linear RGB
DEUTERANOPIA = np.array([[0.367322, 0.860646, -0.227968],
                         [0.280085, 0.672501, 0.047413],
                         [-0.011820, 0.042940, 0.968881]])


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
    assert tuple(out[20, 29]) == BOTH_COLOUR  # both outlines: pred's right, truth's top edge
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
    out = grid(tiles, columns=2, tile_size=(20, 30))
    assert out.shape == (3 * 20 + 2 * GAP_PX, 2 * 30 + GAP_PX, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:20, :30], tiles[0])
    assert (out[20 : 20 + GAP_PX] == 255).all() and (out[:, 30 : 30 + GAP_PX] == 255).all()
    # 40 x 10 keeps its aspect: halved to 20 x 5, centred in its 20 x 30 cell
    second = np.asarray(Image.fromarray(tiles[1]).resize((5, 20), Image.Resampling.BILINEAR))
    cell = out[:20, 30 + GAP_PX :]
    assert np.array_equal(cell[:, 12:17], second)
    assert (cell[:, :12] == 255).all() and (cell[:, 17:] == 255).all()
    mask_tile = out[2 * (20 + GAP_PX) :, :30]  # fifth tile, third row
    assert np.array_equal(mask_tile[..., 0], tiles[4])
    assert (out[2 * (20 + GAP_PX) :, 30 + GAP_PX :] == 255).all()  # no sixth tile: background

    # default cell: the largest height and width; smaller tiles are not enlarged
    assert grid(tiles[:3], columns=3).shape == (40, 3 * 30 + 2 * GAP_PX, 3)
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
    # light compression: the first IDAT chunk's zlib header says FLEVEL 0 ("fastest", which
    # zlib writes for the run-length strategy), where PIL's default writes 2 (level 6)
    data = (tmp_path / "sub" / "rgb.png").read_bytes()
    idat = data.index(b"IDAT") + 4
    assert data[idat + 1] >> 6 == 0


def test_outlines_thicken_with_the_image() -> None:
    image = np.zeros((1000, 800, 3), np.uint8)
    out = overlay(image, truth=square(200, 200, 600, 600, (1000, 800)))
    # 4 px on a 1000-pixel image: rows 200..203 drawn, row 204 not
    assert (out[200:204, 400] == TRUTH_COLOUR).all() and (out[204, 400] == 0).all()
    small = overlay(image[:64, :64], truth=square(10, 10, 40, 40))
    assert (small[10:12, 20] == TRUTH_COLOUR).all() and (small[12, 20] == 0).all()


def linear(rgb) -> np.ndarray:
    c = np.asarray(rgb, float) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def deuteranope(rgb) -> np.ndarray:
    """`rgb` as a deuteranope sees it, back in sRGB 0..255."""
    c = np.clip(DEUTERANOPIA @ linear(rgb), 0, 1)
    return 255 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def contrast(a, b) -> float:
    """WCAG's contrast ratio of two colours' relative luminances (1 to 21)."""
    lum = sorted(float(linear(c) @ [0.2126, 0.7152, 0.0722]) for c in (a, b))
    return (lum[1] + 0.05) / (lum[0] + 0.05)


def test_colours_apart_for_deuteranopes_and_on_pink_mucosa() -> None:
    drawn = {"prediction": PRED_COLOUR, "truth": TRUTH_COLOUR, "both": BOTH_COLOUR}
    for (a, ca), (b, cb) in itertools.combinations(drawn.items(), 2):
        assert np.linalg.norm(deuteranope(ca) - deuteranope(cb)) > 150, (a, b)
    for name, colour in drawn.items():
        assert contrast(colour, MUCOSA_PINK) > 1.5, name
        assert np.linalg.norm(deuteranope(colour) - deuteranope(MUCOSA_PINK)) > 100, name
    assert contrast((255, 0, 255), MUCOSA_PINK) < 1.5  # the magenta these colours replace


def test_figure_strip_names_scores_and_legend(image: np.ndarray) -> None:
    pred, truth = square(10, 10, 30, 30), square(20, 20, 50, 50)
    title = caption("polyp.png", {"Dice": 0.8123, "IoU": 0.7, "HD95": float("inf")})
    assert title == "polyp.png  Dice 0.812  IoU 0.700  HD95 inf"
    out = figure(image, pred, truth, title=title, size=(64, 64))
    strip_height = out.shape[0] - 64
    assert out.shape[1] == 64 and strip_height > 0
    assert np.array_equal(out[strip_height:], overlay(image, pred, truth))  # drawn below
    strip = out[:strip_height]
    text = (strip == TEXT_COLOUR).all(-1)
    assert text[: strip_height // 2].any() and text[strip_height // 2 :].any()  # both lines
    for colour in (PRED_COLOUR, TRUTH_COLOUR, BOTH_COLOUR):  # a swatch of each
        assert (strip == colour).all(-1).sum() >= 9
    untitled = figure(image, pred, truth, size=(64, 64))
    assert untitled.shape[0] < out.shape[0]  # no title line
    alone = figure(image, pred, size=(64, 64))[:-64]
    assert not (alone == TRUTH_COLOUR).all(-1).any() and (alone == PRED_COLOUR).all(-1).any()
    assert figure(image, size=(64, 64)).shape == image.shape  # nothing to say: no strip
    # by default a small image is enlarged, so that its strip's text fits
    assert figure(image[:, :32]).shape[1:] == (MIN_SIDE // 2, 3)


def test_figure_caps_the_longest_side_and_keeps_the_aspect() -> None:
    image = np.full((1500, 2000, 3), MUCOSA_PINK, np.uint8)
    out = figure(image, square(100, 100, 1400, 1900, (1500, 2000)))
    assert out.shape[1] == MAX_SIDE
    drawn = out[-round(1500 * MAX_SIDE / 2000) :]
    assert (out[-drawn.shape[0] - 1] == STRIP_BACKGROUND).all()  # the strip ends just above
    assert abs(drawn.shape[1] / drawn.shape[0] - 2000 / 1500) < 0.01
    assert (drawn[200, 30:80] == PRED_COLOUR).all(-1).sum() == 4  # 4 px at 1024 px


def test_class_legend_names_the_classes_drawn() -> None:
    pred = np.zeros((40, 40), np.uint8)
    pred[5:15, 5:15], pred[20:30, 20:30] = 1, 3
    truth = np.full((40, 40), 255, np.uint8)  # all ignored but for class 1
    truth[5:15, 5:15] = 1
    names = ["background", "gland", "vessel", "tumour"]
    entries = legend(pred, truth, 4, names)
    assert entries == [(tuple(CLASS_COLOURS[1]), "gland"), (tuple(CLASS_COLOURS[3]), "tumour")]
    assert [t for _, t in legend(pred, None, 4)] == ["class 1", "class 3"]
    strip = figure(np.zeros((40, 40, 3), np.uint8), pred, truth, 4, "x", names, (40, 40))[:-40]
    for c in (1, 3):
        assert (strip == CLASS_COLOURS[c]).all(-1).any()
    assert not (strip == CLASS_COLOURS[2]).all(-1).any()


def test_validation_tile_keeps_the_image_aspect(tmp_path) -> None:
    Image.fromarray(np.full((30, 60, 3), 90, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(tmp_path / "a_mask.png")
    images = SegmentationDataset([(tmp_path / "a.png", tmp_path / "a_mask.png")], (32, 32))
    pred = truth = np.zeros((32, 32), bool)
    cfg = TrainConfig(str(tmp_path), "x", "x")
    tile = _tile(images, 0, pred, truth, cfg, {"Dice": 1.0, "IoU": 1.0})
    # 60 x 30 drawn MIN_SIDE x MIN_SIDE / 2 (not the network's 32 x 32) below its strip
    assert tile.shape[1] == MIN_SIDE and (tile[-MIN_SIDE // 2 :] == 90).all()
    assert (tile[-MIN_SIDE // 2 - 1] == STRIP_BACKGROUND).all()


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
    save_curves(history, path, title="kvasir")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        pixels = np.asarray(im.convert("RGB")).astype(int)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    near_best = (np.abs(pixels - BEST_COLOUR_RGB).sum(-1) < 20).sum()
    assert (near_best > 50) == ("val_dice" in history[0])  # the best epoch's line and star
    save_curves(history, tmp_path / "untitled.png")
    with Image.open(tmp_path / "untitled.png") as im:
        untitled = np.asarray(im.convert("RGB")).astype(int)
    # the title sits above the axes: the top rows differ, and only where it is drawn
    assert (untitled[:20] != pixels[:20]).any() and (pixels[:20] < 128).any()


BEST_COLOUR_RGB = tuple(int(BEST_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
FOLD_COLOURS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C))  # matplotlib's C0-C2


def test_save_fold_curves_draws_each_fold_in_its_colour(tmp_path) -> None:
    folds = [[{"epoch": e, "train_loss": a / e, "val_loss": 1.1 * a / e,
               "val_dice": 0.2 * a + e / 20} for e in range(1, 6)] for a in (1.0, 1.5)]
    save_fold_curves(folds, tmp_path / "cv_curves.png", title="cv")
    with Image.open(tmp_path / "cv_curves.png") as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    width = pixels.shape[1]

    def drawn(colour: tuple[int, int, int], half: slice) -> int:
        return int((np.abs(pixels[:, half] - colour).sum(-1) < 30).sum())

    loss, score = slice(0, width // 2), slice(width // 2, width)
    for colour in FOLD_COLOURS[:2]:  # two folds: two colours, in both panels
        assert drawn(colour, loss) > 200 and drawn(colour, score) > 200
    assert drawn(FOLD_COLOURS[2], loss) + drawn(FOLD_COLOURS[2], score) == 0


def test_best_epoch_is_the_first_of_the_highest_val_dice() -> None:
    history = [{"epoch": 1, "val_dice": 0.5}, {"epoch": 2, "val_dice": 0.7},
               {"epoch": 3, "val_dice": 0.7}, {"epoch": 4, "val_dice": 0.6}]
    assert best_epoch(history) == (2, 0.7)
    assert best_epoch([{"train_loss": 1.0}]) is None


def test_save_jpeg_keeps_thin_outlines_in_their_colour(tmp_path) -> None:
    """A figure is written as a JPEG with colour at full resolution: a 2-pixel yellow outline
    on mucosa pink reads back within a few levels of yellow (4:2:0 subsampling, PIL's
    default, would blur its colour over the neighbouring pixels)."""
    image = np.full((64, 64, 3), MUCOSA_PINK, np.uint8)
    drawn = overlay(image, pred=square(16, 16, 48, 48))
    save_jpeg(drawn, tmp_path / "f.jpg")
    with Image.open(tmp_path / "f.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.layer[0][1:3] == im.layer[1][1:3]  # luma and chroma sampled alike: 4:4:4
        back = np.asarray(im).astype(int)
    Image.fromarray(drawn).save(tmp_path / "default.jpg", quality=90)  # 4:2:0
    with Image.open(tmp_path / "default.jpg") as im:
        subsampled = np.asarray(im).astype(int)
    (tmp_path / "default.jpg").unlink()
    error = np.abs(back[16:18, 20:44] - PRED_COLOUR).mean()
    assert error < 6 and error < np.abs(subsampled[16:18, 20:44] - PRED_COLOUR).mean()
    assert np.abs(back - drawn).mean() < 2
    assert [p.name for p in tmp_path.iterdir()] == ["f.jpg"]  # no temporary file left
