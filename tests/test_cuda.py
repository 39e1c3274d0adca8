"""What runs on a CUDA GPU, checked against the CPU's float32 result as the truth: eager
float32, bf16 autocast, `--engine compile` replaying CUDA graphs, training from pinned memory
(with and without the feature cache), DistributedDataParallel over NCCL, and ONNX Runtime's
CUDA provider. Marked `cuda` (`pytest -m cuda`, which scripts/gpu_check.sh runs); without a
CUDA device they skip, saying so."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from conftest import FIXTURES
from test_scale import config, max_diff, torchrun, weights

from segdino.backbone import load_backbone
from segdino.data.synthetic import make_synthetic_dataset
from segdino.inference.engines import CompiledEngine, OnnxEngine, make_engine
from segdino.models.segdino import SegDINO
from segdino.runtime import resolve_precision
from segdino.training.loop import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here "
                       "(torch.cuda.is_available() is False); scripts/gpu_check.sh runs these "
                       "on a GPU"),
]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """cuDNN convolutions in TF32 (PyTorch's default) round the patch embedding's inputs to
    10 mantissa bits; float32 comparisons with the CPU are meant at float32's precision."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@pytest.fixture(scope="module")
def model() -> SegDINO:
    torch.manual_seed(0)
    return SegDINO(load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth"), num_classes=1).eval()


def csv_rows(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def batch(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(seed))


def logits(model: SegDINO, device: torch.device, x: torch.Tensor, precision: str = "fp32"
           ) -> torch.Tensor:
    """Eager logits on `device` (of a copy: an engine moves its model), on the CPU."""
    return make_engine(copy.deepcopy(model), device, precision)(x).cpu()


def assert_close(ours: torch.Tensor, truth: torch.Tensor, tolerance: float) -> None:
    """Within `tolerance` of the truth's largest magnitude."""
    assert ours.dtype == torch.float32 and ours.shape == truth.shape
    error = (ours - truth).abs().max().item()
    assert error <= tolerance * truth.abs().max().item(), error


def test_eager_float32_matches_the_cpu(model) -> None:
    x = batch(1)
    assert_close(logits(model, CUDA, x), logits(model, CPU, x), 1e-4)


def test_bf16_autocast_stays_close_to_float32(model) -> None:
    x = batch(2)
    truth, fp32 = logits(model, CPU, x), logits(model, CUDA, x)
    bf16 = logits(model, CUDA, x, "bf16")
    assert (bf16 - fp32).abs().max() > 0  # autocast did run in bf16
    # bf16 keeps 8 bits of mantissa: on the CPU, bf16 autocast is off by 1.5% here
    assert_close(bf16, truth, 6e-2)
    # "auto" picks bf16 exactly where the GPU computes it natively (Ampere, 8.0, or newer)
    native = torch.cuda.get_device_capability() >= (8, 0)
    assert resolve_precision(CUDA, "auto") == ("bf16" if native else "fp32")


def test_compile_with_cuda_graphs_equals_eager(model) -> None:
    engine = CompiledEngine(copy.deepcopy(model), CUDA, "fp32")
    assert engine.cuda_graphs
    first, second = batch(3), batch(4)
    out_first = engine(first).cpu()
    engine(first)  # the graph is recorded by the first calls, replayed by the next ones
    out_second = engine(second)
    replayed = engine(first)
    # each output is a copy: a later replay does not overwrite an earlier result
    assert_close(out_first, logits(model, CPU, first), 1e-4)
    assert_close(out_second.cpu(), logits(model, CPU, second), 1e-4)
    assert_close(replayed.cpu(), out_first, 1e-5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth", n_train=16, n_val=4, n_test=2, size=(40, 48), seed=5)
    return root


@pytest.mark.parametrize("cached", [False, True], ids=["images", "cached-features"])
def test_training_from_pinned_memory_matches_the_cpu(data, tmp_path, cached) -> None:
    # two loader workers: batches come through pinned memory (pin_memory on CUDA) and are
    # copied without blocking; the CPU run is the truth
    # (a float32 cache: float16 would round CPU's and CUDA's features apart)
    settings = dict(num_workers=2, cache_features=cached, cache_dtype="float32")
    on_cpu = train(config(data, tmp_path / "cpu", **settings), progress=False)
    on_cuda = train(config(data, tmp_path / "cuda", device="cuda", **settings), progress=False)
    # every step's loss: a batch read wrong (an unfinished copy, another order) shows here
    assert [float(r["loss"]) for r in csv_rows(on_cuda / "steps.csv")] == pytest.approx(
        [float(r["loss"]) for r in csv_rows(on_cpu / "steps.csv")], abs=1e-5)
    for ours, truth in zip(csv_rows(on_cuda / "metrics.csv"), csv_rows(on_cpu / "metrics.csv"),
                           strict=True):
        for key in ("val_loss", "val_dice"):
            assert float(ours[key]) == pytest.approx(float(truth[key]), abs=1e-5), key
    # AdamW's first steps move each weight by about the learning rate, whatever the
    # gradient's size: rounding noise in a near-zero gradient can flip one, hence 5e-4
    assert max_diff(weights(on_cuda), weights(on_cpu)) < 5e-4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs 2 CUDA GPUs; "
                    f"this machine has {torch.cuda.device_count()}")
def test_nccl_two_processes_train_like_one_on_the_cpu(data, tmp_path) -> None:
    truth = train(config(data, tmp_path / "cpu"), progress=False)
    result = torchrun(config(data, tmp_path / "ddp", device="cuda"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on 2 x cuda" in result.stdout
    # the subprocesses keep PyTorch's default TF32 convolutions
    assert max_diff(weights(tmp_path / "ddp" / "run"), weights(truth)) < 1e-3


def test_onnx_cuda_provider_matches_pytorch(model) -> None:
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: "
                              "pip install segdino[onnx] onnxruntime-gpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no CUDA provider: pip install onnxruntime-gpu")
    engine = OnnxEngine.from_model(copy.deepcopy(model), CUDA)
    # ONNX Runtime falls back to the CPU, quietly, when CUDA's libraries fail to load
    assert engine.session.get_providers()[0] == "CUDAExecutionProvider"
    x = batch(5)
    # ONNX Runtime's CUDA provider computes convolutions and matrix products in TF32
    assert_close(engine(x), logits(model, CPU, x), 5e-3)
