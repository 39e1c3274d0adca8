"""The speed of issue 13's evidence tools (`segdino bench --folds K`, `--ensemble K`), each as
a ratio to what it adds to: cross-validation to one training run, an ensemble to one model.

Cross-validation: on `CV_IMAGES` generated images (`segdino.data.synthetic`, about the
bench's input size: `CV_VAL` of them in val/, the rest in train/) and a randomly initialised
backbone saved as a user's weights are, `cross_validate` with K folds against `train` with
the feature cache (trained on train/, validated on val/, as a fold of 5 is), both `CV_EPOCHS`
epochs at the training batch size's default. Each is timed from the images on disk to the
finished run folder, as the command runs it: cross-validation's scoring of the held-out
folds, temperature fit and ensemble included; after an untimed one-epoch run, which pays
what only a process's first run pays (imports, the first allocations: seconds). Each is the
fastest of two rounds, run in turn. Target: at most 2x the single run.

Ensemble: for each decoder, a K-member ensemble of it on the bench's backbone against one
model of it: the forward pass alone (eager float32) at the bench's input size and batch
sizes, the two timed call by call in turn, so that a busy spell of a shared machine hits
both; the ratio is the ensemble's time to the single model's. Target: at most 1.15x for v1.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from segdino.benchmark import time_calls
from segdino.benchmark_end_to_end import random_backbone
from segdino.cross_validation import SUMMARY, cross_validate
from segdino.data.synthetic import make_synthetic_dataset
from segdino.inference.engines import make_engine
from segdino.models.decoders import ENSEMBLE
from segdino.models.segdino import SegDINO
from segdino.training.config import TrainConfig, with_recipe
from segdino.training.loop import train

CV_IMAGES, CV_VAL, CV_EPOCHS = 40, 8, 3
CV_TARGET, ENSEMBLE_TARGET = 2.0, 1.15  # issue 13's: at most these ratios (v1's ensemble)


@dataclass
class CrossValidationRow:
    decoder: str
    folds: int  # in the run's cv_summary.json: every fold trained and scored
    images: int
    epochs: int
    batch: int
    single_run_s: float
    cross_validation_s: float
    ratio: float  # cross-validation's time to the single run's


@dataclass
class EnsembleRow:
    decoder: str
    members: int  # the decoders of the ensemble timed
    batch: int
    single_images_per_second: float
    ensemble_images_per_second: float
    time_ratio: float  # the ensemble's time per image to the single model's
    timed_runs: int  # of each


def bench_cross_validation(k: int, arch: str, decoder: str, size: tuple[int, int],
                           device: torch.device, workers: int, rounds: int = 2,
                           progress: Callable[[str], None] = print) -> CrossValidationRow:
    """K-fold cross-validation against one cached run, each the fastest of `rounds` (in
    turn, so that a busy spell of a shared machine hits both); everything in a temporary
    folder, the runs' own printing held back."""
    with tempfile.TemporaryDirectory(prefix="segdino-bench-") as tmp:
        root = Path(tmp)
        progress(f"cross-validation: generating {CV_IMAGES} images")
        make_synthetic_dataset(root / "data" / "synth", n_train=CV_IMAGES - CV_VAL,
                               n_val=CV_VAL, n_test=0, size=size)
        torch.manual_seed(0)
        cfg = TrainConfig(**with_recipe({
            "data_dir": str(root / "data"), "dataset": "synth",
            "dino_ckpt": str(random_backbone(root, arch)), "input_h": size[0],
            "input_w": size[1], "epochs": CV_EPOCHS, "decoder": decoder,
            "cache_features": True, "num_workers": workers, "device": str(device),
            "save_root": str(root / "runs")}))
        with contextlib.redirect_stdout(io.StringIO()):  # the warm-up pays a first run's set-up
            train(replace(cfg, name="warm-up", epochs=1), progress=False)
        runs = {"single run": lambda r: train(replace(cfg, name=f"single{r}"), progress=False),
                f"{k}-fold": lambda r: cross_validate(replace(cfg, folds=k, name=f"cv{r}"),
                                                      progress=False)}
        seconds = [math.inf, math.inf]  # each the fastest of its rounds, run in turn
        for r in range(rounds):
            for i, (name, run) in enumerate(runs.items()):
                progress(f"cross-validation, round {r + 1}: {name}")
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    run(r)
                seconds[i] = min(seconds[i], time.perf_counter() - started)
        folds = len(json.loads((root / "runs" / "cv0" / SUMMARY).read_text())["folds"])
    return CrossValidationRow(decoder, folds, CV_IMAGES, CV_EPOCHS, cfg.batch_size,
                              round(seconds[0], 2), round(seconds[1], 2),
                              round(seconds[1] / seconds[0], 2))


