"""Why the commands run below the model's speed (`segdino bench --end-to-end`): the CPU work
each image costs outside the model, stage by stage, on one thread, and the ceiling it sets.

Decoding, resizing, scoring and writing can run beside the model but not for free: where
the model keeps every core busy, each image's outside work W (core-milliseconds) lengthens
the run by W / cores at best, so a pipeline cannot exceed `model / (model + W / cores)` of
the model's throughput, however well it overlaps (`ceiling`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from segdino.data.dataset import Pair
from segdino.data.transforms import load_rgb
from segdino.evaluation import score_image, truth_format
from segdino.inference.predictor import Predictor, to_size
from segdino.picture_files import save_jpeg, save_png
from segdino.visualize import figure

# the stages each pipeline pays per image (test's worst-case overlays, a few per report, not)
PIPELINE_STAGES = {
    "test": ("decode", "input", "truth", "score"),
    "predict --overlay": ("decode", "input", "mask", "overlay"),
    "predict": ("decode", "input", "mask"),
}
STAGE_NAMES = {"decode": "decode the image", "input": "resize it to the input",
               "truth": "read the truth mask",
               "score": "resize back, metrics, uncertainty (test)",
               "mask": "resize back, write the mask PNG (predict)",
               "overlay": "draw and write the overlay JPEG"}


def stage_costs(predictor: Predictor, pairs: list[Pair]) -> dict[str, float]:
    """Milliseconds per image of each stage, on one thread, averaged over `pairs`."""
    spent = dict.fromkeys(STAGE_NAMES, 0.0)

    def timed(stage: str, fn: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = fn()
        spent[stage] += time.perf_counter() - started
        return result

    def mask(prob: torch.Tensor, size: tuple[int, int], path: Path) -> np.ndarray:
        pred = predictor.decide(to_size(prob, size))
        save_png(pred, path)
        return pred

    threads = torch.get_num_threads()
    mask_format = truth_format(predictor.model)
    torch.set_num_threads(1)  # the model too (not counted): torch's resizes run on one thread
    try:
        with tempfile.TemporaryDirectory(prefix="segdino-bench-") as tmp:
            for image_path, mask_path in pairs:
                image = timed("decode", lambda p=image_path: load_rgb(p))
                x = timed("input", lambda im=image: predictor.preprocess(im))
                prob = predictor.probabilities(x[None])[0]
                truth = timed("truth", lambda p=mask_path: mask_format.read(p))
                timed("score", lambda p=prob, t=truth: score_image(predictor, p, t))
                pred = timed("mask", lambda p=prob, t=truth: mask(p, t.shape,
                                                                  Path(tmp) / "mask.png"))
                timed("overlay", lambda im=image, p=pred, name=image_path.name: save_jpeg(
                    figure(np.asarray(im), pred=p, title=name), Path(tmp) / "overlay.jpg"))
    finally:
        torch.set_num_threads(threads)
    return {stage: round(1000 * s / len(pairs), 1) for stage, s in spent.items()}


def ceilings(costs: dict[str, float], model_ms: dict[str, float]) -> dict[str, float]:
    """Each pipeline's ceiling (a fraction of the model alone) on this machine's cores, from
    the stage `costs` and the model alone's milliseconds per image at the pipeline's
    precision (`model_ms`, by pipeline)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {pipeline: round(model_ms[pipeline] / (model_ms[pipeline] + sum(
                costs[s] for s in stages) / (cores or 1)), 2)
            for pipeline, stages in PIPELINE_STAGES.items()}
