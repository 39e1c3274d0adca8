"""`segdino demo`: the whole workflow on a fresh machine, with no weights and no data.

It generates a small synthetic dataset, saves a randomly initialised DINOv3 ViT-S/16 in
Meta's checkpoint format, trains the decoder on it (from cached backbone features), tests,
and predicts. The numbers show that
the pipeline works end to end; real results need the released DINOv3 weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from segdino.argtypes import int_at_least
from segdino.atomic import atomic_path, check_writable_folder, write_text
from segdino.backbone import VARIANTS, build_backbone
from segdino.commands.flags import add_progress, add_seed, progress_bars
from segdino.data.dataset import find_pairs
from segdino.data.synthetic import make_synthetic_dataset
from segdino.errors import UserError
from segdino.evaluation import evaluate
from segdino.inference.predict_files import predict_files
from segdino.inference.predictor import Predictor
from segdino.models.decoders import DECODERS, DEFAULT
from segdino.report import format_summary
from segdino.training.config import TrainConfig, with_recipe
from segdino.training.loop import train

ARCH = "vits16"
MARKER = ".segdino-demo"  # in the folder demo makes: a rerun may replace that folder, no other


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything it makes "
                        "(new, empty, or an earlier demo's, which is replaced)")
    parser.add_argument("--epochs", type=int_at_least(1), default=10)
    parser.add_argument("--size", type=int_at_least(16), default=128,
                        help="input height and width")
    parser.add_argument("--images", type=int_at_least(1), default=96,
                        help="training images to generate")
    add_seed(parser, 0)
    parser.add_argument("--decoder", choices=list(DECODERS), default=DEFAULT,
                        help=f"default {DEFAULT}; v2 trains with its recipe (segdino train)")
    parser.add_argument("--device")
    add_progress(parser)


def _claim_folder(out: Path) -> None:
    """Make `out` an empty folder marked as the demo's: new, or empty, or an earlier demo's
    (replaced). Anything else is refused, since it holds what the user made."""
    check_writable_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(f"--out {out}: exists, is not empty and is not a folder of "
                            f"segdino demo (no {MARKER} in it); choose another --out")
        shutil.rmtree(out)
    write_text(out / MARKER, "made by segdino demo; a rerun replaces this folder\n")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _claim_folder(out)
    progress = progress_bars(args)
    print(f"1/4 generating a synthetic dataset in {out / 'data'}")
    data = make_synthetic_dataset(out / "data" / "synthetic", n_train=args.images,
                                  n_val=max(args.images // 4, 2), n_test=max(args.images // 4, 2),
                                  seed=args.seed)
    weights = out / f"{ARCH}_random_init.pth"
    print(f"2/4 no DINOv3 weights here: saving a randomly initialised {ARCH} to {weights}")
    torch.manual_seed(args.seed)
    with atomic_path(weights) as tmp:
        torch.save(build_backbone(ARCH).state_dict(), tmp)

    print(f"3/4 training the decoder for {args.epochs} epochs")
    cfg = TrainConfig(**with_recipe(dict(
        data_dir=str(data.parent), dataset=data.name, dino_ckpt=str(weights),
        input_h=args.size, input_w=args.size, epochs=args.epochs, batch_size=8, num_workers=0,
        cache_features=True,  # the backbone runs once per image, not once per epoch
        seed=args.seed, device=args.device, save_root=str(out), name="run",
        decoder=args.decoder)))
    run_dir = train(cfg, progress=progress)

    print("4/4 testing on the test split and predicting its masks")
    predictor = Predictor.from_checkpoint(run_dir / "best.safetensors", device=args.device)
    test_pairs = find_pairs(data / "test")
    summary = evaluate(predictor, test_pairs, out / "test", num_workers=0, progress=progress,
                       seed=args.seed)
    predict_files(predictor, [image for image, _ in test_pairs], out / "predictions",
                  overlays=True, progress=progress)

    print()
    print(f"test (synthetic data, random backbone): {format_summary(summary)}")
    print(f"  training run:   {run_dir}  (metrics.csv, curves.png, val_overlays.jpg, "
          "best.safetensors)")
    print(f"  test report:    {out / 'test'}  (metrics.csv, summary.json, worst/)")
    print(f"  predictions:    {out / 'predictions'}")
    print()
    print("These numbers come from a randomly initialised backbone on generated images: they "
          "show the pipeline works, not what SegDINO can do. Real results need the DINOv3 "
          f"weights from Meta ({VARIANTS[ARCH].checkpoint}); then:")
    print(f"  segdino train --data-dir DATA --dataset NAME --dino-ckpt "
          f"{VARIANTS[ARCH].checkpoint} --epochs 50")
    return 0