def bench_ensemble(model: SegDINO, k: int, device: torch.device, batch_sizes: list[int],
                   size: tuple[int, int], warmup: int = 2, repeats: int = 10,
                   budget_s: float = 30.0,
                   progress: Callable[[str], None] = print) -> list[EnsembleRow]:
    """A row per batch size: `model` against an ensemble of `k` decoders like its own on its
    backbone (random weights: speed does not depend on them)."""
    member = {"decoder": model.decoder, "decoder_options": model.decoder_options}
    ensemble = SegDINO(model.backbone, model.num_classes, model.layers, ENSEMBLE,
                       members=[member] * k).to(device).eval()
    engines = [make_engine(m, device, "fp32", "torch") for m in (model, ensemble)]
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(b))
        progress(f"{model.decoder}: {k}-member ensemble against one model, batch {b}")
        for engine in engines:
            for _ in range(warmup):
                engine(x)
        times: tuple[list[float], list[float]] = ([], [])
        started = time.perf_counter()
        while len(times[1]) < repeats and (
                len(times[1]) < 3 or time.perf_counter() - started <= budget_s):
            for spent, engine in zip(times, engines, strict=True):
                spent += time_calls(partial(engine, x), device, 1, budget_s)
        single, together = map(statistics.median, times)
        rows.append(EnsembleRow(model.decoder, len(ensemble.head), b, round(b / single, 2),
                                round(b / together, 2), round(together / single, 2),
                                len(times[1])))
    return rows


def format_evidence(cv: CrossValidationRow | None, ensembles: list[EnsembleRow],
                    size: tuple[int, int]) -> str:
    """The printed tables: the ensembles', then cross-validation's."""
    lines = []
    if ensembles:
        lines += [f"ensembles against one model (eager fp32, forward pass alone, {size[0]} x "
                  f"{size[1]}; x = the ensemble's time, target <= {ENSEMBLE_TARGET} for v1)",
                  f"{'decoder':<9}{'members':>8}{'batch':>6}{'single img/s':>14}"
                  f"{'ensemble img/s':>16}{'x time':>8}"]
        lines += [f"{r.decoder:<9}{r.members:>8}{r.batch:>6}{r.single_images_per_second:>14.2f}"
                  f"{r.ensemble_images_per_second:>16.2f}{r.time_ratio:>8.2f}"
                  for r in ensembles]
    if cv is not None:
        lines += [""] if lines else []
        lines += [f"cross-validation against one run ({cv.images} generated images about "
                  f"{size[0]} x {size[1]}, decoder {cv.decoder}, {cv.epochs} epochs, batch "
                  f"{cv.batch}, features cached; target <= {CV_TARGET}x)",
                  f"{'run':<26}{'seconds':>9}{'x single':>10}",
                  f"{'single run':<26}{cv.single_run_s:>9.2f}{1:>10.2f}",
                  f"{f'{cv.folds}-fold cross-validation':<26}{cv.cross_validation_s:>9.2f}"
                  f"{cv.ratio:>10.2f}"]
    return "\n".join(lines)
