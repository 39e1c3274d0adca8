"""`segdino ensemble`: compatible checkpoints as one model that runs the backbone once and
every decoder (`segdino.checkpoints.ensemble`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdino.atomic import check_writable_file
from segdino.checkpoints.ensemble import combine, save_ensemble
from segdino.commands.flags import add_allow_other_backbone, add_backbone
from segdino.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT",
                        help="trained models (.safetensors of segdino) on the same backbone "
                        "weights, layers, classes and preprocessing; their decoders may differ")
    parser.add_argument("--out", metavar="FILE", required=True,
                        help="the ensemble's .safetensors to write (a new file)")
    add_backbone(parser, "the backbone weights, if not found beside the first checkpoint")
    add_allow_other_backbone(parser)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: expected a .safetensors file name")
    if out.exists():
        raise UserError(f"--out {out}: exists (choose a new file name)")
    check_writable_file(out, "--out")
    model = combine(args.checkpoints, args.dino_ckpt,
                    allow_other_backbone=args.allow_other_backbone)
    save_ensemble(model, out, args.checkpoints)
    print(f"wrote {out}: an ensemble of {len(model.head)} decoders on one backbone")
    return 0
