"""Inference and training speed, engine by engine, in one process (`segdino bench`); the
report it prints, and the comparison of decoders, are `segdino.bench_report`'s.

Inference: for each engine and batch size, the median time of `--repeats` forward passes
after `--warmup` untimed ones (the first of which pays `torch.compile`'s compilation), as
images per second and milliseconds per image; the peak memory above the level before the
engine was built; the ratio to eager float32; and the largest logit difference from eager
float32 on the same input. Eager float32 is the reference's own computation (the same
model, the same operations), so its row is the reference's speed on this machine.

Training: images per second of a decoder training step (forward, BCE loss, backward, AdamW)
at `--train-batch`, with the backbone run at every step (as without a feature cache) and with
its features computed once beforehand (what a feature cache saves).

Every row names the model's decoder, so that one run can time several (the backbone is the
same; only the decoder differs). The model has random weights: speed does not depend on
their values.
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from segdino.errors import MissingExtra, UserError
from segdino.inference.engines import ENGINES, make_engine
from segdino.models.segdino import SegDINO
from segdino.runtime import INFERENCE_PRECISIONS, glibc, resolve_precision

DEFAULT_ENGINES = ("fp32", "bf16", "compile", "onnx")
FORMAT = "segdino-bench"  # the JSON report's "format": `--json` writes over no other file


@dataclass
class InferenceRow:
    decoder: str
    engine: str  # ENGINE-PRECISION, e.g. torch-fp32
    batch: int
    images_per_second: float
    ms_per_image: float
    peak_memory_mb: float | None  # above the level before the engine was built
    ratio_to_fp32: float
    max_logit_diff: float  # largest |logit - eager float32's logit|
    first_call_s: float  # the first warm-up call: compilation included
    timed_runs: int


@dataclass
class TrainingRow:
    decoder: str
    mode: str  # "uncached" or "cached"
    batch: int
    images_per_second: float
    ratio_to_uncached: float
    timed_steps: int


def parse_engine(spec: str) -> tuple[str, str]:
    """`fp32`, `bf16`, `auto` (eager PyTorch), or `ENGINE[-PRECISION]` such as `compile`,
    `compile-bf16`, `onnx`: (engine, precision), the precision "auto" when not given."""
    if spec in INFERENCE_PRECISIONS:
        return "torch", spec
    engine, _, precision = spec.partition("-")
    if engine not in ENGINES or (precision and precision not in INFERENCE_PRECISIONS):
        raise UserError(f"--engines {spec}: expected fp32, bf16, auto, or ENGINE[-PRECISION] "
                        f"with ENGINE one of {', '.join(ENGINES)} (e.g. compile-bf16)")
    return engine, precision or "auto"


class PeakMemory:
    """Peak memory in MB above a baseline: the CUDA allocator's on CUDA (which does not see
    ONNX Runtime's CUDA memory); on Linux CPUs the process's resident-set high-water mark
    (VmHWM, reset through /proc/self/clear_refs); None where neither can be read."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._give_back()
        self.baseline = self._current()

    def _give_back(self) -> None:
        """On the CPU, give back the freed memory the process keeps (`keep_freed_memory`),
        so that reusing it counts as use."""
        if not self.cuda and (libc := glibc()) is not None:
            libc.malloc_trim(0)

    def _current(self) -> float | None:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / 2**20
        return self._status("VmRSS")

    @staticmethod
    def _status(field: str) -> float | None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
        found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        return int(found.group(1)) / 1024 if found else None

    def reset(self) -> None:
        """Start a new peak from the present level."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._give_back()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.baseline = None  # the high-water mark cannot be reset: no number

    def peak(self) -> float | None:
        """The peak since the last reset, above the baseline."""
        if self.cuda:
            high = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            high = self._status("VmHWM")
        if high is None or self.baseline is None:
            return None
        return max(high - self.baseline, 0.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int,
               budget_s: float) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, stopping early (after 3 or more) once
    `budget_s` seconds have gone by."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - started > budget_s:
            break
    return times


def _seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def bench_inference(
    model: SegDINO,
    device: torch.device,
    specs: list[tuple[str, str]],
    batch_sizes: list[int],
    size: tuple[int, int],
    warmup: int = 2,
    repeats: int = 10,
    budget_s: float = 30.0,
    progress: Callable[[str], None] = print,
) -> tuple[list[InferenceRow], list[str]]:
    """One row per engine and batch size, and a note for each engine skipped because an
    optional extra it needs is not installed; eager float32 is measured first, always, as
    the baseline of the ratios and logit differences."""
    inputs = {b: _seeded(b, 3, *size, seed=b) for b in batch_sizes}
    specs = [("torch", "fp32"), *(s for s in specs if s != ("torch", "fp32"))]
    labels: set[str] = set()
    reference: dict[int, tuple[torch.Tensor, float]] = {}  # batch -> (logits, img/s)
    rows, skipped = [], []
    for engine_name, precision in specs:
        resolved = "fp32" if engine_name == "onnx" else resolve_precision(device, precision)
        label = f"{engine_name}-{resolved}"
        if label in labels:
            continue
        labels.add(label)
        gc.collect()
        memory = PeakMemory(device)
        try:
            engine = make_engine(model, device, resolved, engine_name)
        except MissingExtra as exc:
            skipped.append(f"{label}: skipped, {exc}")
            progress(skipped[-1])
            continue
        for b in batch_sizes:
            x = inputs[b]
            progress(f"{model.decoder}: {label}, batch {b}")
            t0 = time.perf_counter()
            logits = engine(x)
            _sync(device)
            first = time.perf_counter() - t0
            for _ in range(warmup - 1):
                engine(x)
            memory.reset()
            times = time_calls(partial(engine, x), device, repeats, budget_s)
            per_batch = statistics.median(times)
            ips = b / per_batch
            if label == "torch-fp32":
                reference[b] = (logits.float().cpu(), ips)
            ref_logits, ref_ips = reference[b]
            rows.append(InferenceRow(
                model.decoder, label, b, round(ips, 2), round(1000 * per_batch / b, 2),
                None if (peak := memory.peak()) is None else round(peak, 1),
                round(ips / ref_ips, 2),
                float((logits.float().cpu() - ref_logits).abs().max()),
                round(first, 2), len(times)))
        del engine  # before the next engine's baseline
    return rows, skipped


def bench_training(
    model: SegDINO,
    device: torch.device,
    batch: int,
    size: tuple[int, int],
    warmup: int = 2,
    steps: int = 10,
    budget_s: float = 30.0,
) -> list[TrainingRow]:
    """Decoder training steps (BCE, AdamW lr 1e-4, weight decay 1e-4, float32) on random
    images and masks: `uncached` runs the backbone at every step, `cached` decodes features
    computed once beforehand for the same batches."""
    n = warmup + steps
    images = [_seeded(batch, 3, *size, seed=100 + i).to(device) for i in range(n)]
    masks = [(_seeded(batch, 1, *size, seed=200 + i) > 0).float().to(device) for i in range(n)]
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-4, weight_decay=1e-4)

    def step(logits_of: Callable[[int], torch.Tensor], i: int) -> None:
        loss = F.binary_cross_entropy_with_logits(logits_of(i), masks[i])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    features = [model.features(x) for x in images]
    modes: dict[str, Callable[[int], torch.Tensor]] = {
        "uncached": lambda i: model(images[i]),
        "cached": lambda i: model.decode(features[i], size),
    }
    rows = []
    for mode, logits_of in modes.items():
        for i in range(warmup):
            step(logits_of, i)
        order = iter(range(warmup, n))
        times = time_calls(lambda f=logits_of, it=order: step(f, next(it)), device, steps,
                           budget_s)
        ips = batch / statistics.median(times)
        base = rows[0].images_per_second if rows else ips
        rows.append(TrainingRow(model.decoder, mode, batch, round(ips, 2), round(ips / base, 2),
                                len(times)))
    model.eval()
    return rows
