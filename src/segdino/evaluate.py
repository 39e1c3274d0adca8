"""`segdino test`: score a trained model on a dataset split, image by image.

By default each prediction is brought back to its image's own size and scored there
(`--eval-size native`); `--eval-size input` scores at the network's input size, as the
reference does. HD95 is the standard one unless `--hd95 reference`. Writes `metrics.csv`
(a row per image and a MEAN row), `summary.json` and overlays of the worst images.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from segdino import metrics
from segdino.atomic import write_text
from segdino.backbone.factory import check_arch
from segdino.data.dataset import Pair, find_pairs
from segdino.data.files import read_mask
from segdino.data.transforms import image_to_tensor, load_rgb, mask_to_tensor
from segdino.errors import UserError
from segdino.predict import Predictor, to_size
from segdino.runtime import PRECISIONS
from segdino.visualize import overlay, save_png

EVAL_SIZES = ("native", "input")


class EvalImages(Dataset):
    """(image at the input size, truth mask at the scoring size, index), decoded in workers."""

    def __init__(self, pairs: list[Pair], size: tuple[int, int], eval_size: str) -> None:
        self.pairs, self.size, self.eval_size = pairs, size, eval_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.ndarray, int]:
        image_path, mask_path = self.pairs[i]
        truth = read_mask(mask_path)
        if self.eval_size == "input":
            truth = mask_to_tensor(truth, self.size)[0].numpy() > 0.5
        return image_to_tensor(load_rgb(image_path), self.size), truth, i


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
    size = model.preprocessing.input_size
    loader = DataLoader(EvalImages(pairs, size, eval_size), batch_size=predictor.batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    rows: list[tuple[str, metrics.ImageScores]] = []
    started = time.time()
    for images, truths, indices in tqdm(loader, desc="testing", disable=not progress):
        probs = predictor.probabilities(images)
        for prob, truth, i in zip(probs, truths, indices, strict=True):
            if eval_size == "native":
                prob = to_size(prob, truth.shape)
            else:
                prob = prob[0].numpy()
            pred = prob > model.preprocessing.threshold
            rows.append((pairs[i][0].name, metrics.score(pred, truth, hd95, spacing)))
    seconds = time.time() - started
    summary = {
        **metrics.summarise([s for _, s in rows]),
        "images_per_second": round(len(rows) / seconds, 2),
        "eval_size": eval_size, "hd95_variant": hd95, "spacing": list(spacing),
        "input_size": list(size), "threshold": model.preprocessing.threshold,
    }
    write_report(rows, summary, out_dir)
    draw_worst(predictor, pairs, rows, out_dir / "worst", worst)
    return summary


def write_report(rows: list[tuple[str, metrics.ImageScores]], summary: dict, out_dir: Path
                 ) -> None:
    names = list(asdict(rows[0][1]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *names])
    for image, scores in rows:
        writer.writerow([image, *(f"{v:.6f}" for v in asdict(scores).values())])
    writer.writerow(["MEAN", *(f"{summary[n]:.6f}" for n in names)])
    write_text(out_dir / "metrics.csv", buffer.getvalue())
    # JSON has no nan/inf: an undefined mean is written as null
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in summary.items()}
    write_text(out_dir / "summary.json", json.dumps(clean, indent=2) + "\n")


def draw_worst(predictor: Predictor, pairs: list[Pair], rows: list, folder: Path, n: int
               ) -> None:
    """Overlays (truth and prediction outlined) of the `n` images with the lowest Dice."""
    by_name = {image.name: (image, mask) for image, mask in pairs}
    for rank, (name, scores) in enumerate(sorted(rows, key=lambda r: r[1].dice)[:n], start=1):
        image_path, mask_path = by_name[name]
        image = load_rgb(image_path)
        pred = predictor(image)
        save_png(overlay(np.asarray(image), pred, read_mask(mask_path)),
                 folder / f"{rank:02d}_dice{scores.dice:.3f}_{Path(name).stem}.png")


def format_summary(summary: dict) -> str:
    line = "  ".join(f"{k} {summary[k]:.4f}" for k in ("dice", "iou", "precision", "recall"))
    hd = f"HD95 {summary['hd95']:.2f} px" if math.isfinite(summary["hd95"]) else "HD95 n/a"
    left_out = summary["hd95_undefined"] + summary["hd95_infinite"]
    note = (f" (over {summary['images'] - left_out} images; {summary['hd95_infinite']} with "
            f"one empty mask, {summary['hd95_undefined']} with both empty)" if left_out else "")
    return f"{summary['images']} images: {line}  {hd}{note}"


# ---- command line -------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a trained model: ours (.safetensors) "
                        "or the reference's .pth")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dino-ckpt", help="backbone weights, when not found by the "
                        "checkpoint itself")
    parser.add_argument("--dino-size", help="s, s+, b, l, l+, h+ or 7b: checked against "
                        "the checkpoint")
    parser.add_argument("--repo-dir", help="accepted for the reference's commands; not needed")
    parser.add_argument("--input-h", type=int, help="default: the checkpoint's training size")
    parser.add_argument("--input-w", type=int, help="default: the checkpoint's training size")
    parser.add_argument("--img-dir-name", default="image")
    parser.add_argument("--label-dir-name", default="mask")
    parser.add_argument("--img-ext")
    parser.add_argument("--mask-ext")
    parser.add_argument("--num-classes", type=int, default=1)
    parser.add_argument("--dice-thr", type=float, help="default: the checkpoint's (0.5)")
    parser.add_argument("--save-root", default="runs")
    parser.add_argument("--name", help="report folder under --save-root")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--eval-size", choices=EVAL_SIZES, default="native",
                        help="score at each image's own size (default) or at the input size "
                        "(the reference's protocol)")
    parser.add_argument("--hd95", choices=list(metrics.HD95_VARIANTS), default="standard")
    parser.add_argument("--spacing", type=float, nargs=2, metavar=("ROW", "COL"),
                        default=(1.0, 1.0), help="pixel size, for HD95 in millimetres")
    parser.add_argument("--worst", type=int, default=8, help="overlays of the N worst images")
    parser.add_argument("--device")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--no-progress", action="store_true")
    # The reference's test script shares its training flags; accepted, meaningless here.
    for flag, kind in (("--epochs", int), ("--lr", float), ("--weight-decay", float),
                       ("--seed", int)):
        parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.repo_dir:
        print("note: --repo-dir is not needed: segdino has its own DINOv3 implementation")
    if args.num_classes != 1:
        raise UserError(f"--num-classes {args.num_classes}: only binary segmentation (1) "
                        "is supported so far")
    predictor = Predictor.from_checkpoint(args.ckpt, backbone=args.dino_ckpt,
                                          device=args.device, batch_size=args.batch_size,
                                          precision=args.precision)
    model = predictor.model
    if args.dino_size:
        check_arch(model.backbone.config, args.dino_size, f"--dino-size: {args.ckpt}")
    h, w = model.preprocessing.input_size
    model.preprocessing.input_size = (args.input_h or h, args.input_w or w)
    if args.dice_thr is not None:
        model.preprocessing.threshold = args.dice_thr
    split_dir = Path(args.data_dir) / args.dataset / args.split
    pairs = find_pairs(split_dir, args.img_dir_name, args.label_dir_name, args.img_ext,
                       args.mask_ext)
    out_dir = Path(args.save_root) / (args.name or f"test_{args.dataset}_{args.split}")
    summary = evaluate(predictor, pairs, out_dir, args.eval_size, args.hd95,
                       tuple(args.spacing), args.worst, args.num_workers,
                       progress=not args.no_progress)
    print(format_summary(summary))
    print(f"report: {out_dir / 'metrics.csv'}, {out_dir / 'summary.json'}, "
          f"worst cases in {out_dir / 'worst'}")
    return 0
