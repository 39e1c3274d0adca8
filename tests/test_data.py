"""The data pipeline: preprocessing, pairing files, the hold-out, augmentation, datasets, and
reading files (the binary-mask rule, EXIF, 16-bit and other image modes, oversized files)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

from segdino.data.dataset import SegmentationDataset, find_pairs
from segdino.data.files import binary_mask, check_pair, read_mask
from segdino.data.holdout import holdout
from segdino.data.synthetic import make_synthetic_dataset
from segdino.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    denormalise,
    image_to_tensor,
    load_rgb,
    mask_to_tensor,
)
from segdino.errors import UserError

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# --- preprocessing ---------------------------------------------------------------------


def test_image_to_tensor_matches_hand_pipeline():
    pixels = random_image(37, 53)
    resized = np.asarray(Image.fromarray(pixels).resize((40, 24), Image.Resampling.BICUBIC))
    expected = ((resized / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    out = image_to_tensor(Image.fromarray(pixels), (24, 40))
    assert out.shape == (3, 24, 40) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_image_to_tensor_known_values():
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[...] = (255, 0, 51)  # a flat colour survives any resize unchanged
    out = image_to_tensor(Image.fromarray(pixels), (16, 16))
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    for y, x in [(0, 0), (7, 11), (15, 15)]:
        np.testing.assert_allclose(out[:, y, x].numpy(), expected, atol=1e-5)


def test_image_to_tensor_antialiases_when_downscaling():
    # A one-pixel checkerboard: an antialiased 4x reduction is flat mid-grey; point
    # sampling would give pure black or white.
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = denormalise(image_to_tensor(Image.fromarray(board).convert("RGB"), (16, 16)))
    assert np.abs(out[2:-2, 2:-2].astype(int) - 128).max() <= 2


def test_mask_to_tensor_nearest_resize():
    mask = random_image(10, 12)[..., 0] > 128
    out = mask_to_tensor(mask, (20, 24))
    assert out.shape == (1, 20, 24) and out.dtype == torch.float32
    # Nearest-neighbour doubling repeats each pixel twice along each axis.
    expected = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    np.testing.assert_array_equal(out[0].numpy(), expected)


def test_denormalise_inverts_image_to_tensor():
    pixels = random_image(33, 47, seed=1)
    pixels[0, 0] = (255, 255, 255)  # normalised values far above 1 must come back intact
    back = denormalise(image_to_tensor(Image.fromarray(pixels), (33, 47)))
    assert back.dtype == np.uint8 and back.shape == pixels.shape
    assert np.abs(back.astype(int) - pixels).max() <= 1


def test_load_rgb_sources(tmp_path):
    pixels = random_image(5, 7)
    path = save(tmp_path / "a.png", pixels)
    for source in (path, str(path), Image.fromarray(pixels), pixels):
        image = load_rgb(source)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert load_rgb(Image.fromarray(pixels[..., 0])).mode == "RGB"  # grayscale is fine
    with pytest.raises(UserError, match="H x W x 3 uint8"):
        load_rgb(pixels[..., 0])
    (tmp_path / "bad.png").write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="bad.png"):
        load_rgb(tmp_path / "bad.png")


# --- finding pairs ---------------------------------------------------------------------


def test_find_pairs_pairs_by_stem_across_types(tmp_path):
    for name in ("a.png", "b.jpg", "c.bmp"):
        save(tmp_path / "image" / name, random_image(8, 9))
    for name in ("a.jpg", "b.png", "c.png"):
        save(tmp_path / "mask" / name, np.zeros((8, 9), np.uint8))
    (tmp_path / "image" / "notes.txt").write_text("not an image")
    pairs = find_pairs(tmp_path)
    assert [(i.name, m.name) for i, m in pairs] == [
        ("a.png", "a.jpg"),
        ("b.jpg", "b.png"),
        ("c.bmp", "c.png"),
    ]


def test_find_pairs_extension_filters_and_custom_folders(tmp_path):
    for stem in ("a", "b"):
        save(tmp_path / "imgs" / f"{stem}.png", random_image(8, 9))
        save(tmp_path / "imgs" / f"{stem}.jpg", random_image(8, 9))
        save(tmp_path / "labels" / f"{stem}.png", np.zeros((8, 9), np.uint8))
        save(tmp_path / "labels" / f"{stem}.jpg", np.zeros((8, 9), np.uint8))
    with pytest.raises(UserError, match="--img_ext") as error:
        find_pairs(tmp_path, "imgs", "labels")
    assert "--mask_ext" in str(error.value)  # both folders' ambiguities, in one message
    pairs = find_pairs(tmp_path, "imgs", "labels", img_ext=".JPG", mask_ext="png")
    assert [(i.name, m.name) for i, m in pairs] == [("a.jpg", "a.png"), ("b.jpg", "b.png")]


def test_find_pairs_lists_every_problem(tmp_path):
    save(tmp_path / "image" / "good.png", random_image(8, 9))
    save(tmp_path / "mask" / "good.png", np.zeros((8, 9), np.uint8))
    save(tmp_path / "image" / "orphan.png", random_image(8, 9))
    save(tmp_path / "image" / "cut.png", random_image(64, 64))
    save(tmp_path / "mask" / "cut.png", np.zeros((64, 64), np.uint8))
    cut = tmp_path / "image" / "cut.png"
    cut.write_bytes(cut.read_bytes()[:200])  # truncated: the header still parses
    save(tmp_path / "image" / "big.png", random_image(10, 9))
    save(tmp_path / "mask" / "big.png", np.zeros((8, 9), np.uint8))
    (tmp_path / "mask" / "text.png").write_text("not an image")
    save(tmp_path / "image" / "text.png", random_image(8, 9))
    with pytest.raises(UserError) as error:
        find_pairs(tmp_path)
    message = str(error.value)
    assert "4 problem(s)" in message
    for expected in (
        "orphan.png: no mask",
        "cut.png: unreadable",
        "big.png: image is 9x10",
        "text.png: unreadable",
    ):
        assert expected in message
    assert "good.png" not in message


def test_find_pairs_empty_or_missing_folder(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "mask").mkdir()
    with pytest.raises(UserError, match=r"image: no images"):
        find_pairs(tmp_path)
    save(tmp_path / "image" / "a.png", random_image(4, 4))
    with pytest.raises(UserError, match=r"no images of type \.jpg"):
        find_pairs(tmp_path, img_ext=".jpg")
    with pytest.raises(UserError, match="no such folder"):
        find_pairs(tmp_path / "elsewhere")


# --- hold-out --------------------------------------------------------------------------


def fake_pairs(n: int) -> list[tuple[Path, Path]]:
    return [(Path(f"image/{i:03d}.png"), Path(f"mask/{i:03d}.png")) for i in range(n)]


def test_holdout_is_seeded_disjoint_and_order_independent():
    pairs = fake_pairs(30)
    train, val = holdout(pairs, 0.1, seed=3)
    assert len(val) == 3 and len(train) == 27
    assert sorted(train + val) == sorted(pairs)
    assert holdout(list(reversed(pairs)), 0.1, seed=3) == (train, val)
    shuffled = [pairs[i] for i in np.random.default_rng(9).permutation(30)]
    assert holdout(shuffled, 0.1, seed=3) == (train, val)
    others = {tuple(holdout(pairs, 0.1, seed=s)[1]) for s in range(5)}
    assert len(others) > 1  # the seed matters


def test_holdout_sizes():
    sizes = {n: len(holdout(fake_pairs(n), 0.1)[1]) for n in (0, 1, 2, 5, 20, 100)}
    assert sizes == {0: 0, 1: 0, 2: 1, 5: 1, 20: 2, 100: 10}
    assert len(holdout(fake_pairs(4), 0.9)[0]) == 1  # always keeps one for training
    with pytest.raises(UserError, match="from 0 to below 1"):
        holdout(fake_pairs(4), 1.0)


# --- augmentation ----------------------------------------------------------------------


def l_shape(h: int = 60, w: int = 80) -> np.ndarray:
    """An off-centre L, so that any flip or rotation changes it."""
    mask = np.zeros((h, w), bool)
    mask[10:45, 12:22] = True
    mask[35:45, 12:50] = True
    return mask


def encoded(mask: np.ndarray) -> Image.Image:
    """An image whose content is the mask (bright on black)."""
    return Image.fromarray(np.repeat(mask[..., None], 3, 2).astype(np.uint8) * 200)


def test_augment_is_reproducible():
    mask = l_shape()
    image = Image.fromarray(random_image(60, 80))
    runs = [Augment()(image, mask, np.random.default_rng(s)) for s in (5, 5, 6)]
    np.testing.assert_array_equal(np.asarray(runs[0][0]), np.asarray(runs[1][0]))
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(np.asarray(runs[0][0]), np.asarray(runs[2][0]))


def test_augment_flips_image_and_mask_together():
    mask = l_shape()
    flips = {
        "none": mask,
        "lr": mask[:, ::-1],
        "ud": mask[::-1],
        "both": mask[::-1, ::-1],
    }
    seen = set()
    for seed in range(24):
        image, out = Augment(max_degrees=0, **NO_JITTER)(
            encoded(mask), mask, np.random.default_rng(seed)
        )
        kind = next(k for k, v in flips.items() if np.array_equal(out, v))
        np.testing.assert_array_equal(np.asarray(image)[..., 0] > 100, flips[kind])
        seen.add(kind)
    assert seen == set(flips)


def orientation(mask: np.ndarray) -> float:
    """The angle in degrees of a shape's long axis, counter-clockwise from the x axis."""
    y, x = np.nonzero(mask)
    y, x = y - y.mean(), x - x.mean()
    return -np.degrees(0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean()))


