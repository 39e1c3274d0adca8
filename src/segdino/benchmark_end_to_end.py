"""End-to-end speed (`segdino bench --end-to-end N`): the commands around the model, as a
fraction of what the model alone would do.

On N generated JPEGs of Kvasir-SEG's sizes (332 x 487 up to 1920 x 1072 pixels, spread
evenly and shuffled, seeded) with their masks, a model with a random backbone and decoder
(saved as a checkpoint and loaded back, as the commands load one) is timed four ways, each
as images per second:

- model only: the forward passes and the sigmoid alone, on ready-made input tensors of the
  input size, N images in batches of the commands' batch size;
- `segdino test` at native size (its precision, float32): what `evaluate` does;
- `segdino predict --overlay` and `segdino predict` (their precision, "auto"): the up-front
  check that every image decodes, then what `predict_files` does.

The commands' library functions are called in this process, so what is counted is the work
from the image files to the written outputs; not Python's and torch's imports, nor loading
the checkpoint (timed apart: `load_s`), which a command pays once whatever N is. Each
pipeline's fraction is of the model alone at that pipeline's precision. Each is the fastest
of `rounds` rounds (the pipelines interleaved), so that a machine shared with other work
shows its speed rather than its neighbours'.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdino.backbone import build_backbone, load_backbone
from segdino.benchmark_stages import STAGE_NAMES, ceilings, stage_costs
from segdino.checkpoints.format import save_segdino
from segdino.data.dataset import find_pairs
from segdino.data.synthetic import sample_pair
from segdino.evaluation import evaluate
from segdino.inference.predict_files import predict_files, unreadable_images
from segdino.inference.predictor import Predictor, chunks
from segdino.models.segdino import SegDINO

SMALLEST, LARGEST = (332, 487), (1072, 1920)  # Kvasir-SEG's image sizes, (h, w)
JPEG_QUALITY = 90
TEST_PRECISION, PREDICT_PRECISION = "fp32", "auto"  # the commands' defaults


@dataclass
class EndToEndRow:
    pipeline: str  # "model only", "test", "predict --overlay" or "predict"
    precision: str
    images: int
    seconds: float
    images_per_second: float
    fraction_of_model: float  # of "model only" at the same precision
    ceiling: float | None  # the most its CPU work outside the model allows (benchmark_stages)


def kvasir_like_dataset(folder: Path, n: int, seed: int = 0) -> Path:
    """`folder/test/{image,mask}`: `n` JPEG images (sizes from SMALLEST to LARGEST, evenly
    spread, in a seeded order) and their 0/255 PNG masks; returns `folder/test`."""
    rng = np.random.default_rng(seed)
    sizes = [tuple(round(a + t * (b - a)) for a, b in zip(SMALLEST, LARGEST, strict=True))
             for t in rng.permutation(np.linspace(0, 1, n))]
    split = folder / "test"
    (split / "image").mkdir(parents=True)
    (split / "mask").mkdir()
    for i, size in enumerate(sizes):
        image, mask = sample_pair(np.random.default_rng([seed, i]), size, jitter=0)
        Image.fromarray(image).save(split / "image" / f"{i:04d}.jpg", quality=JPEG_QUALITY)
        Image.fromarray(mask * 255).save(split / "mask" / f"{i:04d}.png")
    return split


def random_backbone(folder: Path, arch: str) -> Path:
    """Weights of a randomly initialised `arch` backbone, saved as a user's would be."""
    weights = folder / f"{arch}_random.pth"
    torch.save(build_backbone(arch).state_dict(), weights)
    return weights


def random_checkpoint(folder: Path, arch: str, decoder: str, size: tuple[int, int]) -> Path:
    """A checkpoint of a model with a random backbone (saved beside it) and decoder."""
    model = SegDINO(load_backbone(random_backbone(folder, arch)), decoder=decoder)
    model.preprocessing.input_size = size
    path = folder / "random.safetensors"
    save_segdino(model, path)
    return path


def _model_only(predictor: Predictor, n: int) -> float:
    """Seconds for the forward passes (and sigmoid) of `n` images in the predictor's batches."""
    h, w = predictor.model.preprocessing.input_size
    batches = [torch.randn(len(c), 3, h, w) for c in chunks(range(n), predictor.batch_size)]
    predictor.probabilities(batches[0])  # warm-up, untimed
    started = time.perf_counter()
    for batch in batches:
        predictor.probabilities(batch)
    return time.perf_counter() - started


