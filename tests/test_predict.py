"""`Predictor` and `segdino predict` on the reference's tiny trained SegDINO (no mocks):
probabilities against a pipeline written out by hand, sizes, batching, input kinds, and
the command's outputs and errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, make_image
from PIL import Image

from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.errors import UserError
from segdino.inference.predict_files import MANIFEST, predict_files
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO
from segdino.visualize import fitted

CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
SIZES = [(40, 50), (70, 30), (64, 64), (33, 97), (16, 16)]  # (h, w)


@pytest.fixture(scope="module")
def model_256() -> SegDINO:
    """The checkpoint as loaded: the default 256 x 256 input (what the CLI uses)."""
    return load_segdino(CKPT)


@pytest.fixture(scope="module")
def model(model_256: SegDINO) -> SegDINO:
    """The same model with a 64 x 64 input, for speed."""
    small = copy.deepcopy(model_256)
    small.preprocessing.input_size = (64, 64)
    return small


@pytest.fixture(scope="module")
def predictor(model: SegDINO) -> Predictor:
    return Predictor(model, "cpu", batch_size=3, precision="fp32")  # "auto" may pick bf16


def hand_pipeline(model: SegDINO, image: Image.Image) -> np.ndarray:
    """The reference's preprocessing and post-processing, step by step."""
    h, w = model.preprocessing.input_size
    pixels = np.asarray(image.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0
    mean, std = np.array(model.preprocessing.mean), np.array(model.preprocessing.std)
    x = torch.from_numpy(((pixels - mean) / std).astype(np.float32)).permute(2, 0, 1)
    with torch.no_grad():
        prob = torch.sigmoid(model.eval()(x[None]))
    full = F.interpolate(prob, size=(image.height, image.width), mode="bilinear",
                         align_corners=False)
    return full[0, 0].numpy()


def assert_same(a, b) -> None:
    """Same (mask, probabilities): probabilities within 1e-6, masks equal wherever the
    probability is not within that of the threshold (where rounding may decide)."""
    (mask_a, prob_a), (mask_b, prob_b) = a, b
    np.testing.assert_allclose(prob_a, prob_b, atol=1e-6, rtol=0)
    decided = np.abs(prob_a - 0.5) > 1e-5
    assert np.array_equal(mask_a[decided], mask_b[decided])


def test_probabilities_match_hand_pipeline(predictor: Predictor, model: SegDINO) -> None:
    image = Image.fromarray(make_image(50, 70, 0))
    mask, prob = predictor(image, return_probabilities=True)
    expected = hand_pipeline(model, image)
    assert prob.dtype == np.float32 and prob.shape == (50, 70)
    np.testing.assert_allclose(prob, expected, atol=1e-6, rtol=0)
    assert mask.dtype == bool and np.array_equal(mask, prob > 0.5)
    assert 0 < mask.mean() < 1


def test_model_statistics_and_threshold_are_used(model: SegDINO) -> None:
    other = copy.deepcopy(model)
    other.preprocessing.mean, other.preprocessing.std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    other.preprocessing.threshold = 0.55
    image = Image.fromarray(make_image(40, 44, 1))
    mask, prob = Predictor(other, "cpu", precision="fp32")(image, return_probabilities=True)
    np.testing.assert_allclose(prob, hand_pipeline(other, image), atol=1e-6, rtol=0)
    assert np.array_equal(mask, prob > 0.55)


def test_outputs_at_each_images_own_size(predictor: Predictor) -> None:
    images = [make_image(h, w, k) for k, (h, w) in enumerate(SIZES)]
    results = predictor(images, return_probabilities=True)
    assert isinstance(results, list) and len(results) == len(images)
    for (h, w), (mask, prob) in zip(SIZES, results, strict=True):
        assert mask.shape == prob.shape == (h, w)
        assert mask.dtype == bool and prob.dtype == np.float32
    masks = predictor(images)
    assert all(np.array_equal(m, r[0]) for m, r in zip(masks, results, strict=True))


def test_list_batching_and_single_calls_agree(predictor: Predictor, model: SegDINO) -> None:
    images = [make_image(h, w, 10 + k) for k, (h, w) in enumerate(SIZES)]
    batched = predictor(images, return_probabilities=True)  # batches of 3, 2
    one_by_one = Predictor(model, "cpu", batch_size=1, precision="fp32")
    for image, result in zip(images, batched, strict=True):
        assert_same(one_by_one(image, return_probabilities=True), result)
    for a, b in zip(one_by_one(images, return_probabilities=True), batched, strict=True):
        assert_same(a, b)


def test_path_pil_and_array_inputs_agree(predictor: Predictor, tmp_path: Path) -> None:
    array = make_image(45, 60, 3)
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    by_array = predictor(array, return_probabilities=True)
    for source in (path, str(path), Image.fromarray(array), Image.fromarray(array).convert("RGBA")):
        mask, prob = predictor(source, return_probabilities=True)
        assert np.array_equal(mask, by_array[0]) and np.array_equal(prob, by_array[1])


def test_bf16_runs_close_to_fp32(model: SegDINO) -> None:
    image = make_image(40, 40, 4)
    _, fp32 = Predictor(model, "cpu", precision="fp32")(image, return_probabilities=True)
    _, bf16 = Predictor(model, "cpu", precision="bf16")(image, return_probabilities=True)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.02)


