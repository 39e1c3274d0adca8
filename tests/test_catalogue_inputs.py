"""The input-files catalogue: images and masks as users have them, through every command that
reads them (`train`, `test`, `prepare`, `predict`).

Bad inputs are refused (exit 2, one line naming the file and, for a mask that looks like
classes, the flags that read it) and change nothing. Unusual but valid inputs (coloured,
alpha, palette, 0/1, 16-bit and JPEG masks; 16-bit, EXIF-rotated, CMYK, palette and alpha
images) give the result a hand-made truth says.

`test` runs with a threshold near 0, so that the tiny model predicts every pixel: each
image's Dice is then 2|T| / (|T| + HW) for its truth T, and a truth read wrongly shows.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from catalogue import assert_refused, run_segdino, snapshot
from PIL import Image

H, W = 40, 48  # on the 8 x 8 grid of JPEG blocks, so JPEG masks keep their edges
N = 5
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 3 * 252 + [224, 224, 192]

MaskMaker = Callable[[np.ndarray], Image.Image]


def truth(i: int) -> np.ndarray:
    """Image i's hand-made truth: a block whose size and place depend on i."""
    mask = np.zeros((H, W), bool)
    mask[8 : 16 + 8 * (i % 3), 8 * (i % 4) : 24 + 8 * (i % 2)] = True
    return mask


def picture(i: int) -> np.ndarray:
    """Image i: its truth brighter than a noisy background."""
    rng = np.random.default_rng(i)
    base = rng.integers(0, 90, (H, W, 3))
    return np.where(truth(i)[..., None], base + 150, base).astype(np.uint8)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def voc(indices: np.ndarray) -> Image.Image:
    im = Image.fromarray(indices.astype(np.uint8), "P")
    im.putpalette(VOC_PALETTE)
    return im