def test_augment_rotates_within_bounds_and_keeps_alignment():
    bar = np.zeros((81, 101), bool)
    bar[36:45, 15:86] = True  # a long horizontal bar through the centre
    angles = []
    for seed in range(30):
        image, out = Augment(flip_p=0.0)(encoded(bar), bar, np.random.default_rng(seed))
        assert out.dtype == bool and out.shape == bar.shape
        angle = orientation(out)
        assert abs(angle) <= 15.5
        angles.append(angle)
        # The jittered image still shows the same shape: threshold half-way up its range.
        red = np.asarray(image)[..., 0].astype(float)
        shown = red > (red.min() + red.max()) / 2
        assert (shown != out).mean() < 0.02
        assert abs(orientation(shown) - angle) < 1.0
    assert max(angles) > 8 and min(angles) < -8  # both directions, near the bound


def test_augment_jitters_colour_within_bounds_and_leaves_mask():
    mask = l_shape()
    grey = Image.fromarray(np.full((60, 80, 3), 100, np.uint8))
    brightness_only = Augment(flip_p=0.0, max_degrees=0.0, contrast=0.0, saturation=0.0)
    levels = set()
    for seed in range(20):
        image, out = brightness_only(grey, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, mask)
        values = np.unique(np.asarray(image))
        assert len(values) == 1 and 80 <= values[0] <= 120  # factor within 1 +- 0.2
        levels.add(int(values[0]))
    assert len(levels) > 5