def test_bad_arguments(model: SegDINO, predictor: Predictor) -> None:
    with pytest.raises(UserError, match="batch-size"):
        Predictor(model, "cpu", batch_size=0)
    with pytest.raises(UserError, match="fp16"):
        Predictor(model, "cpu", precision="fp16")
    with pytest.raises(UserError, match="H x W x 3 uint8"):
        predictor(np.zeros((8, 8), np.uint8))
    assert predictor.model.training is False
    assert Predictor.from_checkpoint(CKPT, device="cpu").model.preprocessing.input_size == (
        256, 256)


# --- segdino predict -----------------------------------------------------------------------


def write(path: Path, h: int, w: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_image(h, w, seed)).save(path)
    return path


def test_cli_writes_masks(tmp_path: Path, model_256: SegDINO, capsys) -> None:
    images = [
        write(tmp_path / "folder" / "a.png", 40, 50, 0),
        write(tmp_path / "folder" / "b.jpg", 70, 30, 1),
        write(tmp_path / "globbed" / "c.png", 33, 47, 2),
        write(tmp_path / "globbed" / "d.bmp", 20, 64, 3),
        write(tmp_path / "e.png", 24, 24, 4),
    ]
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    (tmp_path / "globbed" / "x.json").write_text("{}")
    out = tmp_path / "out"
    argv = ["predict", str(CKPT), str(tmp_path / "folder"), str(tmp_path / "globbed" / "*"),
            str(images[4]), str(images[0]),  # a.png named twice: predicted once
            "--out", str(out), "--probabilities", "--overlay", "--batch-size", "2",
            "--device", "cpu"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"5 mask(s) written to {out}"
    reference = Predictor(model_256, "cpu")
    expected_files = []
    for path in images:
        with Image.open(path) as im:
            size = im.size
        expected_files += [f"{path.stem}.png", f"{path.stem}_prob.png", f"{path.stem}_overlay.jpg"]
        ref_mask, ref_prob = reference(path, return_probabilities=True)
        with Image.open(out / f"{path.stem}.png") as im:
            assert im.mode == "L" and im.size == size
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, ref_mask)
        with Image.open(out / f"{path.stem}_prob.png") as im:
            assert im.mode == "L" and im.size == size
            assert np.abs(np.asarray(im) - ref_prob * 255).max() <= 0.5 + 1e-3
        with Image.open(out / f"{path.stem}_overlay.jpg") as im:  # under a strip: name, legend
            assert im.format == "JPEG" and im.mode == "RGB" and im.width == fitted(size)[0]
            assert im.height > fitted(size)[1]
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected_files, MANIFEST])