def coloured(t: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    rgb = np.zeros((*t.shape, 3), np.uint8)
    rgb[t] = colour
    return Image.fromarray(rgb)


def alpha_only(t: np.ndarray) -> Image.Image:
    rgba = np.zeros((*t.shape, 4), np.uint8)
    rgba[..., 3] = t * 255
    return Image.fromarray(rgba, "RGBA")


def second_object(t: np.ndarray) -> np.ndarray:
    """A class-2 block beside the truth (class 1)."""
    classes = t.astype(np.uint8)
    classes[28:36, 32:44] = 2
    return classes


# Masks as users have them, each holding the truth (read as it): maker, file type.
GOOD_MASKS: dict[str, tuple[MaskMaker, str]] = {
    "red_png": (lambda t: coloured(t, (255, 0, 0)), ".png"),
    "red_jpeg": (lambda t: coloured(t, (255, 0, 0)), ".jpg"),
    "alpha_only": (alpha_only, ".png"),
    "gray_alpha": (lambda t: Image.fromarray(np.dstack([t * 0, t * 255]).astype(np.uint8), "LA"),
                   ".png"),
    "voc_palette": (lambda t: voc(t), ".png"),
    "zero_one": (lambda t: Image.fromarray(t.astype(np.uint8)), ".png"),
    "wide_16bit": (lambda t: Image.fromarray(t.astype(np.uint16) * 65535), ".png"),
    "gray_jpeg": (lambda t: Image.fromarray(np.where(t, 240, 12).astype(np.uint8)), ".jpg"),
}

# Masks that are not clearly binary: maker, file type, words the error must hold.
BAD_MASKS: dict[str, tuple[MaskMaker, str, str]] = {
    "class_values": (lambda t: Image.fromarray(second_object(t)), ".png", "--num-classes 3"),
    "class_values_16bit": (lambda t: Image.fromarray(second_object(t).astype(np.uint16)), ".png",
                           "--num-classes 3"),
    "class_values_as_rgb": (lambda t: Image.fromarray(second_object(t)).convert("RGB"), ".png",
                            "--num-classes 3"),
    "voc_boundary": (lambda t: Image.fromarray(_outlined(t)), ".png",
                     "--num-classes 2 --ignore-index 255"),
    "mid_grey_levels": (lambda t: Image.fromarray(second_object(t) * 127 + t.astype(np.uint8)),
                        ".png",
                        "--class-map 0:0,128:1,254:2"),
    "two_colours": (lambda t: _two_colours(t), ".png", "several colours"),
    "palette_classes": (lambda t: voc(second_object(t)), ".png", "--num-classes 3"),
    "palette_with_boundary": (lambda t: voc(_outlined(t)), ".png",
                              "--num-classes 2 --ignore-index 255"),
    "palette_no_black": (lambda t: _bright_palette(t), ".png", "--num-classes 2"),
}


def _outlined(t: np.ndarray) -> np.ndarray:
    """A 0/1 mask with a 255 outline around the object, VOC style."""
    values = t.astype(np.uint8)
    rows, cols = np.nonzero(t)
    values[rows.min() - 1, cols.min() : cols.max() + 1] = 255
    return values


def _two_colours(t: np.ndarray) -> Image.Image:
    rgb = np.asarray(coloured(t, (255, 0, 0))).copy()
    rgb[28:36, 32:44] = (0, 255, 0)
    return Image.fromarray(rgb)


def _bright_palette(t: np.ndarray) -> Image.Image:
    im = Image.fromarray(t.astype(np.uint8), "P")
    im.putpalette([255, 255, 255, 255, 0, 0])
    return im


def write_pairs(folder: Path, masks: MaskMaker, mask_ext: str = ".png",
                image: Callable[[int], Image.Image] | None = None) -> Path:
    """folder/{image,mask}/ of N pairs: pictures (or `image(i)`) and their truths as `masks`
    codes them."""
    for i in range(N):
        for kind, im, ext in (("image", image(i) if image else Image.fromarray(picture(i)),
                               ".png"), ("mask", masks(truth(i)), mask_ext)):
            path = folder / kind / f"{i:04d}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, quality=95)  # other formats than JPEG ignore the quality
    return folder


def bomb(path: Path) -> Path:
    """A PNG that declares 100000 x 100000 pixels in a few bytes."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def rotate_mask(folder: Path) -> Path:
    """Mask 0000 re-saved with an EXIF quarter turn: upright, it no longer fits its image."""
    path = folder / "mask" / "0000.png"
    Image.open(path).save(path, exif=exif(6))
    return folder / "image" / "0000.png"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the commands ------------------------------------------------------------------------


def run_test(tiny_run: dict, data: Path, out: Path, *flags: str):
    return run_segdino("test", "--ckpt", tiny_run["ckpt"], "--data-dir", data, "--dataset",
                       "set", "--num-workers", "0", "--device", "cpu", "--save-root", out,
                       "--name", "t", "--no-progress", "--dice-thr", "1e-9", *flags)


def run_train(tiny_run: dict, data: Path, out: Path, name: str = "r", *flags: str):
    return run_segdino("train", "--data-dir", data, "--dataset", "set", "--dino-ckpt",
                       tiny_run["weights"], "--input-h", "32", "--input-w", "32", "--epochs",
                       "1", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
                       "--seed", "0", "--save-root", out, "--name", name, "--no-progress", *flags)


def run_prepare(source: Path, out: Path):
    return run_segdino("prepare", "folder", source / "image", out, "--masks", source / "mask",
                       "--workers", "1")


def run_predict(tiny_run: dict, out: Path, *inputs: Path):
    return run_segdino("predict", tiny_run["ckpt"], *inputs, "--out", out, "--device", "cpu",
                       "--probabilities")


# --- refused, changing nothing -----------------------------------------------------------

# Each case: the command, how its inputs are spoiled (a function of the split folder that
# returns the file to be named), and the words the error must hold.
Spoil = Callable[[Path], Path]


def bad_mask(kind: str) -> Spoil:
    maker, ext, _ = BAD_MASKS[kind]

    def spoil(folder: Path) -> Path:
        (folder / "mask" / "0002.png").unlink()
        path = folder / "mask" / f"0002{ext}"
        maker(truth(2)).save(path)
        return path
    return spoil


def file_of(kind: str, stem: str, spoil: Callable[[Path], Path]) -> Spoil:
    return lambda folder: spoil(folder / kind / f"{stem}.png")


def text_file(path: Path) -> Path:
    path.write_text("not an image")
    return path


REFUSED: list[tuple[str, Spoil, str]] = [
    *[("test", bad_mask(kind), BAD_MASKS[kind][2]) for kind in BAD_MASKS],
    *[("train", bad_mask(kind), BAD_MASKS[kind][2])
      for kind in ("class_values", "voc_boundary", "mid_grey_levels", "palette_classes")],
    *[("prepare", bad_mask(kind), BAD_MASKS[kind][2])
      for kind in ("class_values", "two_colours", "palette_with_boundary")],
    ("test", file_of("mask", "0001", bomb), "too many pixels"),
    ("test", file_of("mask", "0001", truncate), "unreadable image"),
    ("test", rotate_mask, "is 48x40 but its mask 0000.png is 40x48"),
    ("train", file_of("image", "0003", bomb), "too many pixels"),
    ("train", file_of("image", "0003", truncate), "unreadable image"),
    ("train", rotate_mask, "is 48x40 but its mask 0000.png is 40x48"),
    ("prepare", file_of("mask", "0004", bomb), "too many pixels"),
    ("prepare", file_of("image", "0004", bomb), "too many pixels"),
    ("prepare", file_of("mask", "0004", text_file), "unreadable image"),
    ("prepare", rotate_mask, "is 48x40 but its mask 0000.png is 40x48"),
    ("predict", file_of("image", "0001", bomb), "too many pixels"),
    ("predict", file_of("image", "0001", truncate), "unreadable image"),
    ("predict", file_of("image", "0001", text_file), "unreadable image"),
]


@pytest.mark.parametrize(("command", "spoil", "words"), REFUSED,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(REFUSED)])
def test_refused(tiny_run, tmp_path, command, spoil, words):
    folder = write_pairs(tmp_path / "data" / "set" / ("train" if command == "train" else "test"),
                         GOOD_MASKS["zero_one"][0])
    named = spoil(folder)
    if command == "train":
        write_pairs(tmp_path / "data" / "set" / "val", GOOD_MASKS["zero_one"][0])
    before = snapshot(tmp_path, tiny_run["run"])
    out = tmp_path / "out"
    outcome = {
        "test": lambda: run_test(tiny_run, tmp_path / "data", out),
        "train": lambda: run_train(tiny_run, tmp_path / "data", out),
        "prepare": lambda: run_prepare(folder, out),
        "predict": lambda: run_predict(tiny_run, out, folder / "image"),
    }[command]()
    error = assert_refused(outcome, [named])
    assert words in error
    assert snapshot(tmp_path, tiny_run["run"]) == before


def test_oversized_image_under_pils_error_limit_is_refused_without_a_warning(
        tiny_run, tmp_path, monkeypatch):
    # PIL only warns between one and two times its limit; the warning would be a second line.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 40 x 48 = 1920 pixels
    folder = write_pairs(tmp_path / "set", GOOD_MASKS["zero_one"][0])
    before = snapshot(tmp_path)
    outcome = run_predict(tiny_run, tmp_path / "out", folder / "image" / "0000.png")
    assert "too many pixels" in assert_refused(outcome, folder / "image" / "0000.png")
    assert snapshot(tmp_path) == before


def test_class_format_still_refuses_a_colour_mask(tiny_run, tmp_path):
    for split in ("train", "val"):
        folder = write_pairs(tmp_path / "data" / "set" / split, GOOD_MASKS["zero_one"][0])
    named = bad_mask("two_colours")(folder)
    before = snapshot(tmp_path)
    outcome = run_train(tiny_run, tmp_path / "data", tmp_path / "out", "r", "--num-classes", "3")
    assert "a colour mask" in assert_refused(outcome, named)
    assert snapshot(tmp_path) == before


# --- unusual but valid: read as the hand-made truth -------------------------------------


def expected_dice(i: int) -> float:
    """Image i's Dice when every pixel is predicted foreground."""
    area = truth(i).sum()
    return 2 * area / (area + H * W)


@pytest.mark.parametrize("kind", list(GOOD_MASKS))
def test_test_reads_each_mask_coding_as_its_truth(tiny_run, tmp_path, kind):
    maker, ext = GOOD_MASKS[kind]
    write_pairs(tmp_path / "data" / "set" / "test", maker, ext)
    outcome = run_test(tiny_run, tmp_path / "data", tmp_path / "out")
    assert outcome.code == 0, outcome.stderr
    rows = read_csv(tmp_path / "out" / "t" / "metrics.csv")[:-3]  # MEAN, SD, MEDIAN aside
    assert [float(row["dice"]) for row in rows] == pytest.approx(
        [expected_dice(i) for i in range(N)], abs=1e-5)
    assert all(float(row["recall"]) == pytest.approx(1) for row in rows)


def test_test_reads_an_exif_rotated_image_with_its_mask_drawn_upright(tiny_run, tmp_path):
    # The image stored a quarter turn away from upright with EXIF orientation 6; the mask drawn
    # over the upright picture (as annotation tools show it), without EXIF.
    folder = write_pairs(tmp_path / "data" / "set" / "test", GOOD_MASKS["zero_one"][0])
    for i in range(N):
        path = folder / "image" / f"{i:04d}.png"
        Image.fromarray(np.rot90(picture(i))).save(path, exif=exif(6))
    outcome = run_test(tiny_run, tmp_path / "data", tmp_path / "out")
    assert outcome.code == 0, outcome.stderr
    rows = read_csv(tmp_path / "out" / "t" / "metrics.csv")[:-3]
    assert [float(row["dice"]) for row in rows] == pytest.approx(
        [expected_dice(i) for i in range(N)], abs=1e-5)


@pytest.mark.parametrize("kind", ["red_png", "alpha_only", "voc_palette", "zero_one"])
def test_prepare_writes_each_mask_coding_as_its_truth(tmp_path, kind):
    maker, ext = GOOD_MASKS[kind]
    source = write_pairs(tmp_path / "source", maker, ext)
    outcome = run_prepare(source, tmp_path / "out")
    assert outcome.code == 0, outcome.stderr
    written = sorted((tmp_path / "out").glob("*/mask/*.png"))
    assert len(written) == N
    for path in written:
        np.testing.assert_array_equal(np.asarray(Image.open(path)), truth(int(path.stem)) * 255)


def test_prepare_writes_an_exif_rotated_mask_upright(tmp_path):
    source = write_pairs(tmp_path / "source", GOOD_MASKS["zero_one"][0])
    for path in source.rglob("*.png"):
        Image.fromarray(np.rot90(np.asarray(Image.open(path)))).save(path, exif=exif(6))
    assert run_prepare(source, tmp_path / "out").code == 0
    for path in sorted((tmp_path / "out").glob("*/mask/*.png")):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), truth(int(path.stem)) * 255)


