"""`segdino predict`: segment image files with a trained model (`segdino.inference`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segdino.argtypes import int_at_least
from segdino.atomic import check_writable_folder
from segdino.checkpoints.format import read_metadata
from segdino.commands.flags import (
    add_allow_other_backbone,
    add_backbone,
    add_engine_flags,
    add_progress,
    add_threshold,
    add_tta,
    add_workers,
    default_workers,
    progress_bars,
)
from segdino.data.files import raise_problems
from segdino.errors import UserError
from segdino.inference.predict_files import (
    find_inputs,
    output_problems,
    output_stems,
    predict_files,
    uncertainty_maps,
    unreadable_images,
)
from segdino.inference.predictor import Predictor
from segdino.models.decoders import ENSEMBLE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a trained model: .safetensors (ours) or .pth (reference layout)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image files, folders of images, or glob patterns such as 'x/*.jpg'")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: DIR/<stem>.png, a 0/255 mask at the image's size "
                        "(for a K-class model, class indices 0..K-1); files there that predict "
                        "did not write are never replaced without --overwrite")
    add_backbone(parser, "the backbone weights, if not found beside the checkpoint")
    add_allow_other_backbone(parser)
    add_threshold(parser, "threshold", "foreground where the probability is above T "
                  "(default: the checkpoint's, 0.5); one-class models only")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write DIR/<stem>_prob.png, probabilities scaled to 0-255 "
                        "(for K classes, the chosen class's)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write DIR/<stem>_overlay.jpg, the mask drawn on the image")
    parser.add_argument("--color", action="store_true",
                        help="also write DIR/<stem>_color.png, the mask in a colour per class")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write DIR/<stem>_uncertainty.png (the entropy of the "
                        "probability, 0-255 for 0-1), for an ensemble DIR/<stem>_disagreement"
                        ".png (its members' mutual information), and DIR/review.csv: the "
                        "images' mean scores, most uncertain first")
    parser.add_argument("--recursive", action="store_true",
                        help="also take the images in INPUT folders' sub-folders, their outputs "
                        "in the same sub-folders of DIR")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images, with a warning each, instead of stopping")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in DIR that predict did not write (never "
                        "an input image)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, metavar="N",
                        help="images per forward pass (default 8)")
    parser.add_argument("--device", metavar="D",
                        help="cpu, cuda, cuda:N or mps (default: the best available)")
    add_workers(parser, default=default_workers(), help_text="threads that decode images, "
                "and threads that write outputs, beside the model (default: the CPUs available)")
    add_engine_flags(parser)
    add_tta(parser)
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable_folder(out, "--out")
    found, problems = find_inputs(args.inputs, args.recursive, out)
    unreadable = unreadable_images(list(found))
    if not args.skip_bad:
        problems += unreadable.values()
    elif unreadable:
        found = {p: sub for p, sub in found.items() if p not in unreadable}
        if not found:  # nothing left to skip to
            problems += unreadable.values()
    paths = list(found)
    ckpt = Path(args.checkpoint)
    ensemble = ckpt.is_file() and (read_metadata(ckpt) or {}).get("decoder") == ENSEMBLE
    problems += output_problems(paths, output_stems(paths, list(found.values())), out,
                                 args.probabilities, args.overlay, args.color, args.overwrite,
                                 uncertainty_maps(ensemble) if args.uncertainty else ())
    raise_problems("INPUT", problems)

    predictor = Predictor.from_checkpoint(
        args.checkpoint, args.dino_ckpt, args.device, args.batch_size, args.precision,
        args.engine, args.tta, allow_other_backbone=args.allow_other_backbone)
    if args.threshold is not None:
        if predictor.model.num_classes > 1:
            raise UserError(f"--threshold: {args.checkpoint} has {predictor.model.num_classes} "
                            "classes, and a pixel takes the most probable one (a threshold is "
                            "for one-class models)")
        predictor.model.preprocessing.threshold = args.threshold
    if args.skip_bad:  # said once the run is certain to go ahead
        for why in unreadable.values():
            print(f"segdino predict: warning: {why} (skipped)", file=sys.stderr)
    predict_files(predictor, paths, out, args.probabilities, args.overlay, color=args.color,
                  progress=progress_bars(args), overwrite=args.overwrite,
                  subfolders=list(found.values()), uncertainty=args.uncertainty,
                  workers=args.num_workers)
    print(f"{len(paths)} mask(s) written to {out}")
    return 0
