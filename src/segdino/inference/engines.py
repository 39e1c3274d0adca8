"""Inference engines: what turns a normalised batch `(B, 3, H, W)` into logits `(B, K, H, W)`.

- `torch`: the model in eager PyTorch, float32 or under bf16 autocast.
- `compile`: the same model through `torch.compile` (shapes specialised, one compilation per
  input shape, the first call pays it); on CUDA with `mode="reduce-overhead"`, which replays
  CUDA graphs and so removes the launch overhead that dominates at batch 1.
- `onnx`: ONNX Runtime on the model exported by `segdino.inference.onnx` (float32; the CUDA provider
  on a CUDA device). Needs `pip install segdino[onnx]`.

Every engine takes any input size (`onnx` pads to whole patches itself, as the model does)
and returns float32 logits, on the engine's device for `torch` and `compile`, on the CPU for
`onnx`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Protocol

import torch
import torch.nn.functional as F

from segdino.errors import MissingExtra, UserError
from segdino.inference.onnx import export_onnx
from segdino.models.segdino import SegDINO
from segdino.runtime import autocast, keep_freed_memory, resolve_precision

ENGINES = ("torch", "compile", "onnx")


class Engine(Protocol):
    """A callable from a normalised batch to float32 logits, with the device it runs on."""

    device: torch.device
    precision: str  # "fp32" or "bf16"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchEngine:
    """The model in eager PyTorch, under `torch.inference_mode` and, for "bf16", autocast.
    On the CPU it makes the process keep freed memory for reuse (`keep_freed_memory`)."""

    def __init__(self, model: SegDINO, device: torch.device, precision: str = "fp32") -> None:
        autocast(device, precision)  # checks `precision`
        if device.type == "cpu":
            keep_freed_memory()
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self._run = self._forward

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(x)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(batch.to(self.device, non_blocking=True)).float()


class CompiledEngine(TorchEngine):
    """`torch.compile` of the eager engine's forward (autocast included), shapes specialised.

    On CUDA it compiles with `mode="reduce-overhead"` (CUDA graphs): a graph's output is
    overwritten by its next replay, so each call returns a copy. `backend` is
    `torch.compile`'s ("inductor" generates kernels; "eager" only captures the graph).
    """

    def __init__(self, model: SegDINO, device: torch.device, precision: str = "fp32",
                 backend: str = "inductor") -> None:
        super().__init__(model, device, precision)
        self.cuda_graphs = device.type == "cuda" and backend == "inductor"
        mode = "reduce-overhead" if self.cuda_graphs else None
        self._run = torch.compile(self._forward, backend=backend, mode=mode, dynamic=False)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graphs:
            return super().__call__(batch)
        torch.compiler.cudagraph_mark_step_begin()
        return super().__call__(batch).clone()


def import_onnxruntime() -> ModuleType:
    """The `onnxruntime` module, or a UserError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtra("the onnx engine needs ONNX Runtime: pip install segdino[onnx]"
                           ) from None
    return onnxruntime


class OnnxEngine:
    """ONNX Runtime on an ONNX model written by `segdino.inference.onnx.export_onnx`.

    The exported graph takes heights and widths in multiples of its `input_multiple` (the
    patch size, read from the file's metadata); this engine zero-pads other sizes at the
    bottom and right, as the PyTorch model does, and crops the logits back.
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | None = None) -> None:
        ort = import_onnxruntime()
        device = device or torch.device("cpu")
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"--device {device}: the onnx engine runs on cpu or cuda")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--engine onnx on CUDA needs ONNX Runtime's CUDA provider: "
                                "pip install onnxruntime-gpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # ORT raises its own types for unreadable or invalid files
            raise UserError(f"{path}: not a readable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get("segdino")
        if meta is None:
            raise UserError(f"{path}: not an ONNX model written by segdino export")
        self.metadata = json.loads(meta)
        self.multiple = int(self.metadata["input_multiple"])
        self.device = device
        self.precision = "fp32"

    @classmethod
    def from_model(cls, model: SegDINO, device: torch.device | None = None) -> OnnxEngine:
        """Export `model` to a temporary file and open it (the file is removed at once:
        ONNX Runtime keeps the model in memory)."""
        import_onnxruntime()  # before the export's work, not after it
        with tempfile.TemporaryDirectory(prefix="segdino-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path)
            return cls(path, device)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        padded = F.pad(batch, (0, -w % self.multiple, 0, -h % self.multiple))
        images = padded.detach().float().cpu().numpy()
        (logits,) = self.session.run(["logits"], {"images": images})
        return torch.from_numpy(logits)[..., :h, :w]


def make_engine(model: SegDINO, device: torch.device, precision: str = "auto",
                engine: str = "torch") -> Engine:
    """The `engine` ("torch", "compile" or "onnx") for `model` on `device` in `precision`:
    "fp32", "bf16" or "auto" (`resolve_precision`'s choice; float32 for `onnx`, which runs
    float32 only). The engine's `precision` attribute says which it runs."""
    if engine == "onnx":
        if precision not in ("auto", "fp32"):
            raise UserError(f"--precision {precision}: the onnx engine runs float32 "
                            "(use --precision fp32 or auto)")
        return OnnxEngine.from_model(model, device)
    precision = resolve_precision(device, precision)
    if engine == "torch":
        return TorchEngine(model, device, precision)
    if engine == "compile":
        return CompiledEngine(model, device, precision)
    raise UserError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
