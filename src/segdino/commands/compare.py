"""`segdino compare`: two `segdino test` reports on the same images, metric by metric
(`segdino.comparison`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdino.commands.flags import add_bootstrap
from segdino.comparison import check_output, compare_reports, format_comparison, write_comparison


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report_a", metavar="REPORT_A",
                        help="a segdino test report folder (its metrics.csv is read)")
    parser.add_argument("report_b", metavar="REPORT_B",
                        help="another report on the same images; differences are A - B")
    parser.add_argument("--out", default="compare.json", metavar="FILE",
                        help="the comparison as JSON; an existing FILE is replaced only if "
                        "compare wrote it")
    add_bootstrap(parser)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output(out)  # before any work
    result = compare_reports(Path(args.report_a), Path(args.report_b), args.bootstrap,
                             args.seed)
    write_comparison(result, out)
    print(format_comparison(result))
    print(f"written: {out}")
    return 0
