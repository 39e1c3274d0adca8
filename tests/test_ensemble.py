"""Ensembles on one backbone: one member is that member; K members' probabilities are the
mean of the members run one by one (sigmoid and softmax, mixed decoders); incompatible
checkpoints are refused by name; an ensemble goes through test, predict and ONNX export as
any checkpoint does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import FIXTURES, random_member

from segdino.checkpoints.ensemble import combine
from segdino.checkpoints.format import save_segdino
from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO

X = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(5))  # not 16-multiples


def probabilities(model: SegDINO, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        logits = model.eval()(x)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(1)


def test_an_ensemble_of_one_is_the_member(tiny_run: dict[str, Path]) -> None:
    member, ensemble = load_segdino(tiny_run["ckpt"]), combine([tiny_run["ckpt"]])
    assert ensemble.is_ensemble and len(ensemble.head) == 1
    torch.testing.assert_close(probabilities(ensemble), probabilities(member),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("classes", [1, 3])
def test_ensemble_probabilities_are_the_members_mean(tmp_path: Path, tiny_run: dict[str, Path],
                                                     classes: int) -> None:
    weights = tiny_run["weights"]
    paths = [random_member(weights, tmp_path / "a.safetensors", 1, classes),
             random_member(weights, tmp_path / "b.safetensors", 2, classes, "v1-proj"),
             random_member(weights, tmp_path / "c.safetensors", 3, classes, "v2", channels=16)]
    out = tmp_path / "e.safetensors"
    assert main(["ensemble", *map(str, paths), "--out", str(out)]) == 0
    ensemble = load_segdino(out)
    assert [m["decoder"] for m in ensemble.decoder_options["members"]] == ["v1", "v1-proj", "v2"]
    expected = torch.stack([probabilities(load_segdino(p)) for p in paths]).mean(0)
    got = probabilities(ensemble)
    assert (got - probabilities(load_segdino(paths[0]))).abs().max() > 0.05  # not one member
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # an ensemble joins another as its members
    nested = combine([out, paths[0]])
    assert len(nested.head) == 4
    torch.testing.assert_close(probabilities(nested),
                               (3 * expected + probabilities(load_segdino(paths[0]))) / 4,
                               rtol=0, atol=1e-6)


def test_incompatible_checkpoints_are_refused(tmp_path: Path, tiny_run: dict[str, Path],
                                              capsys: pytest.CaptureFixture) -> None:
    weights = tiny_run["weights"]
    one = random_member(weights, tmp_path / "one.safetensors", 1)
    three = random_member(weights, tmp_path / "three.safetensors", 1, classes=3)
    other = random_member(FIXTURES / "dinov3" / "tiny_swiglu.pth",
                          tmp_path / "other.safetensors", 1)
    model = load_segdino(one)
    model.preprocessing.threshold = 0.3
    save_segdino(model, tmp_path / "thr.safetensors")
    out = tmp_path / "e.safetensors"
    for bad, what in [(three, "number of classes differ (3 not 1)"),
                      (other, "backbone weights (SHA-256) differ"),
                      (tmp_path / "thr.safetensors", "preprocessing differ (threshold 0.3 not "
                                                     "0.5)"),
                      (FIXTURES / "segdino" / "segdino_tiny_mlp.pth", "not a segdino")]:
        assert main(["ensemble", str(one), str(bad), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err and what in err, err
    assert not out.exists()


def test_an_ensemble_is_any_checkpoint(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    paths = [tiny_run["ckpt"], random_member(tiny_run["weights"], tmp_path / "b.safetensors", 2,
                                             like=tiny_run["ckpt"])]
    ckpt = tmp_path / "e.safetensors"
    assert main(["ensemble", *map(str, paths), "--out", str(ckpt)]) == 0
    data = tiny_run["data"]
    assert main(["test", "--ckpt", str(ckpt), "--data-dir", str(data), "--dataset", "synth",
                 "--save-root", str(tmp_path / "tests"), "--num-workers", "0",
                 "--device", "cpu", "--no-progress"]) == 0
    images = data / "synth" / "test" / "image"
    assert main(["predict", str(ckpt), str(images), "--out", str(tmp_path / "masks")]) == 0
    files = sorted(images.iterdir())
    masks, probs = zip(*Predictor.from_checkpoint(ckpt, device="cpu", precision="fp32")(
        files, return_probabilities=True), strict=True)
    one = [Predictor.from_checkpoint(p, device="cpu", precision="fp32")(
        files, return_probabilities=True) for p in paths]
    for i, prob in enumerate(probs):  # probabilities resized back: still the mean
        np.testing.assert_allclose(prob, (one[0][i][1] + one[1][i][1]) / 2, rtol=0, atol=1e-5)
    onnx_file = tmp_path / "e.onnx"
    assert main(["export", str(ckpt), "--out", str(onnx_file)]) == 0
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        expected = load_segdino(ckpt).eval()(x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    meta = json.loads(onnx_file.with_suffix(".json").read_text())
    assert meta["num_classes"] == 1
