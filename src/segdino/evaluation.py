"""Scoring a trained model on a dataset split, image by image (`segdino test`).

By default each prediction is brought back to its image's own size and scored there
(`--eval-size native`); `--eval-size input` scores at the network's input size, as the
reference does. HD95 is the standard one unless `--hd95 reference`. Writes `metrics.csv`
(a row per image, then MEAN, SD and MEDIAN rows), `summary.json` and overlays of the worst
images. Each metric is summarised by its mean, its sample standard deviation (ddof=1: the
images are a sample of the images the model will meet) and its median, HD95 over its finite
values only; one image has no SD (nan in the CSV, null in the JSON).

A model of K >= 2 classes is scored per foreground class (`metrics.class_scores`): the CSV
has a column per metric and class (`dice_1`, ..., `hd95_2`) and their mean over the classes
(`dice_mean`, ...), and `summary.json` the means over classes with each class's summary in
`per_class`. Their SD and median are over the images' means over the classes (a spread over
classes would say nothing of how the images vary).

Every report goes to a folder of its own (a second test of the same split gets `NAME-2`, and
so on) and its `summary.json` records what produced it (`provenance`: the checkpoint's and
the backbone's paths and SHA-256, precision, device, versions, command line, date). Scoring
is float32 unless `--precision` says otherwise, so that one checkpoint gives the same numbers
on every CPU (bf16 autocast moves per-image Dice by up to about 2e-4).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import segdino.metrics as metrics
from segdino.atomic import write_text
from segdino.checkpoints.load import describe_sources
from segdino.data.dataset import Pair
from segdino.data.masks import MaskFormat
from segdino.data.transforms import image_to_tensor, load_rgb
from segdino.errors import UserError
from segdino.inference.predictor import Predictor, to_size
from segdino.models.preprocessing import Preprocessing
from segdino.models.segdino import SegDINO
from segdino.provenance import environment
from segdino.visualize import caption, figure, save_png

EVAL_SIZES = ("native", "input")
Scores = metrics.ImageScores | list[metrics.ImageScores]  # one image's: binary, or per class


class EvalImages(Dataset):
    """(image at the input size, truth mask at the scoring size, index), decoded in workers."""

    def __init__(self, pairs: list[Pair], pre: Preprocessing, eval_size: str,
                 mask_format: MaskFormat) -> None:
        self.pairs, self.pre, self.eval_size = pairs, pre, eval_size
        self.mask_format = mask_format

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.ndarray, int]:
        image_path, mask_path = self.pairs[i]
        truth = self.mask_format.read(mask_path)
        pre = self.pre
        if self.eval_size == "input":
            truth = self.mask_format.resize(truth, pre.input_size)
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
) -> dict:
    """Score `predictor` on `pairs`; write the report into `out_dir`; return the summary."""
    model = predictor.model
    pre, classes = model.preprocessing, model.num_classes
    mask_format = truth_format(model)
    loader = DataLoader(EvalImages(pairs, pre, eval_size, mask_format),
                        batch_size=predictor.batch_size, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=predictor.device.type == "cuda")
    rows: list[tuple[str, Scores]] = []
    started = time.time()
    for images, truths, indices in tqdm(loader, desc="testing", disable=not progress):
        probs = predictor.probabilities(images)
        for prob, truth, i in zip(probs, truths, indices, strict=True):
            if eval_size == "native":
                prob = to_size(prob, truth.shape)
            else:
                prob = prob.squeeze(0).numpy()
            pred = predictor.decide(prob)
            rows.append((pairs[i][0].name,
                         metrics.score(pred, truth, hd95, spacing) if classes == 1 else
                         metrics.class_scores(pred, truth, classes, hd95, spacing)))
    seconds = time.time() - started
    summary = {
        **summarise_rows([s for _, s in rows], classes),
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
    summary["provenance"] = provenance(predictor)
    write_report(rows, summary, out_dir)
    draw_worst(predictor, pairs, rows, out_dir / "worst", worst, mask_format)
    return summary


def provenance(predictor: Predictor) -> dict:
    """What produced a report: the model's files (path and SHA-256), the engine, and how and
    where it ran (`segdino.provenance`)."""
    return {**describe_sources(predictor.model),
            **environment(predictor.device, predictor.precision),
            "engine": type(predictor.engine).__name__}


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


def summarise_rows(scores: list[Scores], classes: int) -> dict:
    """Mean, `sd` and `median` of each metric over the images; for K classes, of their
    means over the classes, and each class's in `per_class`."""
    if classes == 1:
        return {**metrics.summarise(scores), **spread(scores)}
    summary = {**metrics.summarise_classes(scores, classes),
               **spread([metrics.mean_scores(s) for s in scores])}
    for c, class_summary in summary["per_class"].items():
        class_summary.update(spread([s[int(c) - 1] for s in scores]))
    return summary


def spread(scores: list[metrics.ImageScores]) -> dict[str, dict[str, float]]:
    """`sd` (sample, ddof=1) and `median` of each metric over the images; HD95's over its
    finite values, as its mean is; nan where there are too few values."""
    def stats(name: str) -> tuple[float, float]:
        values = [getattr(s, name) for s in scores]
        if name == "hd95":
            values = [v for v in values if math.isfinite(v)]
        return (float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                float(np.median(values)) if values else math.nan)
    per_metric = {name: stats(name) for name in metrics.METRICS}
    return {"sd": {name: sd for name, (sd, _) in per_metric.items()},
            "median": {name: median for name, (_, median) in per_metric.items()}}


