"""The Review tab: a `segdino test` report folder paged through worst first (lowest Dice;
for K classes, the lowest mean over the classes), each image drawn as the report's `worst/`
overlays are: truth and prediction outlined, its name, Dice, IoU and HD95, and a legend.

The report lists images by name (`metrics.csv`) and says where they are (`summary.json`'s
`image_dir` and `mask_dir`; for a report older than those, the app's --data-dir/--dataset
test split). The prediction is the app's model's, at the report's threshold.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from segdino.data.files import list_images
from segdino.data.masks import MaskFormat
from segdino.data.transforms import load_rgb
from segdino.errors import UserError
from segdino.evaluation import scored_figure
from segdino.inference.predictor import Predictor
from segdino.metrics import METRICS, ImageScores
from segdino.report import SUMMARY_ROWS


@dataclass
class Report:
    """A test report: its images' scores worst first, where they are, how masks are read."""

    folder: Path
    rows: list[tuple[str, ImageScores]]
    image_dir: Path
    mask_dir: Path
    mask_format: MaskFormat
    threshold: float
    class_names: list[str] | None


def _worst_first(row: tuple[str, ImageScores]) -> float:
    dice = row[1].dice
    return math.inf if math.isnan(dice) else dice


def open_report(folder: Path, dataset: Path | None = None) -> Report:
    """The report in `folder` (metrics.csv and summary.json); a UserError naming the file
    that is missing or unreadable."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        with open(folder / "metrics.csv", newline="") as f:
            table = list(csv.DictReader(f))
    except (OSError, ValueError) as exc:
        name = getattr(exc, "filename", None) or folder / "summary.json"
        raise UserError(f"{name}: not a segdino test report "
                        f"({getattr(exc, 'strerror', None) or exc})") from None
    suffix = "_mean" if "num_classes" in summary else ""  # K classes: the means over them
    try:
        rows = [(row["image"], ImageScores(*(float(row[m + suffix]) for m in METRICS)))
                for row in table if row["image"] not in SUMMARY_ROWS]
    except (KeyError, ValueError):
        raise UserError(f"{folder / 'metrics.csv'}: not segdino test's columns") from None
    if "image_dir" in summary:
        image_dir, mask_dir = Path(summary["image_dir"]), Path(summary["mask_dir"])
    elif dataset is not None:
        image_dir, mask_dir = dataset / "test" / "image", dataset / "test" / "mask"
    else:
        raise UserError(f"{folder / 'summary.json'}: does not say where its images are (an "
                        "older report): start segdino app with --data-dir and --dataset")
    return Report(folder, sorted(rows, key=_worst_first), image_dir, mask_dir,
                  MaskFormat(summary.get("num_classes", 1), summary.get("class_map"),
                             summary.get("ignore_index")),
                  summary.get("threshold", 0.5), summary.get("class_names"))


def _by_stem(folder: Path, stem: str) -> Path:
    found = [p for p in list_images(folder) if p.stem == stem]
    if not found:
        raise UserError(f"{folder}: no image named {stem}.* (the report's images have moved?)")
    return found[0]


def draw(report: Report, rank: int, predictor: Predictor | None) -> np.ndarray:
    """Image number `rank` (from 1, the worst) of the report, drawn as `worst/` draws it."""
    name, scores = report.rows[rank - 1]
    image = np.asarray(load_rgb(report.image_dir / name))
    truth = report.mask_format.read(_by_stem(report.mask_dir, Path(name).stem))
    pred = None
    if predictor is not None:
        _, prob = predictor(image, return_probabilities=True)
        pred = prob > report.threshold if prob.ndim == 2 else prob.argmax(0).astype(np.uint8)
    return scored_figure(image, pred, truth, name, scores, report.mask_format.num_classes,
                         report.class_names)


def review_tab(predictor: Predictor | None, dataset: Path | None) -> None:
    """The tab's widgets and what they do, inside the page's `gr.Blocks`."""
    gr.Markdown("A `segdino test` report folder (it holds `metrics.csv` and `summary.json`), "
                "worst Dice first. Yellow: the prediction (this app's model); blue: the "
                "truth; white: where their outlines coincide."
                + ("" if predictor else " No model loaded: the truth only."))
    with gr.Row():
        folder = gr.Textbox(label="Report folder", scale=4)
        load = gr.Button("Open", variant="primary", scale=1)
    status = gr.Markdown()  # where it is in the report, or what went wrong
    with gr.Row():
        previous = gr.Button("< worse")
        rank = gr.Number(1, precision=0, minimum=1, label="Rank (1 = lowest Dice)")
        following = gr.Button("better >")
    picture = gr.Image(label="Truth and prediction", format="png", interactive=False)
    state = gr.State(None)

    def on_open(typed):
        try:
            report = open_report(Path(typed.strip()), dataset)
        except UserError as exc:
            return None, gr.update(), None, f"**error:** {exc}"
        if not report.rows:
            return None, gr.update(), None, f"**error:** {report.folder}: no images scored"
        return report, gr.update(maximum=len(report.rows), value=1), *on_show(report, 1)

    def on_show(report, position):
        if report is None:
            return None, ""
        position = min(max(1, int(position or 1)), len(report.rows))
        try:
            return draw(report, position, predictor), f"{position} of {len(report.rows)}"
        except UserError as exc:
            return None, f"**error:** {exc}"

    load.click(on_open, folder, [state, rank, picture, status], api_name="open_report")
    rank.change(on_show, [state, rank], [picture, status], api_name="review")
    previous.click(lambda r: max(1, r - 1), rank, rank, api_name=False)
    following.click(lambda report, r: min(len(report.rows) if report else 1, r + 1),
                    [state, rank], rank, api_name=False)
