"""`segdino prepare DATASET SOURCE OUT`: a dataset download to train/val/test folders
(`segdino.data.prepare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdino.commands.flags import MAX_DEFAULT_WORKERS, add_workers, default_workers
from segdino.data.prepare import DATASETS, FLAGS, prepare
from segdino.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", metavar="DATASET", choices=list(DATASETS), help=", ".join(DATASETS)
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="the download as distributed: a folder or a zip (folder: the images folder)",
    )
    parser.add_argument(
        "out", metavar="OUT", help="output folder: OUT/{train,val,test}/{image,mask}"
    )
    for flag, (dest, kind, metavar, help_text) in FLAGS.items():
        parser.add_argument(
            flag, dest=dest, type=kind, metavar=metavar, default=None, help=help_text
        )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out files with problems (listed in split.json) instead of stopping",
    )
    add_workers(parser, dest="workers", minimum=1, default=default_workers(),
                help_text="parallel workers (default: the CPUs this process may use, at most "
                f"{MAX_DEFAULT_WORKERS})")


def run(args: argparse.Namespace) -> int:
    module = DATASETS[args.dataset]
    given = {}
    for flag, (dest, *_) in FLAGS.items():
        if getattr(args, dest) is not None:
            if dest not in module.OPTIONS:
                raise UserError(f"{flag} does not apply to {args.dataset}")
            given[dest] = getattr(args, dest)
    record = prepare(
        args.dataset,
        args.source,
        args.out,
        skip_bad=args.skip_bad,
        workers=args.workers,
        **given,
    )
    counts = ", ".join(f"{name} {split['count']}" for name, split in record["splits"].items())
    print(f"{args.out}: {counts} (ids in {Path(args.out) / 'split.json'})")
    if record["skipped"]:
        print(f"{len(record['skipped'])} problem(s) left out, listed in split.json")
    return 0