def _columns(scores: Scores) -> dict[str, float]:
    """One image's metrics.csv columns: the metrics (binary), or each metric per foreground
    class (`dice_1`, ...) and then averaged over the classes (`dice_mean`, ...)."""
    if isinstance(scores, metrics.ImageScores):
        return asdict(scores)
    named = [*((str(c), s) for c, s in enumerate(scores, start=1)),
             ("mean", metrics.mean_scores(scores))]
    return _labelled([(label, asdict(s)) for label, s in named])


def _labelled(named: list[tuple[str, dict[str, float]]]) -> dict[str, float]:
    """Each class's metrics as columns `dice_1`, ..., `dice_mean`, ... in metrics.csv."""
    return {f"{metric}_{label}": v for label, values in named for metric, v in values.items()}


SUMMARY_ROWS = {"MEAN": "mean", "SD": "sd", "MEDIAN": "median"}  # metrics.csv's last rows


def _summary_columns(summary: dict, statistic: str) -> dict[str, float]:
    """One statistic ("mean", "sd" or "median") of each metric.csv column from the summary."""
    def pick(part: dict) -> dict[str, float]:
        values = part if statistic == "mean" else part[statistic]
        return {name: values[name] for name in metrics.METRICS}
    if "per_class" in summary:
        return _labelled([*((c, pick(s)) for c, s in summary["per_class"].items()),
                          ("mean", pick(summary))])
    return pick(summary)


def _json_safe(value):
    """`value` with every nan or inf float, however nested, as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(rows: list[tuple[str, Scores]], summary: dict, out_dir: Path) -> None:
    table = [(image, _columns(scores)) for image, scores in rows]
    table += [(row, _summary_columns(summary, stat)) for row, stat in SUMMARY_ROWS.items()]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *table[0][1]])
    for image, columns in table:
        writer.writerow([image, *(f"{v:.6f}" for v in columns.values())])
    write_text(out_dir / "metrics.csv", buffer.getvalue())
    # JSON has no nan/inf: an undefined mean is written as null
    write_text(out_dir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")


def draw_worst(predictor: Predictor, pairs: list[Pair], rows: list, folder: Path, n: int,
               mask_format: MaskFormat) -> None:
    """Figures (truth and prediction outlined, the image's name, scores and a legend) of the
    `n` images with the lowest Dice (for K classes, the lowest mean over the classes)."""
    by_name = {image.name: (image, mask) for image, mask in pairs}
    ranked = sorted(rows, key=lambda row: _mean_scores(row[1]).dice)
    for rank, (name, scores) in enumerate(ranked[:n], start=1):
        mean = _mean_scores(scores)
        image_path, mask_path = by_name[name]
        image = np.asarray(load_rgb(image_path))
        save_png(scored_figure(image, predictor(image), mask_format.read(mask_path), name,
                               mean, mask_format.num_classes,
                               predictor.model.preprocessing.class_names),
                 folder / f"{rank:02d}_dice{mean.dice:.3f}_{Path(name).stem}.png")


def scored_figure(image: np.ndarray, pred: np.ndarray | None, truth: np.ndarray, name: str,
                  scores: metrics.ImageScores, num_classes: int = 1,
                  class_names: list[str] | None = None) -> np.ndarray:
    """How a report shows one image: truth and prediction outlined, under its name, its Dice,
    IoU and HD95 (for K classes, their means over the classes) and a legend."""
    title = caption(name, {"Dice": scores.dice, "IoU": scores.iou, "HD95": scores.hd95})
    return figure(image, pred, truth, num_classes, title, class_names)


def format_summary(summary: dict) -> str:
    """The summary in words: one line, or for K classes a line for their mean and one per
    foreground class."""
    if "per_class" not in summary:
        return _format_scores(summary)
    names = summary.get("class_names")
    lines = [f"mean of {len(summary['per_class'])} foreground classes: "
             + _format_scores(summary, notes=False)]
    lines += [f"  class {c}{f' ({names[int(c)]})' if names else ''}: {_format_scores(s)}"
              for c, s in summary["per_class"].items()]
    return "\n".join(lines)


def _format_scores(summary: dict, notes: bool = True) -> str:
    def scores(name: str, label: str, digits: int, unit: str = "") -> str:
        mean, sd, median = summary[name], summary["sd"][name], summary["median"][name]
        if not math.isfinite(mean):
            return f"{label} n/a"
        sd_text = f"{sd:.{digits}f}" if math.isfinite(sd) else "n/a"
        return f"{label} {mean:.{digits}f}{unit} (sd {sd_text}, median {median:.{digits}f})"
    line = "  ".join([*(scores(k, k, 4) for k in ("dice", "iou", "precision", "recall")),
                      scores("hd95", "HD95", 2, " px")])
    left_out = summary["hd95_undefined"] + summary["hd95_infinite"] if notes else 0
    note = (f" (over {summary['images'] - left_out} images; {summary['hd95_infinite']} with "
            f"one empty mask, {summary['hd95_undefined']} with both empty)" if left_out else "")
    return f"{summary['images']} images: {line}{note}"