def test_train_reads_mixed_codings_as_the_plain_masks(tiny_run, tmp_path):
    plain = GOOD_MASKS["zero_one"][0]
    codings = [GOOD_MASKS[k][0] for k in ("red_png", "alpha_only", "voc_palette", "wide_16bit")]
    for root, masks in (("plain", [plain] * 2), ("mixed", codings[:2])):
        write_pairs(tmp_path / root / "set" / "train", masks[0])
        write_pairs(tmp_path / root / "set" / "val", masks[1])
    for path in (tmp_path / "mixed" / "set" / "val" / "mask").glob("*.png"):
        i = int(path.stem)  # each val mask in another coding
        codings[i % len(codings)](truth(i)).save(path)
    for root in ("plain", "mixed"):
        assert run_train(tiny_run, tmp_path / root, tmp_path / "runs", root).code == 0
    plain_rows, mixed_rows = (read_csv(tmp_path / "runs" / r / "metrics.csv")
                              for r in ("plain", "mixed"))
    metrics = [k for k in plain_rows[0] if k.startswith(("val_", "train_loss"))]
    assert metrics
    assert [[r[k] for k in metrics] for r in mixed_rows] == \
        [[r[k] for k in metrics] for r in plain_rows]


def image_pairs() -> dict[str, tuple[Image.Image, np.ndarray]]:
    """Unusual image files and, by hand, the RGB pixels each must be read as."""
    rng = np.random.default_rng(7)
    wide = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    cmy = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cmyk = Image.fromarray(np.dstack([cmy, np.zeros((H, W), np.uint8)]), "CMYK")
    indices = rng.integers(0, 3, (H, W), dtype=np.uint8)
    palette = np.array(VOC_PALETTE, np.uint8).reshape(-1, 3)
    rgb = picture(1)
    rgba = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (H, W), dtype=np.uint8)]),
                           "RGBA")
    gray = (wide >> 8).astype(np.uint8)
    return {
        "wide": (Image.fromarray(wide), np.dstack([gray] * 3)),
        "cmyk": (cmyk, 255 - cmy),  # with K = 0, R = 255 - C exactly
        "palette": (voc(indices), palette[indices]),
        "rgba": (rgba, rgb),
        "gray_alpha": (Image.fromarray(np.dstack([gray, gray]), "LA"), np.dstack([gray] * 3)),
    }


@pytest.mark.parametrize("kind", ["wide", "cmyk", "palette", "rgba", "gray_alpha", "exif"])
def test_predict_reads_unusual_images_as_their_rgb(tiny_run, tmp_path, kind):
    pixels = picture(2)
    if kind == "exif":  # stored a quarter turn back, shown upright
        unusual, expected = Image.fromarray(np.rot90(pixels)), pixels
        options = {"exif": exif(6)}
    else:
        (unusual, expected), options = image_pairs()[kind], {}
    ext = ".tif" if kind == "cmyk" else ".png"
    unusual.save(tmp_path / f"unusual{ext}", **options)
    Image.fromarray(expected).save(tmp_path / "plain.png")
    outcome = run_predict(tiny_run, tmp_path / "out", tmp_path / f"unusual{ext}",
                          tmp_path / "plain.png")
    assert outcome.code == 0, outcome.stderr
    for suffix in ("", "_prob"):
        got, want = (np.asarray(Image.open(tmp_path / "out" / f"{stem}{suffix}.png"))
                     for stem in ("unusual", "plain"))
        assert got.shape == (H, W)
        np.testing.assert_array_equal(got, want)
