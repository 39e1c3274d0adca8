"""`segdino prepare` on miniature copies of each download: same folder and file names and
formats (JPEG masks with compression noise, superpixel files, metadata CSVs, nested folders,
zips), a few 20x16 images each."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from segdino.commands import main
from segdino.data.prepare import output, prepare
from segdino.data.prepare.kvasir_seg import published_split
from segdino.errors import UserError

W, H = 20, 16
SPLITS = ("train", "val", "test")


# --- miniature downloads -------------------------------------------------------------------


def write_image(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)


def write_mask(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    """A 0/255 disc; saved as JPEG (by suffix) it gains compression noise at its edge."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.new("L", size, 0)
    top, left = seed % 5, seed % 7
    ImageDraw.Draw(mask).ellipse((left, top, left + 12, top + 10), fill=255)
    mask.save(path, **({"quality": 40} if path.suffix == ".jpg" else {}))


def zip_folder(folder: Path, archive: Path) -> Path:
    """`folder` zipped as a download is: the folder itself is the top entry."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent))
    return archive


def make_tn3k(root: Path, trainval: list[int], test: list[int], folds: dict | None) -> Path:
    base = root / "tn3k"
    for part, numbers in (("trainval", trainval), ("test", test)):
        for n in numbers:
            write_image(base / f"{part}-image" / f"{n:04d}.jpg", n)
            write_mask(base / f"{part}-mask" / f"{n:04d}.jpg", n)
    for name in ("label4trainval.csv", "label4test.csv"):
        (root / name).write_text("id,label\n0000,1\n")
    (root / "tn3k-trainval.json").write_text("{}")
    for k, val in (folds or {}).items():
        train = [i for i in range(len(trainval)) if i not in val]
        (root / f"tn3k-trainval-fold{k}.json").write_text(json.dumps({"train": train, "val": val}))
    return base


def make_kvasir(root: Path, ids: list[str], nested: bool = False) -> Path:
    base = root / "Kvasir-SEG" / "Kvasir-SEG" if nested else root / "Kvasir-SEG"
    for seed, image_id in enumerate(ids):
        write_image(base / "images" / f"{image_id}.jpg", seed)
        write_mask(base / "masks" / f"{image_id}.jpg", seed)
    (base / "kavsir_bboxes.json").write_text("{}")
    return base


ISIC_SETS = {"train": "Training", "val": "Validation", "test": "Test_v2"}


def make_isic_zips(stage: Path, download: Path, numbers: dict[str, list[int]]) -> None:
    """The six ISIC 2017 Part 1 zips; Training_Data nests a same-name folder and the
    validation masks spell `_Segmentation`."""
    download.mkdir(parents=True, exist_ok=True)
    for split, name in ISIC_SETS.items():
        data = stage / f"ISIC-2017_{name}_Data"
        truth = stage / f"ISIC-2017_{name}_Part1_GroundTruth"
        files = data / data.name if split == "train" else data
        suffix = "_Segmentation" if split == "val" else "_segmentation"
        for n in numbers[split]:
            write_image(files / f"ISIC_{n:07d}.jpg", n)
            write_mask(files / f"ISIC_{n:07d}_superpixels.png", n + 1)
            write_mask(truth / f"ISIC_{n:07d}{suffix}.png", n)
        (files / f"ISIC-2017_{name}_Data_metadata.csv").write_text("image_id,age\n")
        for folder in (data, truth):
            zip_folder(folder, download / f"{folder.name}.zip")


# --- checks ----------------------------------------------------------------------------------


def ids_in(out: Path, split: str) -> set[str]:
    """The ids on disk, images and masks agreeing, and as recorded in split.json."""
    images = {p.stem for p in (out / split / "image").iterdir()}
    assert images == {p.stem for p in (out / split / "mask").iterdir()}
    record = json.loads((out / "split.json").read_text())["splits"][split]
    assert set(record["ids"]) == images and record["count"] == len(images)
    return images


def assert_written(out: Path, split: str, image: Path, mask: Path) -> None:
    """The image byte for byte; the mask single-channel 0/255, the source thresholded at 128."""
    assert (out / split / "image" / image.name).read_bytes() == image.read_bytes()
    with Image.open(out / split / "mask" / f"{image.stem}.png") as im:
        assert (im.format, im.mode) == ("PNG", "L")
        written = np.asarray(im)
    with Image.open(mask) as im:
        source = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(written, np.where(source >= 128, 255, 0))


def mtimes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*")}


def names(numbers) -> set[str]:
    return {f"{n:04d}" for n in numbers}


# --- TN3K ------------------------------------------------------------------------------------


def test_tn3k_zip_val_is_the_fold_files_val(tmp_path):
    trainval = list(range(0, 24, 2))  # numbers 0, 2, ... 22: positions differ from numbers
    base = make_tn3k(tmp_path / "dl", trainval, [0, 1, 2], {2: [0, 5, 11], 0: [1]})
    archive = zip_folder(tmp_path / "dl", tmp_path / "tn3k.zip")
    out = tmp_path / "out"

    record = prepare("tn3k", archive, out, fold=2, workers=2)

    assert ids_in(out, "val") == {"0000", "0010", "0022"}  # positions 0, 5, 11
    assert ids_in(out, "train") == names(trainval) - {"0000", "0010", "0022"}
    assert ids_in(out, "test") == {"0000", "0001", "0002"}
    assert record["complete"] and record["options"] == {"fold": 2}
    assert "tn3k-trainval-fold2.json" in record["splits"]["val"]["source"]
    with Image.open(base / "trainval-mask" / "0004.jpg") as im:  # the noise this is about:
        gray = im.convert("L")
        assert set(np.unique(np.asarray(gray))) - {0, 255}
        assert (np.asarray(gray.convert("1")) != (np.asarray(gray) >= 128)).any()  # dithering
    for split, part, number in (("train", "trainval", 4), ("val", "trainval", 10)):
        image = base / f"{part}-image" / f"{number:04d}.jpg"
        assert_written(out, split, image, base / f"{part}-mask" / image.name)
    assert_written(out, "test", base / "test-image/0001.jpg", base / "test-mask/0001.jpg")
    assert not (out / ".source").exists()  # the extraction is removed once complete


def test_tn3k_without_fold_files_takes_every_fifth_position(tmp_path, capsys):
    trainval = list(range(0, 24, 2))
    make_tn3k(tmp_path / "dl", trainval, [0, 1], folds=None)

    record = prepare("tn3k", tmp_path / "dl", tmp_path / "out", fold=1, workers=2)

    assert ids_in(tmp_path / "out", "val") == {"0002", "0012", "0022"}  # positions 1, 6, 11
    assert len(ids_in(tmp_path / "out", "train")) == 9
    assert "i % 5 == 1" in record["splits"]["val"]["source"]
    err = capsys.readouterr().err
    assert "no tn3k-trainval-fold1.json" in err
    assert "12 TN3K trainval images found; the full dataset has 2879" in err


def test_tn3k_fold_file_of_another_download_is_refused(tmp_path):
    make_tn3k(tmp_path / "dl", [0, 1, 2, 3], [0], {0: [0, 7]})
    with pytest.raises(UserError, match="position 7 is outside the 4 trainval images"):
        prepare("tn3k", tmp_path / "dl", tmp_path / "out", workers=1)


# --- Kvasir-SEG ------------------------------------------------------------------------------

TRAIN_IDS, TEST_IDS = published_split()


def test_shipped_kvasir_split_lists():
    assert (len(TRAIN_IDS), len(TEST_IDS)) == (880, 120)
    assert len(set(TRAIN_IDS) | set(TEST_IDS)) == 1000
    assert "cju0s690hkp960855tjuaqvv0" in TEST_IDS  # first line of the published test list


def test_kvasir_published_split_from_kaggle_nested_zip(tmp_path, capsys):
    train_ids, test_ids = TRAIN_IDS[100:110], TEST_IDS[50:54]
    base = make_kvasir(tmp_path / "dl", train_ids + test_ids, nested=True)
    archive = zip_folder(tmp_path / "dl" / "Kvasir-SEG", tmp_path / "kvasir-seg.zip")

    record = prepare("kvasir-seg", archive, tmp_path / "out", val_fraction=0.3, workers=2)

    out = tmp_path / "out"
    assert ids_in(out, "test") == set(test_ids)
    val = ids_in(out, "val")
    assert len(val) == 3 and val < set(train_ids)
    assert ids_in(out, "train") == set(train_ids) - val
    image = base / "images" / f"{test_ids[0]}.jpg"
    assert_written(out, "test", image, base / "masks" / image.name)
    assert "14 Kvasir-SEG images found; the full dataset has 1000" in record["notes"]
    assert "986 ids of the published split are not in the download" in capsys.readouterr().err

    # The same seed, from the extracted folder this time: the same val. Another seed: another.
    again = prepare("kvasir-seg", tmp_path / "dl", tmp_path / "again", val_fraction=0.3)
    assert [again["splits"][s]["ids"] for s in SPLITS] == [
        record["splits"][s]["ids"] for s in SPLITS
    ]
    seed1 = prepare("kvasir-seg", archive, tmp_path / "seed1", val_fraction=0.3, seed=1)
    assert set(seed1["splits"]["val"]["ids"]) != val


def test_kvasir_id_outside_the_published_split(tmp_path, capsys):
    stranger = "z" * 25
    make_kvasir(tmp_path / "dl", [TRAIN_IDS[0], TEST_IDS[0], stranger])
    args = ["prepare", "kvasir-seg", str(tmp_path / "dl"), str(tmp_path / "out")]

    assert main(args) == 2
    assert f"{stranger}.jpg: id not in the published split" in capsys.readouterr().err

    assert main([*args, "--skip-bad"]) == 0
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert [line for line in record["skipped"] if stranger in line]
    assert ids_in(tmp_path / "out", "train") | ids_in(tmp_path / "out", "val") == {TRAIN_IDS[0]}


# --- ISIC 2017 -------------------------------------------------------------------------------


def test_isic2017_official_sets_from_the_six_zips(tmp_path):
    numbers = {"train": [0, 1, 2, 3], "val": [10, 11], "test": [20, 21, 22]}
    make_isic_zips(tmp_path / "stage", tmp_path / "dl", numbers)

    record = prepare("isic2017", tmp_path / "dl", tmp_path / "out", workers=2)

    out = tmp_path / "out"
    for split, wanted in numbers.items():
        assert ids_in(out, split) == {f"ISIC_{n:07d}" for n in wanted}
    assert not list(out.rglob("*superpixels*")) and not list(out.rglob("*.csv"))
    assert record["options"] == {}
    nested = tmp_path / "stage/ISIC-2017_Training_Data/ISIC-2017_Training_Data"
    truth = tmp_path / "stage/ISIC-2017_Training_Part1_GroundTruth"
    assert_written(
        out, "train", nested / "ISIC_0000002.jpg", truth / "ISIC_0000002_segmentation.png"
    )
    assert_written(
        out,
        "val",
        tmp_path / "stage/ISIC-2017_Validation_Data/ISIC_0000011.jpg",
        tmp_path / "stage/ISIC-2017_Validation_Part1_GroundTruth/ISIC_0000011_Segmentation.png",
    )


def test_isic2017_missing_download_is_named(tmp_path):
    make_isic_zips(tmp_path / "stage", tmp_path / "dl", {"train": [0], "val": [1], "test": [2]})
    (tmp_path / "dl" / "ISIC-2017_Test_v2_Part1_GroundTruth.zip").unlink()
    with pytest.raises(UserError, match="no ISIC-2017_Test_v2_Part1_GroundTruth folder or zip"):
        prepare("isic2017", tmp_path / "dl", tmp_path / "out")


# --- any folder ------------------------------------------------------------------------------


def make_folder(
    root: Path, count: int, suffix: str = "", reverse: bool = False
) -> tuple[Path, Path]:
    numbers = range(count)
    for n in reversed(numbers) if reverse else numbers:
        write_image(root / "images" / f"case{n:02d}.png", n)
        write_mask(root / "masks" / f"case{n:02d}{suffix}.png", n)
    return root / "images", root / "masks"


def test_folder_seeded_shares_independent_of_file_order(tmp_path):
    images, masks = make_folder(tmp_path / "a", 10, suffix="_mask")
    opts = {"masks": masks, "mask_suffix": "_mask", "val_fraction": 0.2, "test_fraction": 0.3}

    record = prepare("folder", images, tmp_path / "out", **opts)

    counts = {split: len(ids_in(tmp_path / "out", split)) for split in SPLITS}
    assert counts == {"train": 5, "val": 2, "test": 3}
    assert set().union(*(ids_in(tmp_path / "out", s) for s in SPLITS)) == {
        f"case{n:02d}" for n in range(10)
    }
    images_b, masks_b = make_folder(tmp_path / "b", 10, suffix="_mask", reverse=True)
    other = prepare("folder", images_b, tmp_path / "out_b", **opts | {"masks": masks_b})
    assert [other["splits"][s]["ids"] for s in SPLITS] == [
        record["splits"][s]["ids"] for s in SPLITS
    ]


# --- problems, reruns, refusals, interruptions ------------------------------------------------


def test_problems_listed_at_once_then_left_out_with_skip_bad(tmp_path, capsys):
    images, masks = make_folder(tmp_path, 6)
    (masks / "case01.png").unlink()  # missing mask
    (images / "case02.png").write_bytes(b"not a png")  # unreadable
    write_mask(masks / "case03.png", 3, size=(W + 1, H))  # size differs from its image
    args = ["prepare", "folder", str(images), str(tmp_path / "out"), "--masks", str(masks)]

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("segdino prepare: error: ") and "3 problem(s)" in err
    for name in ("case01.png: no mask", "case02.png: unreadable", "case03.png: image is 20x16"):
        assert name in err
    assert not (tmp_path / "out").exists()  # nothing written

    assert main([*args, "--skip-bad"]) == 0
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert len(record["skipped"]) == 3
    written = set().union(*(ids_in(tmp_path / "out", split) for split in SPLITS))
    assert written == {"case00", "case04", "case05"}


def test_second_run_is_a_noop(tmp_path, capsys):
    images, masks = make_folder(tmp_path, 5)
    args = ["prepare", "folder", str(images), str(tmp_path / "out"), "--masks", str(masks)]
    assert main(args) == 0
    before = mtimes(tmp_path / "out")

    assert main(args) == 0

    assert mtimes(tmp_path / "out") == before
    assert "nothing to do" in capsys.readouterr().err


def test_refuses_to_mix_outputs(tmp_path, capsys):
    make_kvasir(tmp_path / "kvasir", TRAIN_IDS[:3])
    make_tn3k(tmp_path / "tn3k", [0, 1, 2], [0], None)
    out = tmp_path / "out"
    prepare("kvasir-seg", tmp_path / "kvasir", out)
    before = mtimes(out)

    assert main(["prepare", "tn3k", str(tmp_path / "tn3k"), str(out)]) == 2
    assert "refusing to mix" in capsys.readouterr().err
    with pytest.raises(UserError, match="refusing to mix"):
        prepare("kvasir-seg", tmp_path / "kvasir", out, seed=1)
    assert mtimes(out) == before

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty and has no split.json"):
        prepare("tn3k", tmp_path / "tn3k", tmp_path / "mine")


def test_interrupted_run_completes_when_run_again(tmp_path, monkeypatch):
    images, masks = make_folder(tmp_path, 8)
    out = tmp_path / "out"
    real_write, calls = output._write_pair, []

    def dies_on_fourth(pair, split_dir):
        calls.append(pair)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real_write(pair, split_dir)

    monkeypatch.setattr(output, "_write_pair", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare("folder", images, out, masks=masks, workers=1)
    monkeypatch.setattr(output, "_write_pair", real_write)

    assert json.loads((out / "split.json").read_text())["complete"] is False
    assert not (out / output.LOCK).exists()  # released and removed for the rerun
    first = {p: t for p, t in mtimes(out).items() if p.is_file() and p.name != "split.json"}
    lost = calls[3][0].name  # the pair being written when the run died
    assert 2 * 3 <= len(first) < 2 * 8 and lost not in {p.name for p in first}
    stale = out / "train" / "mask" / ".case00.x1y2.png"  # what a killed atomic write leaves
    stale.write_bytes(b"half")

    record = prepare("folder", images, out, masks=masks, workers=1)

    assert record["complete"]
    assert sum(len(ids_in(out, split)) for split in SPLITS) == 8
    assert not stale.exists()
    assert {p: t for p, t in mtimes(out).items() if p in first} == first


def test_flag_of_another_dataset_is_an_error(tmp_path, capsys):
    assert main(["prepare", "kvasir-seg", str(tmp_path), str(tmp_path / "o"), "--fold", "1"]) == 2
    assert "--fold does not apply to kvasir-seg" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "message"), [
    ({"fold": 5}, "--fold '5': expected an integer from 0 to 4"),
    ({"val_fraction": 1.0}, "--val-fraction '1.0': expected a number from 0 up to"),
    ({"workers": 0}, "--workers '0': expected an integer >= 1"),
])
def test_python_api_checks_as_the_flags_do(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        prepare("tn3k", tmp_path, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_a_run_holding_out_keeps_others_out(tmp_path):
    images, masks = make_folder(tmp_path, 4)
    out = tmp_path / "data" / "out"
    with output._locked(out):  # as a running prepare does
        assert (out / output.LOCK).is_file()
        with pytest.raises(UserError, match="another segdino prepare is writing there"):
            prepare("folder", images, out, masks=masks)
    assert not out.exists() or not any(out.iterdir())

    prepare("folder", images, out, masks=masks)  # once released
    assert sorted(p.name for p in out.iterdir()) == ["split.json", "test", "train", "val"]


def test_failed_run_removes_what_it_made(tmp_path):
    images, masks = make_folder(tmp_path, 4)
    (images / "case01.png").write_bytes(b"not a png")
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(UserError, match="unreadable"):
        prepare("folder", images, out, masks=masks)
    assert not (tmp_path / "new").exists()
