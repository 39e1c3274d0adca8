"""Each decoder through `segdino train -> test -> predict -> export` on generated data, with
and without cached features; the ONNX file against PyTorch; v2's recipe as recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import FIXTURES

from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.model_card import train_command
from segdino.commands import main
from segdino.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    make_synthetic_dataset(root / "data" / "synth", n_train=6, n_val=2, n_test=2, size=(40, 48),
                           seed=1)
    weights = root / "tiny_mlp.pth"
    shutil.copy(FIXTURES / "dinov3" / "tiny_mlp.pth", weights)
    return {"root": root, "data": root / "data", "weights": weights}


@pytest.mark.parametrize(("decoder", "cached"), [
    ("v1", True), ("v1-proj", False), ("v1-proj", True), ("v2", False), ("v2", True)])
def test_train_test_predict_export(data: dict[str, Path], decoder: str, cached: bool) -> None:
    root, name = data["root"], f"{decoder}-{'cached' if cached else 'plain'}"
    flags = ["--decoder", decoder, *(["--decoder-channels", "32"] if decoder == "v2" else []),
             *(["--cache-features"] if cached else [])]
    assert main(["train", "--data-dir", str(data["data"]), "--dataset", "synth",
                 "--dino-ckpt", str(data["weights"]), "--input-h", "32", "--input-w", "32",
                 "--epochs", "1", "--batch-size", "3", "--num-workers", "0", "--device", "cpu",
                 "--save-root", str(root / "runs"), "--name", name, "--no-progress",
                 *flags]) == 0
    run = root / "runs" / name
    config = json.loads((run / "config.json").read_text())
    assert config["decoder"] == decoder
    if decoder == "v2":  # its recipe, recorded
        assert (config["resize"], config["augment"], config["weight_decay"]) == (
            "bilinear", True, 0.01)
        assert train_command(config).count("--decoder v2") == 1
        assert "--augment" not in train_command(config)
    ckpt = run / "best.safetensors"
    model = load_segdino(ckpt)
    assert (model.decoder, model.preprocessing.resize) == (
        decoder, "bilinear" if decoder == "v2" else "bicubic")
    assert main(["test", "--ckpt", str(ckpt), "--data-dir", str(data["data"]), "--dataset",
                 "synth", "--save-root", str(root / "tests"), "--name", name, "--num-workers",
                 "0", "--device", "cpu", "--no-progress"]) == 0
    assert main(["predict", str(ckpt), str(data["data"] / "synth" / "test" / "image"), "--out",
                 str(root / "masks" / name)]) == 0
    assert len(list((root / "masks" / name).glob("*.png"))) == 2
    onnx_file = root / f"{name}.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(onnx_file)]) == 0
    meta = json.loads(onnx_file.with_suffix(".json").read_text())
    assert meta["preprocessing"]["resize"] == model.preprocessing.resize
    assert model.preprocessing.resize in meta["input"]["layout"]
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_v2_recipe_overridden(data: dict[str, Path]) -> None:
    assert main(["train", "--data-dir", str(data["data"]), "--dataset", "synth",
                 "--dino-ckpt", str(data["weights"]), "--input-h", "32", "--input-w", "32",
                 "--epochs", "1", "--num-workers", "0", "--device", "cpu", "--no-progress",
                 "--save-root", str(data["root"] / "runs"), "--name", "v2-own",
                 "--decoder", "v2", "--decoder-channels", "32", "--no-augment", "--resize",
                 "bicubic", "--weight-decay", "0.001"]) == 0
    config = json.loads((data["root"] / "runs" / "v2-own" / "config.json").read_text())
    assert (config["resize"], config["augment"], config["weight_decay"]) == (
        "bicubic", False, 0.001)
    command = train_command(config)
    assert all(f in command for f in ("--no-augment", "--resize bicubic", "--weight-decay 0.001"))
    assert load_segdino(data["root"] / "runs" / "v2-own" / "best.safetensors"
                        ).decoder_options == {"channels": 32}


def test_decoder_channels_only_for_v2(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data-dir", "d", "--dataset", "s", "--dino-ckpt", "w",
                 "--decoder", "v1", "--decoder-channels", "64"]) == 2
    assert "only v2 takes it" in capsys.readouterr().err