def _predict(predictor: Predictor, images: list[Path], out: Path, overlays: bool,
             workers: int) -> None:
    """What `segdino predict` does once the model is loaded."""
    unreadable_images(images)
    predict_files(predictor, images, out, overlays=overlays, progress=False, workers=workers)


def bench_end_to_end(
    n: int,
    arch: str,
    decoder: str,
    size: tuple[int, int],
    batch: int,
    workers: int,
    device: torch.device,
    rounds: int = 2,
    progress: Callable[[str], None] = print,
) -> tuple[list[EndToEndRow], float, dict[str, float]]:
    """The rows (model only, then each pipeline, per precision), each the fastest of
    `rounds`; the seconds one load of the checkpoint took; the milliseconds per image of
    each stage outside the model (`benchmark_stages`). Everything is made and written in a
    temporary folder."""
    with tempfile.TemporaryDirectory(prefix="segdino-bench-") as tmp:
        root = Path(tmp)
        progress(f"end to end: generating {n} JPEGs")
        split = kvasir_like_dataset(root / "data", n)
        pairs = find_pairs(split)
        images = [image for image, _ in pairs]
        torch.manual_seed(0)
        ckpt = random_checkpoint(root, arch, decoder, size)
        started = time.perf_counter()
        predictors = {p: Predictor.from_checkpoint(ckpt, device=device, batch_size=batch,
                                                   precision=p)
                      for p in (TEST_PRECISION, PREDICT_PRECISION)}
        load_s = (time.perf_counter() - started) / len(predictors)
        pipelines = {
            TEST_PRECISION: {"test": lambda p, out: evaluate(p, pairs, out, num_workers=workers,
                                                             progress=False)},
            PREDICT_PRECISION: {
                "predict --overlay": lambda p, out: _predict(p, images, out, True, workers),
                "predict": lambda p, out: _predict(p, images, out, False, workers),
            },
        }
        best: dict[tuple[str, str], float] = {}  # (precision, pipeline) -> fastest seconds
        for round_no in range(rounds):  # interleaved, so that a busy spell hits all alike
            for precision, runs in pipelines.items():
                predictor = predictors[precision]
                progress(f"end to end, round {round_no + 1}: model only, {predictor.precision}")
                times = {"model only": _model_only(predictor, n)}
                for name, run in runs.items():
                    progress(f"end to end, round {round_no + 1}: {name}")
                    started = time.perf_counter()
                    run(predictor, root / f"{name}-{round_no}")
                    times[name] = time.perf_counter() - started
                for name, seconds in times.items():
                    key = (predictor.precision, name)
                    best[key] = min(best.get(key, seconds), seconds)
        progress("end to end: each stage's CPU work")
        costs = stage_costs(predictors[TEST_PRECISION], pairs)
        model_ms = {name: 1000 * best[precision, "model only"] / n
                    for precision, name in best if name != "model only"}
        ceiling = ceilings(costs, model_ms)
        rows = [EndToEndRow(name, precision, n, round(seconds, 4), round(n / seconds, 2),
                            round(best[precision, "model only"] / seconds, 2), ceiling.get(name))
                for (precision, name), seconds in best.items()]
    return rows, load_s, costs


def format_end_to_end(rows: list[EndToEndRow], load_s: float, costs: dict[str, float],
                      batch: int, workers: int) -> str:
    """The printed end-to-end table, what it counts, and the stages' CPU work."""
    n = rows[0].images
    lines = [f"end to end: {n} JPEGs of {SMALLEST[0]} x {SMALLEST[1]} to {LARGEST[0]} x "
             f"{LARGEST[1]}, batch {batch}, {workers} worker(s)",
             f"{'pipeline':<20}{'precision':>10}{'seconds':>9}{'img/s':>9}{'x model':>9}"
             f"{'ceiling':>9}"]
    lines += [f"{r.pipeline:<20}{r.precision:>10}{r.seconds:>9.2f}{r.images_per_second:>9.2f}"
              f"{r.fraction_of_model:>9.2f}{'' if r.ceiling is None else f'{r.ceiling:.2f}':>9}"
              for r in rows]
    lines.append(f"(loading the checkpoint, once per command, not counted: {load_s:.1f} s)")
    lines.append("CPU work per image outside the model, one thread, ms: " + ", ".join(
        f"{STAGE_NAMES[stage]} {ms:.1f}" for stage, ms in costs.items()))
    lines.append("(ceiling: the model's time over the model's plus that work spread over "
                 "the cores; no overlap does better)")
    return "\n".join(lines)