# --- datasets --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "toy", 6, 2, 3, seed=1)


def test_segmentation_dataset_items(synthetic):
    pairs = find_pairs(synthetic / "train")
    h, w = np.asarray(Image.open(pairs[0][1])).shape
    dataset = SegmentationDataset(pairs, (h, w))
    assert len(dataset) == 6 and dataset.pairs == pairs
    image, mask, index = dataset[0]
    assert index == 0
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert mask.shape == (1, h, w) and mask.dtype == torch.float32
    # At the file's own size the mask is the file, and the image comes back intact.
    np.testing.assert_array_equal(mask[0].numpy(), np.asarray(Image.open(pairs[0][1])) / 255)
    np.testing.assert_array_equal(denormalise(image), np.asarray(Image.open(pairs[0][0])))
    image, mask, _ = SegmentationDataset(pairs, (32, 48))[3]
    assert image.shape == (3, 32, 48) and mask.shape == (1, 32, 48)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_segmentation_dataset_augment_follows_torch_seed(synthetic):
    dataset = SegmentationDataset(find_pairs(synthetic / "train"), (32, 48), augment=True)

    def draw(seed: int, workers: int = 0) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=2, num_workers=workers)
        return [torch.cat([x.flatten(), y.flatten()]) for x, y, _ in loader]

    first = draw(0)
    assert all(torch.equal(a, b) for a, b in zip(first, draw(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, draw(1), strict=True))
    in_workers = draw(0, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(in_workers, draw(0, workers=2), strict=True))
    plain = SegmentationDataset(dataset.pairs, (32, 48))
    assert not torch.equal(first[0][: 3 * 32 * 48], plain[0][0].flatten())


# --- synthetic data --------------------------------------------------------------------


def test_synthetic_dataset_layout_and_content(tmp_path, synthetic):
    counts = {"train": 6, "val": 2, "test": 3}
    sizes = set()
    for split, n in counts.items():
        pairs = find_pairs(synthetic / split)  # same-size, readable pairs
        assert [p.name for p, _ in pairs] == [f"{i:04d}.png" for i in range(n)]
        for image_path, mask_path in pairs:
            image = np.asarray(Image.open(image_path))
            mask = np.asarray(Image.open(mask_path))
            assert image.ndim == 3 and mask.ndim == 2
            assert set(np.unique(mask)) == {0, 255}
            sizes.add(mask.shape)
            # The foreground is brighter than the background (what the demo relies on).
            assert image[mask > 0].mean() > image[mask == 0].mean() + 20
    assert len(sizes) > 3  # sizes vary, around the default 96 x 128
    assert all(80 <= h <= 112 and 108 <= w <= 148 for h, w in sizes)

    again = make_synthetic_dataset(tmp_path / "again", 6, 0, 3, seed=1)
    assert not (again / "val").exists()
    for split in ("train", "test"):
        for name in ("image/0002.png", "mask/0002.png"):
            a, b = (np.asarray(Image.open(root / split / name)) for root in (synthetic, again))
            np.testing.assert_array_equal(a, b)
    other = make_synthetic_dataset(tmp_path / "other", 1, 0, 0, seed=2)
    assert not np.array_equal(
        np.asarray(Image.open(other / "train/image/0000.png")),
        np.asarray(Image.open(synthetic / "train/image/0000.png")),
    )
    with pytest.raises(UserError, match="not empty"):
        make_synthetic_dataset(again)


# --- reading files: the binary-mask rule, upright and wide images -------------------------


def square(h: int = 32, w: int = 40) -> np.ndarray:
    """The hand-made truth of most mask tests: a block on the JPEG 8 x 8 grid."""
    truth = np.zeros((h, w), bool)
    truth[8:24, 16:32] = True
    return truth


def written(path: Path, im: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **options)
    return path


# VOC's palette: black, dark red, green, ..., and the boundary's cream at index 255.
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 3 * 252 + [224, 224, 192]


def coded_masks(truth: np.ndarray) -> dict[str, Image.Image]:
    """`truth` in each binary coding the rule reads, by name and file type."""
    t = truth.astype(np.uint8)
    red = np.zeros((*truth.shape, 3), np.uint8)
    red[truth] = (255, 0, 0)
    rgba = np.zeros((*truth.shape, 4), np.uint8)
    rgba[..., 3] = t * 255  # the object only in alpha; the colour black everywhere
    palette = Image.fromarray(t, "P")
    palette.putpalette(VOC_PALETTE)
    swapped = Image.fromarray(1 - t, "P")  # background at index 1, black; the object white
    swapped.putpalette([255, 255, 255, 0, 0, 0])
    return {
        "gray_0_255.png": Image.fromarray(t * 255),
        "gray_0_1.png": Image.fromarray(t),
        "gray_0_38.png": Image.fromarray(t * 38),  # a VOC palette mask turned gray
        "wide_0_65535.png": Image.fromarray(t.astype(np.uint16) * 65535),
        "wide_0_1.png": Image.fromarray(t.astype(np.uint16)),
        "one_bit.png": Image.fromarray(truth),
        "red.png": Image.fromarray(red),
        "red.jpg": Image.fromarray(red),
        "dark_red.png": Image.fromarray(red // 2),
        "gray_as_rgb.jpg": Image.fromarray(t * 255).convert("RGB"),
        "alpha_only.png": Image.fromarray(rgba, "RGBA"),
        "gray_alpha.png": Image.fromarray(rgba[..., 2:], "LA"),
        "voc_palette.png": palette,
        "swapped_palette.png": swapped,
    }


@pytest.mark.parametrize("name", list(coded_masks(square())))
def test_read_mask_reads_each_binary_coding(tmp_path, name):
    path = written(tmp_path / name, coded_masks(square())[name])
    np.testing.assert_array_equal(read_mask(path), square())


def test_read_mask_jpeg_noise_and_thin_edges(tmp_path):
    truth = np.zeros((64, 64), bool)
    truth[16:40, 8:48] = True
    # Grey levels near 0 and 255, as in Kvasir-SEG's JPEG masks.
    noise = np.random.default_rng(0).integers(0, 25, truth.shape)
    pixels = np.where(truth, 250 - noise, 5 + noise).astype(np.uint8)
    noisy = written(tmp_path / "noisy.jpg", Image.fromarray(pixels), quality=60)
    assert len(np.unique(np.asarray(Image.open(noisy)))) > 30  # the file really is noisy
    np.testing.assert_array_equal(read_mask(noisy), truth)
    empty = np.random.default_rng(1).integers(0, 8, truth.shape).astype(np.uint8)
    assert not read_mask(written(tmp_path / "empty.jpg", Image.fromarray(empty))).any()
    # A JPEG keeps no class indices: dark levels are noise, the background.
    classes = np.zeros((32, 32), np.uint8)
    classes[8:16], classes[16:24] = 1, 2
    assert not read_mask(written(tmp_path / "classes.jpg", Image.fromarray(classes))).any()
    # Anti-aliased edges (a lossless file): foreground above half, the ramp a thin band.
    ramp = np.clip((np.arange(64) - 20) * 60, 0, 255).astype(np.uint8)  # 0, 60, 120, ... 255
    smooth = np.tile(ramp, (16, 1))
    got = read_mask(written(tmp_path / "smooth.png", Image.fromarray(smooth)))
    np.testing.assert_array_equal(got, smooth > 127)


def test_read_mask_constant_and_blurred_masks(tmp_path):
    ones = Image.new("L", (16, 16), 1)
    assert read_mask(written(tmp_path / "ones.png", ones)).all()  # 0/1: all foreground
    ones.format = "JPEG"  # as a JPEG of an empty mask may decode: noise, the background
    assert not binary_mask(ones, "ones.jpg").any()
    dot = np.zeros((40, 40), np.uint8)
    dot[18:21, 18:21] = 255
    blurred = Image.fromarray(dot).filter(ImageFilter.GaussianBlur(1.5))  # all edge, no core
    got = read_mask(written(tmp_path / "dot.png", blurred))
    np.testing.assert_array_equal(got, np.asarray(blurred) > 127)


@pytest.mark.parametrize(("name", "pixels", "expected"), [
    ("classes.png", [0, 1, 2], "--num-classes 3"),
    ("boundary.png", [0, 1, 255], "--num-classes 2 --ignore-index 255"),
    ("levels.png", [0, 128, 255], "--num-classes 3 --class-map 0:0,128:1,255:2"),
    ("wide.png", [0, 1, 2], "--num-classes 3"),
])
def test_read_mask_refuses_class_values(tmp_path, name, pixels, expected):
    values = np.repeat(np.array(pixels, np.uint16 if name == "wide.png" else np.uint8), 12)
    path = written(tmp_path / name, Image.fromarray(np.tile(values, (20, 1))))
    with pytest.raises(UserError) as error:
        read_mask(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_read_mask_refuses_colours_and_palettes_it_cannot_tell(tmp_path):
    two = np.zeros((24, 24, 3), np.uint8)
    two[:8], two[16:] = (255, 0, 0), (0, 255, 0)
    dim = two.copy()
    dim[16:] = (0, 100, 0)  # below half the red's brightness, yet no edge of it
    three = Image.fromarray((np.arange(24 * 24).reshape(24, 24) % 3).astype(np.uint8), "P")
    three.putpalette(VOC_PALETTE)
    boundary = Image.fromarray(np.where(square(), 1, 0).astype(np.uint8), "P")
    boundary.putpalette(VOC_PALETTE)
    edge = np.zeros((32, 40), np.uint8)
    edge[7, :] = 255
    boundary = Image.fromarray(np.maximum(np.asarray(boundary), edge), "P")
    boundary.putpalette(VOC_PALETTE)
    bright = Image.fromarray(square().astype(np.uint8), "P")
    bright.putpalette([255, 255, 255, 255, 0, 0])
    for name, im, expected in [
        ("two.png", Image.fromarray(two), "several colours"),
        ("two.jpg", Image.fromarray(two), "several colours"),
        ("dim.png", Image.fromarray(dim), "several colours"),
        ("three.png", three, "--num-classes 3"),
        ("voc.png", boundary, "--num-classes 2 --ignore-index 255"),
        ("bright.png", bright, "--num-classes 2"),
    ]:
        with pytest.raises(UserError, match=expected) as error:
            read_mask(written(tmp_path / name, im))
        assert name in str(error.value)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    pixels = random_image(6, 10)
    # 6: the stored picture is shown turned a quarter clockwise; 3: half a turn.
    for orientation, upright in [(6, np.rot90(pixels, -1)), (3, np.rot90(pixels, 2))]:
        path = written(tmp_path / f"o{orientation}.png", Image.fromarray(pixels),
                       exif=exif(orientation))
        np.testing.assert_array_equal(np.asarray(load_rgb(path)), upright)
    mask = written(tmp_path / "mask" / "o6.png", Image.fromarray(square(6, 10).astype(np.uint8)),
                   exif=exif(6))
    np.testing.assert_array_equal(read_mask(mask), np.rot90(square(6, 10), -1))
    assert check_pair(tmp_path / "o6.png", mask) is None  # both upright: 6 x 10 each
    plain = written(tmp_path / "mask" / "plain.png", Image.fromarray(square(6, 10)))
    assert "is 6x10 but its mask plain.png is 10x6" in check_pair(tmp_path / "o6.png", plain)


def test_images_decode_to_the_rgb_opencv_gives(tmp_path):
    wide = np.random.default_rng(0).integers(0, 65536, (5, 7), dtype=np.uint16)
    path = written(tmp_path / "wide.png", Image.fromarray(wide))
    np.testing.assert_array_equal(np.asarray(load_rgb(path)),
                                  np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, 2))
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((0, 0), (255, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 0, 0, 128))
    got = np.asarray(load_rgb(written(tmp_path / "cmyk.jpg", cmyk, quality=100)))
    # R = (255 - C)(255 - K) / 255: cyan, then a mid grey.
    assert np.abs(got.astype(int) - [[(0, 255, 255), (127, 127, 127)]]).max() <= 2
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette(VOC_PALETTE)
    got = load_rgb(written(tmp_path / "palette.png", palette))
    np.testing.assert_array_equal(np.asarray(got), [[(0, 0, 0), (128, 0, 0)]])
    rgba = random_image(3, 4, seed=2)
    alpha = np.dstack([rgba, np.zeros((3, 4), np.uint8)])  # fully transparent: alpha dropped
    got = load_rgb(written(tmp_path / "rgba.png", Image.fromarray(alpha, "RGBA")))
    np.testing.assert_array_equal(np.asarray(got), rgba)
    gray_alpha = Image.fromarray(np.dstack([rgba[..., 0], rgba[..., 1]]), "LA")
    got = load_rgb(written(tmp_path / "la.png", gray_alpha))
    np.testing.assert_array_equal(np.asarray(got), np.repeat(rgba[..., :1], 3, 2))


def bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header declares side x side pixels (a few bytes on disk)."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_oversized_images_are_refused_in_one_line(tmp_path, monkeypatch, recwarn):
    with pytest.raises(UserError, match="too many pixels") as error:
        load_rgb(bomb(tmp_path / "bomb.png"))
    assert str(error.value).startswith(f"{tmp_path / 'bomb.png'}: ")
    assert "\n" not in str(error.value)
    # Between one and two times the limit PIL only warns: refused all the same, no warning.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = written(tmp_path / "large.png", Image.new("L", (15, 10)))
    with pytest.raises(UserError, match="large.png: too many pixels"):
        read_mask(path)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
