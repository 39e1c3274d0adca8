"""Inference engines and precisions on the reference's tiny trained SegDINO (no mocks):
each engine's logits against eager float32, bf16 masks against float32 masks on the demo
data, and the choices and errors of `--precision` / `--engine`."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from segdino.checkpoints.load import load_segdino
from segdino.data.files import list_images
from segdino.data.synthetic import make_synthetic_dataset
from segdino.errors import UserError
from segdino.inference.engines import CompiledEngine, TorchEngine, make_engine
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO
from segdino.runtime import fast_bf16, resolve_precision

CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> SegDINO:
    return load_segdino(CKPT).eval()


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The demo's generated test images (sizes vary around 96 x 128)."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("demo") / "synthetic", n_train=0,
                                  n_val=0, n_test=16)
    return list_images(root / "test" / "image")


def eager(model: SegDINO, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_auto_precision_follows_the_hardware() -> None:
    assert resolve_precision(CPU, "auto") == ("bf16" if fast_bf16(CPU) else "fp32")
    assert resolve_precision(CPU, "fp32") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"
    assert not fast_bf16(torch.device("meta"))
    with pytest.raises(UserError, match="fp16"):
        resolve_precision(CPU, "fp16")


def test_torch_engine_fp32_is_the_model(model: SegDINO) -> None:
    x = torch.randn(2, 3, 40, 56)  # not a multiple of 16: padded and cropped inside
    logits = TorchEngine(model, CPU, "fp32")(x)
    assert logits.dtype == torch.float32 and logits.shape == (2, 1, 40, 56)
    assert torch.equal(logits, eager(model, x))


def test_bf16_engine_is_close_and_returns_float32(model: SegDINO) -> None:
    x = torch.randn(1, 3, 32, 48)
    logits = TorchEngine(model, CPU, "bf16")(x)
    assert logits.dtype == torch.float32
    diff = (logits - eager(model, x)).abs().max().item()
    assert 0 < diff < 0.05  # bf16 really ran, and the logits (spread about +-0.3) agree


def test_compiled_graph_computes_the_model(model: SegDINO) -> None:
    # The "eager" backend captures the whole forward as torch.compile does (RoPE tables
    # built in the graph, autocast inside) without generating kernels, which takes minutes
    # on two cores; `segdino bench` measures the inductor backend. Four blocks, for speed.
    shallow = SegDINO(model.backbone, layers=[0, 1, 2, 3]).eval()
    engine = CompiledEngine(shallow, CPU, "fp32", backend="eager")
    for shape in ((2, 3, 32, 48), (1, 3, 48, 32)):  # a second grid: recompiled, not reused
        x = torch.randn(*shape)
        torch.testing.assert_close(engine(x), eager(shallow, x), rtol=0, atol=1e-5)


def test_bf16_masks_agree_with_fp32_on_demo_data(model: SegDINO, demo_images: list[Path]
                                                 ) -> None:
    """At least 99.5% of pixels agree. The tiny model's probabilities span only about
    0.44-0.59, and the threshold is put at their median, where pixels are densest: the
    hardest case for rounding (a trained model's confident logits agree more)."""
    small = copy.deepcopy(model)
    small.preprocessing.input_size = (128, 128)  # the demo's input size
    fp32 = Predictor(small, CPU, precision="fp32")(demo_images, return_probabilities=True)
    bf16 = Predictor(small, CPU, precision="bf16")(demo_images, return_probabilities=True)
    prob32 = np.concatenate([p.ravel() for _, p in fp32])
    prob16 = np.concatenate([p.ravel() for _, p in bf16])
    threshold = np.median(prob32)
    mask32, mask16 = prob32 > threshold, prob16 > threshold
    assert 0.3 < mask32.mean() < 0.7  # non-trivial masks
    assert not np.array_equal(prob32, prob16)  # bf16 really ran
    assert (mask32 == mask16).mean() >= 0.995


def test_predictor_resolves_auto(model: SegDINO) -> None:
    predictor = Predictor(model, CPU)
    assert predictor.precision == resolve_precision(CPU, "auto")


def test_engine_and_precision_errors(model: SegDINO, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="--engine tensorrt"):
        make_engine(model, CPU, "fp32", "tensorrt")
    with pytest.raises(UserError, match="--precision bf16: the onnx engine runs float32"):
        make_engine(model, CPU, "bf16", "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install segdino\[onnx\]"):
        make_engine(model, CPU, "auto", "onnx")
