"""What `segdino bench` prints: the engines' and training steps' tables, progress lines, the
hardware's name, and, when one run times several decoders, their comparison side by side.

The comparison takes each decoder's eager float32 inference at the largest batch timed (the
reference's own computation, measured for every decoder) and its training steps, and gives
each as a ratio to the first decoder's: ratios from one run on one machine are what carry
over to another machine, not images per second.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from segdino.benchmark import InferenceRow, TrainingRow

BASELINE_ENGINE = "torch-fp32"  # what the decoders are compared on: always measured


@dataclass
class DecoderRow:
    decoder: str
    parameters: int  # trainable: the decoder's
    batch: int  # of the inference compared
    images_per_second: float  # eager float32 inference
    inference_ratio: float  # to the first decoder's
    uncached_step_images_per_second: float | None  # None without training rows
    cached_step_images_per_second: float | None
    cached_step_ratio: float | None  # cached step, to the first decoder's


def compare_decoders(inference: list[InferenceRow], training: list[TrainingRow],
                     parameters: dict[str, int]) -> list[DecoderRow]:
    """A row per decoder of `parameters` (in its order), ratios to the first."""
    batch = max(r.batch for r in inference)
    speed = {r.decoder: r.images_per_second for r in inference
             if r.engine == BASELINE_ENGINE and r.batch == batch}
    steps = {(t.decoder, t.mode): t.images_per_second for t in training}
    first = next(iter(parameters))
    rows = []
    for name, count in parameters.items():
        cached = steps.get((name, "cached"))
        first_cached = steps.get((first, "cached"))
        rows.append(DecoderRow(
            name, count, batch, speed[name], round(speed[name] / speed[first], 2),
            steps.get((name, "uncached")), cached,
            None if cached is None or first_cached is None else round(cached / first_cached, 2)))
    return rows


def format_table(inference: list[InferenceRow], training: list[TrainingRow],
                 default_label: str, skipped: list[str]) -> str:
    """The printed report: one line per row, the default path's rows marked, then the
    engines skipped."""
    lines = [f"{'decoder':<9}{'engine':<16}{'batch':>6}{'img/s':>9}{'ms/img':>9}{'peak MB':>9}"
             f"{'x fp32':>8}{'max |dlogit|':>14}{'1st call s':>12}"]
    for r in inference:
        mark = " *" if r.engine == default_label else ""
        peak = "n/a" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"
        lines.append(f"{r.decoder:<9}{r.engine + mark:<16}{r.batch:>6}"
                     f"{r.images_per_second:>9.2f}{r.ms_per_image:>9.1f}{peak:>9}"
                     f"{r.ratio_to_fp32:>8.2f}{r.max_logit_diff:>14.2e}{r.first_call_s:>12.1f}")
    lines.append(f"* the default path of segdino predict and test ({default_label})")
    lines.extend(skipped)
    if training:
        lines.append("")
        lines.append(f"{'decoder':<9}{'training step':<16}{'batch':>6}{'img/s':>9}"
                     f"{'x uncached':>12}")
        for t in training:
            lines.append(f"{t.decoder:<9}{t.mode:<16}{t.batch:>6}{t.images_per_second:>9.2f}"
                         f"{t.ratio_to_uncached:>12.2f}")
    return "\n".join(lines)


def format_decoders(rows: list[DecoderRow]) -> str:
    """The decoders side by side, ratios to the first one's."""
    first = rows[0].decoder
    lines = [f"decoders (eager fp32 inference at batch {rows[0].batch}; x = ratio to {first})",
             f"{'decoder':<9}{'parameters':>12}{'infer img/s':>13}{'x':>7}"
             f"{'uncached step':>15}{'cached step':>13}{'x':>7}"]

    def number(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    for r in rows:
        lines.append(f"{r.decoder:<9}{r.parameters:>12,}{r.images_per_second:>13.2f}"
                     f"{r.inference_ratio:>7.2f}"
                     f"{number(r.uncached_step_images_per_second, '.2f'):>15}"
                     f"{number(r.cached_step_images_per_second, '.2f'):>13}"
                     f"{number(r.cached_step_ratio, '.2f'):>7}")
    lines.append("(training steps in images per second)")
    return "\n".join(lines)


def progress_printer(enabled: bool) -> Callable[[str], None]:
    """A progress printer: each line after the seconds since it was made; or silence."""
    started = time.perf_counter()

    def show(message: str) -> None:
        if enabled:
            print(f"[{time.perf_counter() - started:5.0f} s] {message}", flush=True)

    return show


def hardware(device: torch.device) -> str:
    """The GPU's or CPU's name, as far as it can be found."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(),
                          re.MULTILINE)
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.processor() or platform.machine()
