"""`segdino test`: score a trained model on a dataset split (`segdino.evaluation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import segdino.metrics as metrics
from segdino.argtypes import int_at_least
from segdino.atomic import check_writable_folder
from segdino.backbone.factory import check_arch
from segdino.commands.flags import (
    add_allow_other_backbone,
    add_backbone,
    add_bootstrap,
    add_engine_flags,
    add_progress,
    add_threshold,
    add_tta,
    add_workers,
    default_workers,
    progress_bars,
)
from segdino.data.dataset import find_pairs
from segdino.errors import UserError
from segdino.evaluation import EVAL_SIZES, evaluate, report_folder, truth_format
from segdino.inference.predictor import Predictor
from segdino.report import format_summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a trained model: ours (.safetensors) "
                        "or the reference's .pth")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    add_backbone(parser, "backbone weights, when not found by the checkpoint itself; checked "
                 "against its recorded SHA-256 (a reference .pth uses its own backbone.* "
                 "weights, as the reference's test does)")
    add_allow_other_backbone(parser)
    parser.add_argument("--dino-size", help="s, s+, b, l, l+, h+ or 7b: checked against "
                        "the checkpoint")
    parser.add_argument("--repo-dir", help="accepted for the reference's commands; not needed")
    parser.add_argument("--input-h", type=int, help="default: the checkpoint's training size")
    parser.add_argument("--input-w", type=int, help="default: the checkpoint's training size")
    parser.add_argument("--img-dir-name", default="image")
    parser.add_argument("--label-dir-name", default="mask")
    parser.add_argument("--img-ext")
    parser.add_argument("--mask-ext")
    parser.add_argument("--num-classes", type=int, help="checked against the checkpoint's")
    parser.add_argument("--class-map", metavar="VALUE:CLASS,...", help="mask pixel values to "
                        "classes (default: the checkpoint's; see segdino train --class-map)")
    parser.add_argument("--ignore-index", type=int, metavar="N",
                        help="a mask value that is no class (default: the checkpoint's)")
    add_threshold(parser, "threshold", "foreground where the probability is above T "
                  "(default: the checkpoint's, 0.5); one-class models only")
    parser.add_argument("--save-root", default="runs")
    parser.add_argument("--name", help="report folder under --save-root, new or empty "
                        "(default: test_DATASET_SPLIT, or the first free test_DATASET_SPLIT-N)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8)
    add_workers(parser, default=default_workers())
    parser.add_argument("--eval-size", choices=EVAL_SIZES, default="native",
                        help="score at each image's own size (default) or at the input size "
                        "(the reference's protocol)")
    parser.add_argument("--hd95", choices=list(metrics.HD95_VARIANTS), default="standard",
                        help="standard: MONAI's (default); medpy: medpy's, both directions "
                        "pooled; v2, reference: SegDINO v2's and v1's test scripts (pixels)")
    parser.add_argument("--spacing", type=float, nargs=2, metavar=("ROW", "COL"),
                        default=(1.0, 1.0), help="pixel size, for HD95 in millimetres")
    parser.add_argument("--worst", type=int_at_least(0), default=8,
                        help="overlays of the N worst images, in REPORT/worst/ as JPEG")
    add_bootstrap(parser)
    add_tta(parser)
    parser.add_argument("--device")
    # float32: the same checkpoint gives the same scores on every CPU
    add_engine_flags(parser, precision="fp32")
    add_progress(parser)
    # The reference's test script shares its training flags; accepted, meaningless here.
    for flag, kind in (("--epochs", int), ("--lr", float), ("--weight-decay", float)):
        parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.repo_dir:
        print("note: --repo-dir is not needed: segdino has its own DINOv3 implementation")
    out_dir = report_folder(Path(args.save_root), args.name,
                            f"test_{args.dataset}_{args.split}")
    check_writable_folder(out_dir, "--save-root")
    predictor = Predictor.from_checkpoint(args.ckpt, backbone=args.dino_ckpt,
                                          device=args.device, batch_size=args.batch_size,
                                          precision=args.precision, engine=args.engine,
                                          tta=args.tta,
                                          allow_other_backbone=args.allow_other_backbone)
    model = predictor.model
    if args.dino_size:
        check_arch(model.backbone.config, args.dino_size, f"--dino-size: {args.ckpt}")
    h, w = model.preprocessing.input_size
    model.preprocessing.input_size = (args.input_h or h, args.input_w or w)
    if args.threshold is not None:
        model.preprocessing.threshold = args.threshold
    if args.num_classes is not None and args.num_classes != model.num_classes:
        raise UserError(f"--num-classes {args.num_classes}: {args.ckpt} has "
                        f"{model.num_classes} class(es)")
    if args.class_map is not None:
        model.preprocessing.class_map = args.class_map
    if args.ignore_index is not None:
        model.preprocessing.ignore_index = args.ignore_index
    mask_format = truth_format(model)
    split_dir = Path(args.data_dir) / args.dataset / args.split
    pairs = find_pairs(split_dir, args.img_dir_name, args.label_dir_name, args.img_ext,
                       args.mask_ext, mask_format)
    out_dir.mkdir(parents=True, exist_ok=True)  # claimed now: a later test picks the next name
    print(f"scoring in {predictor.precision} on {predictor.device}")
    summary = evaluate(predictor, pairs, out_dir, args.eval_size, args.hd95,
                       tuple(args.spacing), args.worst, args.num_workers,
                       progress=progress_bars(args), resamples=args.bootstrap, seed=args.seed)
    print(format_summary(summary))
    print(f"report: {out_dir / 'metrics.csv'}, {out_dir / 'summary.json'}, "
          f"worst cases in {out_dir / 'worst'}")
    return 0
