"""Multi-class segmentation on generated data: class-index masks (grayscale, palette, class
map, ignore index) read against the values written, the losses against hand computation, the
per-class metrics against hand counts, K-class checkpoints in both layouts, and
train / test / predict end to end for K = 3."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from PIL import Image
from scipy.stats import entropy

from segdino.backbone import load_backbone
from segdino.checkpoints.format import save_segdino
from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.reference import save_reference
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.data.masks import IGNORE_INDEX, IGNORED, MaskFormat
from segdino.data.synthetic import make_synthetic_dataset
from segdino.data.transforms import Augment
from segdino.errors import UserError
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.metrics import class_scores, mean_scores, summarise_classes
from segdino.models.preprocessing import Preprocessing
from segdino.models.segdino import SegDINO
from segdino.training.config import TrainConfig
from segdino.training.loss import compute_loss
from segdino.visualize import FILL_ALPHA, fitted, overlay

TINY = FIXTURES / "dinov3" / "tiny_mlp.pth"
# The first colours of the class palette, written out: background black, then Okabe-Ito.
COLOURS = {0: (0, 0, 0), 1: (230, 159, 0), 2: (86, 180, 233)}


def save(array: np.ndarray, path: Path, mode: str | None = "L",
         palette: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode)
    if palette is not None:
        image.putpalette(palette)
    image.save(path)
    return path


# --- reading class-index masks -------------------------------------------------------------


def test_grayscale_masks_are_read_as_class_indices(tmp_path: Path) -> None:
    classes = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    got = MaskFormat(3).read(save(classes, tmp_path / "m.png"))
    assert got.dtype == np.uint8 and np.array_equal(got, classes)  # never binarised
    wide = np.array([[0, 1], [2, 1]], np.uint16)  # a 16-bit grayscale PNG
    assert np.array_equal(MaskFormat(3).read(save(wide, tmp_path / "w.png", None)), wide)
    as_rgb = np.repeat(classes[..., None], 3, axis=2)  # gray saved as RGB
    assert np.array_equal(MaskFormat(3).read(save(as_rgb, tmp_path / "g.png", "RGB")), classes)
    as_rgb[0, 0] = (200, 30, 30)
    with pytest.raises(UserError, match="c.png: a colour mask"):
        MaskFormat(3).read(save(as_rgb, tmp_path / "c.png", "RGB"))


def test_palette_masks_are_read_by_palette_index(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 1], [2, 0, 2]], np.uint8)
    # Colours whose gray levels are nothing like the indices.
    path = save(indices, tmp_path / "p.png", "P", [0, 0, 0, 200, 30, 30, 30, 200, 30])
    with Image.open(path) as im:
        assert im.mode == "P" and not np.array_equal(np.asarray(im.convert("L")), indices)
    assert np.array_equal(MaskFormat(3).read(path), indices)


def test_class_map_and_ignore_index(tmp_path: Path) -> None:
    values = np.array([[0, 128, 255], [7, 128, 0]], np.uint8)
    path = save(values, tmp_path / "m.png")
    mapped = MaskFormat(3, "0:0,128:1,255:2", ignore_index=7).read(path)
    assert np.array_equal(mapped, [[0, 1, 2], [IGNORED, 1, 0]])
    # the map may send a value to the ignore index, too
    to_ignore = MaskFormat(3, "0:0, 128:1, 255:9, 7:2", ignore_index=9).read(path)
    assert np.array_equal(to_ignore, [[0, 1, IGNORED], [2, 1, 0]])
    # without a map: the values are classes, the ignore index is no class
    plain = save(np.array([[0, 1, 255]], np.uint8), tmp_path / "plain.png")
    read = MaskFormat(2, ignore_index=255).read(plain)
    assert np.array_equal(read, [[0, 1, IGNORED]])
    target = MaskFormat(2, ignore_index=255).to_tensor(read, (1, 3))
    assert target.dtype == torch.int64 and target.tolist() == [[0, 1, IGNORE_INDEX]]


def test_values_that_are_no_class_are_listed_file_by_file(tmp_path: Path) -> None:
    split = tmp_path / "split"
    for i, top in enumerate([2, 3, 1, 9]):
        save(np.full((6, 8, 3), 100, np.uint8), split / "image" / f"{i}.png", "RGB")
        mask = np.zeros((6, 8), np.uint8)
        mask[0, :2] = top, 5 if top == 9 else 0
        save(mask, split / "mask" / f"{i}.png")
    with pytest.raises(UserError) as err:
        find_pairs(split, mask_format=MaskFormat(3))
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "1.png: value(s) 3 not a class 0..2" in message
    assert "3.png: value(s) 5, 9 not a class 0..2" in message
    assert "0.png" not in message and "2.png" not in message
    with pytest.raises(UserError, match=r"3.png: value\(s\) 5, 9 not in --class-map 0:0,2:1"):
        MaskFormat(2, "0:0,2:1").read(split / "mask" / "3.png")
    assert MaskFormat(2, "0:0,2:1").read(split / "mask" / "0.png").max() == 1
    assert len(find_pairs(split, mask_format=MaskFormat(10))) == 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"num_classes": 0}, "--num-classes 0"),
    ({"num_classes": 1, "class_map": "0:0"}, "--class-map"),
    ({"num_classes": 1, "ignore_index": 255}, "--ignore-index"),
    ({"num_classes": 3, "ignore_index": 2}, "--ignore-index 2: is a class"),
    ({"num_classes": 3, "class_map": "0:0,x"}, "--class-map '0:0,x': expected VALUE:CLASS"),
    ({"num_classes": 3, "class_map": "0:0,0:1"}, "named twice"),
    ({"num_classes": 3, "class_map": "0:0,128:3"}, r"class\(es\) 3 out of range"),
])
def test_bad_class_settings(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        MaskFormat(**settings)


def test_class_masks_resize_by_nearest_neighbour() -> None:
    mask = np.array([[0, 1], [2, IGNORED]], np.uint8)
    fmt = MaskFormat(3, ignore_index=255)
    assert np.array_equal(fmt.resize(mask, (4, 4)), np.kron(mask, np.ones((2, 2), np.uint8)))
    assert fmt.to_tensor(mask, (4, 4))[3, 3] == IGNORE_INDEX


def test_augmentation_keeps_class_values() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    mask = np.random.default_rng(1).integers(0, 3, (20, 30)).astype(np.uint8)
    flipped = Augment(flip_p=1.0, max_degrees=0.0)(image, mask, np.random.default_rng(2))[1]
    assert flipped.dtype == np.uint8 and np.array_equal(flipped, mask[::-1, ::-1])
    rotated = Augment()(image, mask, np.random.default_rng(3))[1]
    assert set(np.unique(rotated)) <= {0, 1, 2}


# --- losses --------------------------------------------------------------------------------


def hand_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_cross_entropy_and_dice_by_hand() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 2, 3))
    target = rng.integers(0, 3, (2, 2, 3))
    target[0, 1, 2] = target[1, 0, 0] = IGNORE_INDEX
    prob = hand_softmax(logits)
    valid = target != IGNORE_INDEX
    picked = [prob[b, target[b, i, j], i, j] for b, i, j in zip(*np.nonzero(valid), strict=True)]
    ce = -np.mean(np.log(picked))
    # soft Dice over the foreground classes, per image and class, ignored pixels left out
    dices = []
    for b in range(2):
        for c in (1, 2):
            p, t = prob[b, c] * valid[b], (target[b] == c) & valid[b]
            dices.append((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    dice = np.mean(1 - np.array(dices))

    logits_t, target_t = torch.from_numpy(logits), torch.from_numpy(target)
    assert compute_loss(logits_t, target_t, "ce").item() == pytest.approx(ce, abs=1e-12)
    torch_ce = F.cross_entropy(logits_t, target_t, ignore_index=IGNORE_INDEX).item()
    assert torch_ce == pytest.approx(ce, abs=1e-12)
    combined = compute_loss(logits_t, target_t, "ce+dice").item()
    assert combined == pytest.approx(ce + dice, abs=1e-12)


def test_binary_losses_unchanged_by_hand() -> None:
    rng = np.random.default_rng(1)
    logits, target = rng.normal(size=(2, 1, 3, 3)), rng.integers(0, 2, (2, 1, 3, 3)) * 1.0
    p = 1 / (1 + np.exp(-logits))
    bce = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    dice = np.mean([1 - (2 * (p[b] * target[b]).sum() + 1) / (p[b].sum() + target[b].sum() + 1)
                    for b in range(2)])
    args = torch.from_numpy(logits), torch.from_numpy(target)
    assert compute_loss(*args, "bce").item() == pytest.approx(bce, abs=1e-12)
    assert compute_loss(*args, "bce+dice").item() == pytest.approx(bce + dice, abs=1e-12)


def test_loss_and_class_count_must_agree(tmp_path: Path) -> None:
    base = {"data_dir": "d", "dataset": "s", "dino_ckpt": "w"}
    assert TrainConfig(**base).loss == "bce"
    assert TrainConfig(**base, num_classes=3).loss == "ce"
    with pytest.raises(UserError, match="--loss bce: with --num-classes 3, expected ce or ce"):
        TrainConfig(**base, num_classes=3, loss="bce")
    with pytest.raises(UserError, match=r"--loss ce\+dice: with --num-classes 1"):
        TrainConfig(**base, loss="ce+dice")
    with pytest.raises(UserError, match="--class-names: 2 names for --num-classes 3"):
        TrainConfig(**base, num_classes=3, class_names=["a", "b"])


# --- metrics -------------------------------------------------------------------------------


def test_per_class_metrics_by_hand() -> None:
    pred = np.array([[0, 1, 1, 0],
                     [0, 1, 2, 2],
                     [0, 0, 2, 2],
                     [0, 0, 0, 0]])
    truth = np.array([[0, 1, 1, 1],
                      [0, 1, 2, 2],
                      [0, 0, IGNORED, 2],
                      [0, 0, 0, 0]], np.uint8)
    one, two, three = class_scores(pred, truth, num_classes=4)
    eps = 1e-6
    # class 1: 3 predicted pixels, 4 true ones, 3 in common
    assert one.dice == pytest.approx((6 + eps) / (7 + eps), abs=1e-12)
    assert one.iou == pytest.approx((3 + eps) / (4 + eps), abs=1e-12)
    assert one.precision == pytest.approx(1.0) and one.recall == pytest.approx(0.75, abs=1e-6)
    # only (0, 3) is off the prediction, 1 px from it: the 95th percentile of [0, 0, 0, 1]
    assert one.hd95 == pytest.approx(0.85)
    # class 2: the ignored pixel is left out, and what remains agrees exactly
    assert (two.dice, two.iou, two.hd95) == (pytest.approx(1.0), pytest.approx(1.0), 0.0)
    # class 3 is in neither mask: every ratio 1 (as for binary), HD95 undefined
    assert three.dice == pytest.approx(1.0) and math.isnan(three.hd95)
    mean = mean_scores([one, two, three])
    assert mean.dice == pytest.approx((one.dice + 2) / 3)
    assert mean.hd95 == pytest.approx(0.85 / 2)  # over the finite values only

    other = class_scores(np.zeros((4, 4), int), truth, num_classes=4)
    summary = summarise_classes([[one, two, three], other], num_classes=4)
    assert summary["images"] == 2 and list(summary["per_class"]) == ["1", "2", "3"]
    assert summary["per_class"]["1"]["dice"] == pytest.approx((one.dice + other[0].dice) / 2)
    assert summary["per_class"]["1"]["hd95_infinite"] == 1  # the empty prediction
    assert summary["per_class"]["3"]["hd95_undefined"] == 2
    assert summary["dice"] == pytest.approx(
        np.mean([summary["per_class"][c]["dice"] for c in "123"]))


# --- pictures ------------------------------------------------------------------------------


def test_class_overlay_colours() -> None:
    image = np.full((20, 20, 3), 100, np.uint8)
    pred = np.zeros((20, 20), np.uint8)
    pred[2:10, 2:10], pred[12:18, 12:18] = 1, 2
    truth = np.zeros((20, 20), np.uint8)
    truth[12:18, 12:18] = 2
    out = overlay(image, pred, truth, num_classes=3)
    tint = np.round((1 - FILL_ALPHA) * 100 + FILL_ALPHA * np.array(COLOURS[1]))
    assert np.array_equal(out[5, 5], tint) and np.array_equal(out[2, 5], tint)  # fill only
    assert tuple(out[12, 15]) == COLOURS[2]  # the truth's outline, in its class's colour
    assert np.array_equal(out[0, 0], image[0, 0])
    alone = overlay(image, pred, num_classes=3)  # no truth: the prediction is outlined
    assert tuple(alone[2, 5]) == COLOURS[1] and tuple(alone[12, 15]) == COLOURS[2]


# --- checkpoints ---------------------------------------------------------------------------


def test_k_class_model_round_trips_both_layouts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SegDINO(load_backbone(TINY), num_classes=3).eval()
    model.preprocessing = Preprocessing((32, 32), class_map="0:0,128:1,255:2", ignore_index=7,
                                        class_names=("background", "warm", "cold"))
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3, 32, 48)

    save_segdino(model, tmp_path / "ours.safetensors", TINY)
    ours = load_segdino(tmp_path / "ours.safetensors").eval()
    assert ours.num_classes == 3 and ours.preprocessing == model.preprocessing
    save_reference(ours, tmp_path / "ref.pth")
    saved = torch.load(tmp_path / "ref.pth", weights_only=True)
    assert saved["head.scratch.output_conv.weight"].shape[0] == 3
    reference = load_segdino(tmp_path / "ref.pth").eval()
    assert reference.num_classes == 3  # inferred from the classifier's weight
    with torch.no_grad():
        assert torch.equal(ours(x), logits) and torch.equal(reference(x), logits)


# --- end to end ----------------------------------------------------------------------------


def test_synthetic_data_binary_unchanged_and_classes(tmp_path: Path) -> None:
    make_synthetic_dataset(tmp_path / "bin", n_train=3, n_val=1, n_test=1, size=(40, 48), seed=5)
    digest = hashlib.sha256()
    for path in sorted((tmp_path / "bin").rglob("*.png")):
        digest.update(str(path.relative_to(tmp_path / "bin")).encode())
        digest.update(np.asarray(Image.open(path)).tobytes())
    # recorded from the generator before it learnt about classes
    assert digest.hexdigest() == (
        "b204006288b5569fc0ab254df4a96c406f46ec203d12af5865c856dfbdf27ea6")
    root = make_synthetic_dataset(tmp_path / "k3", n_train=4, n_val=0, n_test=0, seed=5,
                                  num_classes=3)
    for image, mask in find_pairs(root / "train", mask_format=MaskFormat(3)):
        pixels, classes = np.asarray(Image.open(image), float), MaskFormat(3).read(mask)
        assert set(np.unique(classes)) == {0, 1, 2}
        warm, cold = pixels[classes == 1].mean(0), pixels[classes == 2].mean(0)
        assert warm[0] > warm[2] and cold[2] > cold[0]  # class 1 reddish, class 2 bluish


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth", n_train=8, n_val=4, n_test=3, size=(40, 48), seed=1,
                           num_classes=3)
    return root


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_train_test_predict_three_classes(tmp_path: Path, data: Path, capsys) -> None:
    assert main(["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt",
                 str(TINY), "--num-classes", "3", "--loss", "ce+dice", "--class-names",
                 "background", "warm", "cold", "--input-h", "32", "--input-w", "32",
                 "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
                 "--save-root", str(tmp_path), "--name", "run", "--no-progress"]) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 3 and config["loss"] == "ce+dice"
    history = read_csv(run / "metrics.csv")
    assert len(history) == 2 and all(0 <= float(r["val_dice"]) <= 1 for r in history)
    assert (run / "val_overlays.jpg").is_file()
    best = run / "best.safetensors"
    model = load_segdino(best)
    assert model.num_classes == 3
    assert model.preprocessing.class_names == ("background", "warm", "cold")

    assert main(["test", "--ckpt", str(best), "--data-dir", str(data), "--dataset", "synth",
                 "--num-workers", "0", "--device", "cpu", "--save-root", str(tmp_path),
                 "--name", "t", "--no-progress"]) == 0
    assert "class 1 (warm)" in capsys.readouterr().out
    rows = read_csv(tmp_path / "t" / "metrics.csv")
    metrics = ["dice", "iou", "precision", "recall", "hd95"]
    assert list(rows[0]) == ["image", *(f"{m}_{c}" for c in ("1", "2", "mean") for m in metrics),
                             "uncertainty"]
    assert [r["image"] for r in rows] == ["0000.png", "0001.png", "0002.png",
                                          "MEAN", "SD", "MEDIAN"]
    predictor = Predictor.from_checkpoint(best, device="cpu")
    fp32 = Predictor.from_checkpoint(best, device="cpu", precision="fp32")  # as test scores
    fmt = MaskFormat(3)
    for (image, mask), row in zip(find_pairs(data / "synth" / "test", mask_format=fmt), rows,
                                  strict=False):
        pred, truth = predictor(image), fmt.read(mask)
        for c in (1, 2):  # an independent recount of each class's Dice
            p, t = pred == c, truth == c
            expected = (2 * (p & t).sum() + 1e-6) / (p.sum() + t.sum() + 1e-6)
            assert float(row[f"dice_{c}"]) == pytest.approx(expected, abs=1e-6)
        mean = (float(row["dice_1"]) + float(row["dice_2"])) / 2
        assert float(row["dice_mean"]) == pytest.approx(mean, abs=1e-6)
        prob = fp32(image, return_probabilities=True)[1]  # 3 x H x W
        assert float(row["uncertainty"]) == pytest.approx(
            entropy(prob, base=3, axis=0).mean(), abs=1e-6)
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert list(summary["per_class"]) == ["1", "2"] and "threshold" not in summary
    assert summary["class_names"] == ["background", "warm", "cold"]
    assert summary["dice"] == pytest.approx(
        np.mean([float(r["dice_mean"]) for r in rows[:-1]]), abs=1e-6)
    assert len(list((tmp_path / "t" / "worst").glob("*.jpg"))) == 3

    assert predict_and_check(best, data / "synth" / "test", tmp_path / "pred") <= {0, 1, 2}


def predict_and_check(ckpt: Path, split: Path, out: Path) -> set[int]:
    """Run `segdino predict` with every output on the split's images, check each file
    against the Predictor, and return the classes predicted."""
    assert main(["predict", str(ckpt), str(split / "image"), "--out", str(out), "--color",
                 "--overlay", "--probabilities", "--device", "cpu"]) == 0
    predictor, seen = Predictor.from_checkpoint(ckpt, device="cpu"), set()
    for image, _ in find_pairs(split, mask_format=MaskFormat(3)):
        mask, prob = predictor(image, return_probabilities=True)
        with Image.open(image) as im:
            size = im.size
        assert mask.dtype == np.uint8 and prob.dtype == np.float32
        assert prob.shape == (3, size[1], size[0])
        np.testing.assert_allclose(prob.sum(0), 1, atol=1e-5)
        assert np.array_equal(prob.argmax(0), mask)
        with Image.open(out / f"{image.stem}.png") as im:
            assert im.mode == "L" and im.size == size
            written = np.asarray(im)
        assert np.array_equal(written, mask)
        with Image.open(out / f"{image.stem}_color.png") as im:
            assert im.mode == "RGB" and im.size == size
            colour = np.asarray(im)
        for c, rgb in COLOURS.items():
            assert (colour[written == c] == rgb).all()
        with Image.open(out / f"{image.stem}_prob.png") as im:
            assert np.abs(np.asarray(im) - prob.max(0) * 255).max() <= 0.5 + 1e-3
        with Image.open(out / f"{image.stem}_overlay.jpg") as im:  # under a strip: name, legend
            assert im.mode == "RGB" and im.width == fitted(size)[0]
            assert im.height > fitted(size)[1]
        seen |= set(np.unique(written).tolist())
    return seen


@pytest.fixture(scope="module")
def random_k3(tmp_path_factory) -> Path:
    """A 3-class model with a random decoder, seeded so that it predicts every class on the
    test images (a trained tiny model predicts background alone)."""
    torch.manual_seed(5)
    model = SegDINO(load_backbone(TINY), num_classes=3)
    model.preprocessing.input_size = (32, 32)
    path = tmp_path_factory.mktemp("k3") / "k3.safetensors"
    save_segdino(model, path, TINY)
    return path


def test_predict_writes_index_and_colour_pngs(tmp_path: Path, data: Path, random_k3: Path
                                              ) -> None:
    assert predict_and_check(random_k3, data / "synth" / "test", tmp_path) == {0, 1, 2}


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_class_errors_at_the_command_line(tmp_path: Path, data: Path, random_k3: Path,
                                          capsys) -> None:
    base = ["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt", str(TINY),
            "--epochs", "1", "--num-workers", "0", "--save-root", str(tmp_path), "--no-progress"]
    err = error_of(capsys, [*base, "--num-classes", "3", "--loss", "bce"])
    assert "--loss bce" in err and "\n" not in err
    err = error_of(capsys, [*base, "--class-map", "0:0,255:1"])
    assert "--class-map" in err and "--num-classes 2 or more" in err
    # two classes asked for, three in the masks: every file listed, nothing created
    err = error_of(capsys, [*base, "--num-classes", "2"])
    assert "value(s) 2 not a class 0..1" in err and "0007.png" in err and "0003.png" in err
    assert not any(tmp_path.iterdir())
    err = error_of(capsys, ["test", "--ckpt", str(random_k3), "--data-dir", str(data), "--dataset",
                            "synth", "--num-classes", "2", "--save-root", str(tmp_path)])
    assert "--num-classes 2" in err and "3 class(es)" in err


def test_three_class_cross_validation(tmp_path: Path, data: Path) -> None:
    """K-class folds are scored from the cache as `segdino test` scores their models."""
    assert main(["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt",
                 str(TINY), "--num-classes", "3", "--loss", "ce", "--input-h", "32",
                 "--input-w", "32", "--epochs", "2", "--batch-size", "4", "--num-workers", "0",
                 "--device", "cpu", "--save-root", str(tmp_path), "--name", "cv", "--folds",
                 "2", "--no-progress"]) == 0
    run = tmp_path / "cv"
    summary = json.loads((run / "cv_summary.json").read_text())
    for k, fold in enumerate(summary["folds"], start=1):
        names = set((run / f"fold{k}" / "val_list.txt").read_text().split())
        pairs = [p for split in ("train", "val")
                 for p in find_pairs(data / "synth" / split, mask_format=MaskFormat(3))
                 if p[0].name in names]
        model = load_segdino(run / f"fold{k}" / "best.safetensors")
        tested = evaluate(Predictor(model, "cpu", 4, "fp32"), pairs, tmp_path / f"t{k}",
                          worst=0, num_workers=0, progress=False)
        assert fold["dice"] == pytest.approx(tested["dice"], abs=2e-3)
    assert (run / "cv_curves.png").is_file()
