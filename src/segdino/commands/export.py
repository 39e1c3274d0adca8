"""`segdino export`: a trained model as one ONNX file, for ONNX Runtime
(`segdino.inference.onnx`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdino.argtypes import int_between
from segdino.checkpoints.load import load_segdino
from segdino.commands.flags import add_allow_other_backbone, add_backbone
from segdino.inference.onnx import MAX_OPSET, MIN_OPSET, check_target, export_onnx, import_onnx


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a trained model: .safetensors (ours) or .pth (reference layout)")
    parser.add_argument("--format", choices=("onnx",), default="onnx",
                        help="onnx (default; the only one so far)")
    parser.add_argument("--out", metavar="FILE",
                        help="the .onnx file to write (default: CKPT with .onnx); its "
                        "metadata goes beside it as .json; files there are replaced only if "
                        "export wrote them")
    add_backbone(parser, "the backbone weights, if not found beside the checkpoint")
    add_allow_other_backbone(parser)
    parser.add_argument("--opset", type=int_between(MIN_OPSET, MAX_OPSET), default=MIN_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} (the default) to {MAX_OPSET}")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    import_onnx()  # the quick checks first, then the model
    check_target(out, args.opset)
    model = load_segdino(args.checkpoint, args.dino_ckpt,
                         allow_other_backbone=args.allow_other_backbone)
    export_onnx(model, out, args.opset)
    print(f"wrote {out} (metadata also in {out.with_suffix('.json')})")
    return 0