def run_failing(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("segdino predict: error: ")
    return err


def test_cli_missing_inputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    err = run_failing(["predict", str(CKPT), str(tmp_path / "nope.png"), "--out", str(out)],
                      capsys)
    assert err.count("\n") == 1 and "nope.png" in err
    (tmp_path / "empty").mkdir()
    err = run_failing(["predict", str(CKPT), str(tmp_path / "*.jpg"), str(tmp_path / "empty"),
                       "--out", str(out)], capsys)
    assert "*.jpg" in err and "empty" in err
    assert not out.exists()


def test_cli_unreadable_image(tmp_path: Path, capsys) -> None:
    good = write(tmp_path / "good.png", 20, 20, 0)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    out = tmp_path / "out"
    err = run_failing(["predict", str(CKPT), str(tmp_path), "--out", str(out)], capsys)
    assert err.count("\n") == 1 and "bad.png" in err and "unreadable" in err
    # every problem at once: the unreadable image and a missing input
    err = run_failing(["predict", str(CKPT), str(tmp_path), str(tmp_path / "gone.png"),
                       "--out", str(out)], capsys)
    assert "bad.png" in err and "gone.png" in err and "2 problem(s)" in err
    assert not out.exists()


def test_cli_duplicate_stems_and_overwriting_inputs(tmp_path: Path, capsys) -> None:
    first = write(tmp_path / "one" / "scan.png", 20, 20, 0)
    second = write(tmp_path / "two" / "scan.jpg", 20, 20, 1)
    out = tmp_path / "out"
    err = run_failing(["predict", str(CKPT), str(first), str(second), "--out", str(out)], capsys)
    assert err.count("\n") == 1 and str(first) in err and str(second) in err
    # with --overlay, scan.png's overlay would replace the input scan_overlay.jpg
    other = write(tmp_path / "two" / "scan_overlay.jpg", 20, 20, 2)
    err = run_failing(["predict", str(CKPT), str(first), str(other), "--out", str(other.parent),
                       "--overlay"], capsys)
    assert f"{other}: is an input image" in err
    # masks written into the input folder would replace a PNG input
    err = run_failing(["predict", str(CKPT), str(first), "--out", str(first.parent)], capsys)
    assert "overwritten" in err
    assert not out.exists()


def test_predict_files(predictor: Predictor, tmp_path: Path) -> None:
    paths = [write(tmp_path / "in" / f"{k}.png", h, w, k) for k, (h, w) in enumerate(SIZES[:4])]
    out = tmp_path / "out"
    predict_files(predictor, [str(p) for p in paths], out, overlays=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, *(f"{k}{suffix}" for k in range(4) for suffix in (".png", "_overlay.jpg"))])
    for path in paths:
        with Image.open(out / f"{path.stem}.png") as im:
            assert np.array_equal(np.asarray(im) == 255, predictor(path))
    clash = write(tmp_path / "other" / "0.jpg", 20, 20, 9)
    with pytest.raises(UserError, match="0.png"):
        predict_files(predictor, [paths[0], clash], tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


def test_cli_a_failed_write_is_one_line(tmp_path: Path, capsys) -> None:
    """A write that fails in a writer thread (here: the temporary file's name, the mask's
    name plus 13 characters, is over the file system's 255) stops the command with the
    writer's one-line error, not a traceback."""
    images = [write(tmp_path / "in" / f"{k}.png", 20, 20, k) for k in range(4)]
    long = write(tmp_path / "in" / f"{'x' * 245}.png", 20, 20, 9)
    out = tmp_path / "out"
    err = run_failing(["predict", str(CKPT), *map(str, [*images, long]), "--out", str(out),
                       "--batch-size", "2", "--num-workers", "2"], capsys)
    assert err.count("\n") == 1 and f"{'x' * 245}.png: cannot write" in err
    assert not list(out.glob(".*x.*"))  # no temporary file left behind


def test_an_image_unreadable_once_predicting_is_its_user_error(predictor: Predictor,
                                                               tmp_path: Path) -> None:
    """An image that fails in a decoding thread (the command checks beforehand; here it is
    given straight to predict_files) raises its UserError as decoding it here would."""
    images = [write(tmp_path / f"{k}.png", 20, 20, k) for k in range(4)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(images[0].read_bytes()[:100])
    with pytest.raises(UserError) as raised:
        predict_files(predictor, [*images, bad], tmp_path / "out", progress=False)
    assert str(raised.value) == f"{bad}: unreadable image (OSError)"
