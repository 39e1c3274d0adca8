"""A `segdino test` report: the statistics of each metric over the images, `metrics.csv` and
`summary.json` written (and `metrics.csv` read back, for `segdino compare`), the summary in
words.

Each metric is summarised by its mean, its sample standard deviation (ddof=1: the images are
a sample of the images the model will meet), its median and a percentile-bootstrap 95%
confidence interval of its mean (`segdino.statistics`: `resamples` resamples of the images,
seeded, so a report is reproduced exactly), HD95 over its finite values only. One image has
no SD and no interval (nan in the CSV, null in the JSON). For K classes they are over the
images' means over the classes, and per class in `per_class`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

import segdino.metrics as metrics
from segdino.atomic import write_text
from segdino.errors import UserError, first_line
from segdino.metrics import Scores
from segdino.statistics import CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_ci


def summarise_rows(scores: list[Scores], classes: int, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> dict:
    """Mean, `sd`, `median` and `ci95` of each metric over the images; for K classes, of
    their means over the classes, and each class's in `per_class`; `bootstrap` says how the
    intervals were drawn."""
    def spread_of(per_image: list[metrics.ImageScores]) -> dict:
        return spread(per_image, resamples, seed)
    drawn = {"bootstrap": {"method": "percentile", "confidence": CONFIDENCE,
                           "resamples": resamples, "seed": seed}}
    if classes == 1:
        return {**metrics.summarise(scores), **spread_of(scores), **drawn}
    summary = {**metrics.summarise_classes(scores, classes),
               **spread_of([metrics.mean_scores(s) for s in scores]), **drawn}
    for c, class_summary in summary["per_class"].items():
        class_summary.update(spread_of([s[int(c) - 1] for s in scores]))
    return summary


def spread(scores: list[metrics.ImageScores], resamples: int, seed: int) -> dict[str, dict]:
    """`sd` (sample, ddof=1), `median` and `ci95` (bootstrap [low, high] of the mean) of each
    metric over the images; HD95's over its finite values, as its mean is; nan where there
    are too few values. Every metric's interval is drawn from `seed` afresh."""
    def stats(name: str) -> tuple[float, float, list[float]]:
        values = [getattr(s, name) for s in scores]
        if name == "hd95":
            values = [v for v in values if math.isfinite(v)]
        return (float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                float(np.median(values)) if values else math.nan,
                list(bootstrap_ci(values, resamples, seed)))
    per_metric = {name: stats(name) for name in metrics.METRICS}
    return {key: {name: values[i] for name, values in per_metric.items()}
            for i, key in enumerate(("sd", "median", "ci95"))}


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
# metrics.csv's per-image uncertainty column (segdino test): no metric, so compare skips it
UNCERTAINTY = "uncertainty"


def _summary_columns(summary: dict, statistic: str) -> dict[str, float]:
    """One statistic ("mean", "sd" or "median") of each metric.csv column from the summary."""
    def pick(part: dict) -> dict[str, float]:
        values = part if statistic == "mean" else part[statistic]
        return {name: values[name] for name in metrics.METRICS}
    if "per_class" in summary:
        return _labelled([*((c, pick(s)) for c, s in summary["per_class"].items()),
                          ("mean", pick(summary))])
    return pick(summary)


def json_safe(value):
    """`value` with every nan or inf float, however nested, as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(rows: list[tuple[str, Scores]], summary: dict, out_dir: Path,
                 uncertainty: list[float] | None = None) -> None:
    """`metrics.csv` and `summary.json`; `uncertainty` (a score per image, in the rows'
    order) adds metrics.csv's last column, its MEAN, SD and MEDIAN from
    `summary["uncertainty"]`."""
    table = [(image, _columns(scores)) for image, scores in rows]
    table += [(row, _summary_columns(summary, stat)) for row, stat in SUMMARY_ROWS.items()]
    if uncertainty is not None:
        column = [*uncertainty, *(summary[UNCERTAINTY][stat] for stat in SUMMARY_ROWS.values())]
        table = [(name, {**columns, UNCERTAINTY: u})
                 for (name, columns), u in zip(table, column, strict=True)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *table[0][1]])
    for image, columns in table:
        writer.writerow([image, *(f"{v:.6f}" for v in columns.values())])
    write_text(out_dir / "metrics.csv", buffer.getvalue())
    # JSON has no nan/inf: an undefined mean is written as null
    write_text(out_dir / "summary.json", json.dumps(json_safe(summary), indent=2) + "\n")


def read_images(folder: Path) -> tuple[list[str], dict[str, list[float]]]:
    """A report folder's metrics.csv read back: its metric columns, and each image's values
    by the image's name (the summary rows at its end, and the uncertainty column, left
    out)."""
    path = Path(folder) / "metrics.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        why = getattr(exc, "strerror", None) or first_line(exc)
        raise UserError(f"{folder}: cannot read metrics.csv ({why}); expected a segdino test "
                        "report folder") from None
    if not rows or rows[0][:1] != ["image"] or len(rows[0]) < 2:
        raise UserError(f"{path}: expected a segdino test metrics.csv (a header 'image,dice,...')")
    header, body = rows[0], rows[1:]
    while body and body[-1][:1] and body[-1][0] in SUMMARY_ROWS:
        body.pop()
    if header[-1] == UNCERTAINTY:  # what the model thinks of itself: not compared
        header, body = header[:-1], [row[:-1] for row in body]
    images: dict[str, list[float]] = {}
    for number, row in enumerate(body, start=2):
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            values = []
        if len(row) != len(header) or len(values) != len(header) - 1 or row[0] in images:
            raise UserError(f"{path}: line {number}: expected an image not listed before and "
                            f"{len(header) - 1} numbers")
        images[row[0]] = values
    return header[1:], images


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
        low, high = summary["ci95"][name]
        ci = (f"{low:.{digits}f}-{high:.{digits}f}" if math.isfinite(low) else "n/a")
        sd_text = f"{sd:.{digits}f}" if math.isfinite(sd) else "n/a"
        return (f"{label} {mean:.{digits}f}{unit} (95% CI {ci}, sd {sd_text}, "
                f"median {median:.{digits}f})")
    line = "  ".join([*(scores(k, k, 4) for k in ("dice", "iou", "precision", "recall")),
                      scores("hd95", "HD95", 2, " px")])
    left_out = summary["hd95_undefined"] + summary["hd95_infinite"] if notes else 0
    note = (f" (over {summary['images'] - left_out} images; {summary['hd95_infinite']} with "
            f"one empty mask, {summary['hd95_undefined']} with both empty)" if left_out else "")
    return f"{summary['images']} images: {line}{note}"
