"""`segdino export --format onnx` and the onnx engine, on the reference's tiny trained
SegDINO: ONNX Runtime's logits against PyTorch's for several batch and input sizes from one
file, the metadata, and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.errors import UserError
from segdino.inference.engines import OnnxEngine
from segdino.inference.onnx import export_onnx
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO

CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"


@pytest.fixture(scope="module")
def model() -> SegDINO:
    model = load_segdino(CKPT).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))  # RoPE tables of one grid cached: not to be baked in
    return model


@pytest.fixture(scope="module")
def exported(model: SegDINO, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path)
    return path


def eager(model: SegDINO, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("shape", [(2, 3, 64, 48), (1, 3, 32, 80), (3, 3, 256, 256)])
def test_onnx_runtime_logits_match_pytorch(model: SegDINO, exported: Path, shape: tuple
                                           ) -> None:
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    assert logits.shape == (shape[0], 1, *shape[2:])
    np.testing.assert_allclose(logits, eager(model, x), rtol=0, atol=1e-4)


def test_onnx_engine_pads_any_size(model: SegDINO, exported: Path) -> None:
    x = torch.randn(2, 3, 50, 41)  # not multiples of 16: the graph needs them
    logits = OnnxEngine(exported)(x)
    np.testing.assert_allclose(logits.numpy(), eager(model, x), rtol=0, atol=1e-4)


def test_metadata_in_the_model_and_beside_it(model: SegDINO, exported: Path) -> None:
    proto = onnx.load(str(exported))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inside = json.loads({p.key: p.value for p in proto.metadata_props}["segdino"])
    beside = json.loads(exported.with_suffix(".json").read_text())
    assert inside == beside
    pre = model.preprocessing
    assert inside["preprocessing"]["input_size"] == list(pre.input_size)
    assert inside["preprocessing"]["mean"] == list(pre.mean)
    assert inside["preprocessing"]["std"] == list(pre.std)
    assert inside["preprocessing"]["threshold"] == pre.threshold
    assert inside["num_classes"] == 1 and inside["layers"] == list(model.layers)
    assert inside["input_multiple"] == 16
    assert inside["backbone"]["config"] == model.backbone.config.to_dict()
    # self-contained: every weight is in the file, none in external data
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_predictor_onnx_engine_matches_torch(model: SegDINO) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8))
    small = SegDINO(model.backbone, layers=[0, 1, 2, 3])  # four blocks: a quicker export
    small.preprocessing.input_size = (48, 64)
    _, by_onnx = Predictor(small, "cpu", engine="onnx")(image, return_probabilities=True)
    _, by_torch = Predictor(small, "cpu", precision="fp32")(image, return_probabilities=True)
    np.testing.assert_allclose(by_onnx, by_torch, rtol=0, atol=1e-5)


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", str(CKPT), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--out", "model.pt"], "--out model.pt: expected a file name ending in .onnx"),
])
def test_export_command_errors(flags: list[str], message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
                               ) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(CKPT), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"segdino export: error: {message}"
    assert not list(tmp_path.iterdir())


def test_not_an_exported_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(UserError, match="bad.onnx: not a readable ONNX model"):
        OnnxEngine(bad)
