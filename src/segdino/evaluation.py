"""Scoring a trained model on a dataset split, image by image (`segdino test`).

By default each prediction is brought back to its image's own size and scored there
(`--eval-size native`); `--eval-size input` scores at the network's input size, as the
reference does. Each image also gets the uncertainty score that `predict --uncertainty` gives
it (the mean normalised entropy of its probabilities, at the size scored), and the summary
how well that score finds the images of low Dice. HD95 is the standard one unless `--hd95`
names another (`metrics.HD95_VARIANTS`). Writes the report (`segdino.report`: `metrics.csv`,
a row per image, then MEAN, SD and MEDIAN rows; `summary.json`, with each mean's bootstrap 95%
confidence interval) and overlays of the worst images.

A model of K >= 2 classes is scored per foreground class (`metrics.class_scores`): the CSV
has a column per metric and class (`dice_1`, ..., `hd95_2`) and their mean over the classes
(`dice_mean`, ...), and `summary.json` the means over classes with each class's summary in
`per_class`. Their SD, median and interval are over the images' means over the classes (a
spread over classes would say nothing of how the images vary).

Every report goes to a folder of its own (a second test of the same split gets `NAME-2`, and
so on) and its `summary.json` records what produced it (`provenance`: the checkpoint's and
the backbone's paths and SHA-256, precision, device, versions, command line, date). Scoring
is float32 unless `--precision` says otherwise, so that one checkpoint gives the same numbers
on every CPU (bf16 autocast moves per-image Dice by up to about 2e-4).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import segdino.metrics as metrics
from segdino.checkpoints.load import describe_sources
from segdino.data.dataset import Pair
from segdino.data.masks import MaskFormat
from segdino.data.transforms import image_to_tensor, load_rgb
from segdino.errors import UserError
from segdino.inference.background import in_background, run_in_background
from segdino.inference.predictor import Predictor, to_size
from segdino.inference.uncertainty import entropy_map, summarise_scores
from segdino.models.preprocessing import Preprocessing
from segdino.models.segdino import SegDINO
from segdino.picture_files import save_jpeg
from segdino.progress import progress_bar
from segdino.provenance import environment
from segdino.report import UNCERTAINTY, Scores, summarise_rows, write_report
from segdino.statistics import DEFAULT_RESAMPLES
from segdino.visualize import caption, figure

EVAL_SIZES = ("native", "input")


class EvalImages(Dataset):
    """(image at the input size, truth mask at the scoring size, index), decoded in workers;
    without `images`, an empty tensor for the image (its probabilities are known already)."""

    def __init__(self, pairs: list[Pair], pre: Preprocessing, eval_size: str,
                 mask_format: MaskFormat, images: bool = True) -> None:
        self.pairs, self.pre, self.eval_size = pairs, pre, eval_size
        self.mask_format, self.images = mask_format, images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.ndarray, int]:
        image_path, mask_path = self.pairs[i]
        truth = self.mask_format.read(mask_path)
        pre = self.pre
        if self.eval_size == "input":
            truth = self.mask_format.resize(truth, pre.input_size)
        if not self.images:
            return torch.empty(0), truth, i
        image = image_to_tensor(load_rgb(image_path), pre.input_size, pre.mean, pre.std,
                                pre.resize)
        return image, truth, i


def truth_format(model: SegDINO) -> MaskFormat:
    """How the truth masks of `model`'s data are read: binary, or by its classes' settings."""
    pre = model.preprocessing
    return MaskFormat(model.num_classes, pre.class_map, pre.ignore_index)


def _collate(batch: list) -> tuple[torch.Tensor, list[np.ndarray], list[int]]:
    images, truths, indices = zip(*batch, strict=True)
    return torch.stack(images), list(truths), list(indices)


def evaluate(
    predictor: Predictor,
    pairs: list[Pair],
    out_dir: Path,
    eval_size: str = "native",
    hd95: str = "standard",
    spacing: tuple[float, float] = (1.0, 1.0),
    worst: int = 8,
    num_workers: int = 2,
    progress: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    probabilities: Sequence[torch.Tensor] | None = None,
) -> dict:
    """Score `predictor` on `pairs`; write the report into `out_dir`; return the summary
    (its confidence intervals from `resamples` bootstrap resamples drawn from `seed`).
    `probabilities`, when given, are the pairs' (C, h, w) at the input size, computed
    already (cross-validation's, from its feature cache): the images are not run again."""
    model = predictor.model
    pre, classes = model.preprocessing, model.num_classes
    mask_format = truth_format(model)
    images_needed = probabilities is None
    loader = DataLoader(EvalImages(pairs, pre, eval_size, mask_format, images_needed),
                        batch_size=predictor.batch_size, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=predictor.device.type == "cuda")

    predicted = ((predictor.probabilities(images) if images_needed
                  else torch.stack([probabilities[i] for i in indices]), truths, indices)
                 for images, truths, indices in progress_bar(loader, progress, desc="testing"))
    def scored(batch: tuple[torch.Tensor, list[np.ndarray], list[int]]
               ) -> list[tuple[int, Scores, float, torch.Tensor]]:
        return [(i, *score_image(predictor, prob, truth, eval_size, hd95, spacing), prob)
                for prob, truth, i in zip(*batch, strict=True)]

    rows: list[tuple[str, Scores]] = []
    unsure: list[float] = []
    lowest: list[tuple[float, int, Scores, torch.Tensor]] = []  # the `worst` lowest Dice
    started = time.time()
    # Each batch is scored in a thread while the model runs on the next ones.
    for batch in in_background(scored, predicted):
        for i, scores, uncertainty, prob in batch:
            rows.append((pairs[i][0].name, scores))
            unsure.append(uncertainty)
            lowest = sorted([*lowest, (_mean_scores(scores).dice, i, scores, prob)])[:worst]
    seconds = time.time() - started
    summary = {
        **summarise_rows([s for _, s in rows], classes, resamples, seed),
        "images_per_second": round(len(rows) / seconds, 2),
        "eval_size": eval_size, "hd95_variant": hd95, "spacing": list(spacing),
        "input_size": list(pre.input_size),
        # where the images and masks are, so that the report can be looked through later
        "image_dir": str(pairs[0][0].parent.absolute()),
        "mask_dir": str(pairs[0][1].parent.absolute()),
        **({"threshold": pre.threshold} if classes == 1 else
           {"num_classes": classes, "class_names": pre.class_names, "class_map": pre.class_map,
            "ignore_index": pre.ignore_index}),
    }
    summary[UNCERTAINTY] = summarise_scores(unsure, [_mean_scores(s).dice for _, s in rows])
    summary["provenance"] = provenance(predictor)
    write_report(rows, summary, out_dir, unsure)
    draw_worst(predictor, pairs, [low[1:] for low in lowest], out_dir / "worst", mask_format)
    return summary


def score_image(predictor: Predictor, prob: torch.Tensor, truth: np.ndarray,
                eval_size: str = "native", hd95: str = "standard",
                spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[Scores, float]:
    """One image's scores and uncertainty (predict's review.csv score) from its (C, h, w)
    probabilities at the input size and its truth mask at the scoring size."""
    full = to_size(prob, truth.shape) if eval_size == "native" else prob.squeeze(0).numpy()
    scores = metrics.image_scores(predictor.decide(full), truth, predictor.model.num_classes,
                                  hd95, spacing)
    return scores, float(entropy_map(full).mean())


def provenance(predictor: Predictor) -> dict:
    """What produced a report: the model's files (path and SHA-256), the engine, and how and
    where it ran (`segdino.provenance`)."""
    return {**describe_sources(predictor.model),
            **environment(predictor.device, predictor.precision),
            "engine": type(predictor.engine).__name__, "tta": predictor.tta}


def report_folder(save_root: Path, name: str | None, default: str) -> Path:
    """The report's folder, never one holding an earlier report: `name` (refused when taken),
    else `default`, `default-2`, `default-3`, ... the first free one."""
    if name is not None:
        folder = save_root / name
        if _taken(folder):
            raise UserError(f"--name {name}: {folder} exists and is not empty (choose another "
                            "--name, or leave it out for a new folder)")
        return folder
    candidates = (save_root / (default if n == 1 else f"{default}-{n}")
                  for n in itertools.count(1))
    return next(folder for folder in candidates if not _taken(folder))


def _taken(folder: Path) -> bool:
    return folder.exists() and not (folder.is_dir() and not any(folder.iterdir()))


def _mean_scores(scores: Scores) -> metrics.ImageScores:
    """One image's scores (binary), or their mean over its classes."""
    return scores if isinstance(scores, metrics.ImageScores) else metrics.mean_scores(scores)



def draw_worst(predictor: Predictor, pairs: list[Pair],
               worst: list[tuple[int, Scores, torch.Tensor]], folder: Path,
               mask_format: MaskFormat) -> None:
    """Figures (truth and prediction outlined, the image's name, scores and a legend) of the
    images `worst` lists, lowest Dice first (for K classes, the lowest mean over the
    classes): (index in `pairs`, scores, probabilities at the input size). Drawn in threads."""
    def draw(ranked: tuple[int, tuple[int, Scores, torch.Tensor]]) -> None:
        rank, (i, scores, prob) = ranked
        mean = _mean_scores(scores)
        image_path, mask_path = pairs[i]
        image = np.asarray(load_rgb(image_path))
        pred = predictor.decide(to_size(prob, image.shape[:2]))
        save_jpeg(scored_figure(image, pred, mask_format.read(mask_path), image_path.name,
                               mean, mask_format.num_classes,
                               predictor.model.preprocessing.class_names),
                 folder / f"{rank:02d}_dice{mean.dice:.3f}_{image_path.stem}.jpg")

    run_in_background(draw, enumerate(worst, start=1), workers=2)


def scored_figure(image: np.ndarray, pred: np.ndarray | None, truth: np.ndarray, name: str,
                  scores: metrics.ImageScores, num_classes: int = 1,
                  class_names: list[str] | None = None) -> np.ndarray:
    """How a report shows one image: truth and prediction outlined, under its name, its Dice,
    IoU and HD95 (for K classes, their means over the classes) and a legend."""
    title = caption(name, {"Dice": scores.dice, "IoU": scores.iou, "HD95": scores.hd95})
    return figure(image, pred, truth, num_classes, title, class_names)
