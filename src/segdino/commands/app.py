"""`segdino app`: a web page to segment images, look through a test report and correct
masks (`segdino.app`; needs `pip install segdino[app]`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdino.argtypes import int_at_least
from segdino.commands.flags import add_allow_other_backbone, add_backbone
from segdino.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="CHECKPOINT", nargs="?",
                        help="a trained model: a checkpoint file, a model folder or a Hugging "
                        "Face Hub id (without one, only reports and masks can be looked at)")
    add_backbone(parser, "the backbone weights, if not found beside the checkpoint")
    add_allow_other_backbone(parser)
    parser.add_argument("--data-dir", metavar="D",
                        help="with --dataset: where the Correct tab saves masks "
                        "(D/X/train/mask/<stem>.png)")
    parser.add_argument("--dataset", metavar="X", help="the dataset folder under --data-dir")
    parser.add_argument("--port", type=int_at_least(1), default=7860)
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to serve on; the default is this machine only, "
                        "another (0.0.0.0: every network) lets other machines in")
    parser.add_argument("--device", metavar="D",
                        help="cpu, cuda, cuda:N or mps (default: the best available)")


def run(args: argparse.Namespace) -> int:
    if (args.data_dir is None) != (args.dataset is None):
        raise UserError("--data-dir and --dataset: give both (where corrected masks are "
                        "saved) or neither")
    dataset = None if args.dataset is None else Path(args.data_dir) / args.dataset
    if dataset is not None and not dataset.is_dir():
        raise UserError(f"--dataset {args.dataset}: {dataset} is not a folder")
    from segdino.app.model import load_predictor  # needs the extra: a one-line error without
    from segdino.app.page import LOCAL_HOST, build_page, serve

    predictor = None if args.model is None else load_predictor(
        args.model, args.dino_ckpt, args.device, args.allow_other_backbone)
    page = build_page(predictor, dataset)
    print(f"segdino app: serving on http://{args.host}:{args.port}", end="")
    if args.host == LOCAL_HOST:
        print(" (this machine only; --host to serve on another address)")
    else:
        print(f" (--host {args.host}: other machines on that network can open it)")
    serve(page, args.host, args.port)
    return 0
