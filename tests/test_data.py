"""The data pipeline: preprocessing, pairing files, the hold-out, augmentation, datasets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segdino.data.dataset import SegmentationDataset, find_pairs
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


def test_mask_to_tensor_zero_one_mask_and_nearest_resize():
    mask01 = (random_image(10, 12)[..., 0] > 128).astype(np.uint8)  # values 0 and 1
    out = mask_to_tensor(Image.fromarray(mask01), (20, 24))
    assert out.shape == (1, 20, 24) and out.dtype == torch.float32
    # Nearest-neighbour doubling repeats each pixel twice along each axis.
    expected = np.repeat(np.repeat(mask01, 2, 0), 2, 1)
    np.testing.assert_array_equal(out[0].numpy(), expected)
    np.testing.assert_array_equal(mask_to_tensor(mask01.astype(bool), (20, 24)), out)


def test_mask_to_tensor_thresholds_noisy_jpeg():
    truth = np.zeros((64, 64), bool)
    truth[16:40, 8:48] = True  # on JPEG's 8x8 block grid, so ringing stays small
    # Grey levels near 0 and 255, as in Kvasir-SEG's JPEG masks.
    noise = np.random.default_rng(0).integers(0, 25, truth.shape)
    pixels = np.where(truth, 250 - noise, 5 + noise).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=60)
    noisy = Image.open(buffer)
    values = np.unique(np.asarray(noisy))
    assert len(values) > 30  # the file really is noisy
    np.testing.assert_array_equal(mask_to_tensor(noisy, (64, 64))[0].numpy(), truth)


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
    with pytest.raises(UserError, match="between 0 and 1"):
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
