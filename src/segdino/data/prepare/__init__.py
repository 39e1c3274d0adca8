"""`prepare`: a dataset download to `OUT/{train,val,test}/{image,mask}` (`segdino prepare`).

Each dataset module (`tn3k`, `kvasir_seg`, `isic2017`, `folder`) only decides which pairs go
to which split; finding them in the download (`source`), checking, writing and recording
`OUT/split.json` (`output`) is one code path for all.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segdino.argtypes import existing_dir, int_at_least, int_between, share_float
from segdino.data.prepare import folder, isic2017, kvasir_seg, tn3k
from segdino.data.prepare.output import build, check_out
from segdino.data.prepare.plan import Options
from segdino.errors import UserError

DATASETS = {"tn3k": tn3k, "kvasir-seg": kvasir_seg, "isic2017": isic2017, "folder": folder}


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def prepare(
    dataset: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fold: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    masks: str | os.PathLike | None = None,
    mask_suffix: str = "",
    skip_bad: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Turn the download `source` (folder or zip) of `dataset` into `out`; return split.json.

    `fold` is TN3K's; `val_fraction` and `seed` Kvasir-SEG's and `folder`'s; `test_fraction`,
    `masks` (the masks folder, paired by file stem plus `mask_suffix`) `folder`'s. With
    `skip_bad`, problem files are left out and listed instead of raising one UserError.
    """
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    workers = default_workers() if workers is None else workers
    for flag, value in (("--fold", fold), ("--val-fraction", val_fraction),
                        ("--test-fraction", test_fraction), ("--masks", masks),
                        ("--workers", workers)):
        if value is not None:
            _check(flag, value)
    if dataset == "folder" and val_fraction + test_fraction >= 1:
        raise UserError("--val-fraction plus --test-fraction must be below 1 (train needs some)")
    check_out(Path(out), [Path(p) for p in (source, masks) if p is not None])
    masks_dir = Path(masks).resolve() if masks is not None else None
    options = Options(fold, val_fraction, test_fraction, seed, masks_dir, mask_suffix)
    module = DATASETS[dataset]
    # What OUT was made from; a rerun must ask for the same to resume or be a no-op.
    request = {
        "dataset": dataset,
        "source": str(Path(source).resolve()),
        "options": {
            name: str(value) if isinstance(value, Path) else value
            for name in module.OPTIONS
            for value in [getattr(options, name)]
        },
    }
    return build(request, Path(out), lambda src: module.plan(src, options), skip_bad, workers)


# CLI flag -> (prepare() keyword, type, metavar, help). Defaults are None, so that a flag
# given to a dataset that does not read it is an error rather than silently ignored. The
# types check values at parse time; prepare() checks its arguments with the same ones.
FLAGS: dict[str, tuple[str, Callable[[str], Any], str, str]] = {
    "--fold": (
        "fold",
        int_between(0, tn3k.FOLDS - 1),
        "K",
        "tn3k: val is fold K of the trainval fold files (default 0)",
    ),
    "--val-fraction": (
        "val_fraction",
        share_float,
        "F",
        "kvasir-seg, folder: share held out for val (default 0.1; kvasir-seg: of train)",
    ),
    "--test-fraction": (
        "test_fraction",
        share_float,
        "F",
        "folder: share held out for test (default 0.2)",
    ),
    "--seed": ("seed", int, "N", "kvasir-seg, folder: seed of the held-out choice (default 0)"),
    "--masks": ("masks", existing_dir, "DIR", "folder: the folder of masks (required for folder)"),
    "--mask-suffix": (
        "mask_suffix",
        str,
        "SUFFIX",
        "folder: a mask's stem is the image's plus SUFFIX, e.g. _mask (default none)",
    ),
}
WORKERS = int_at_least(1)


def _check(flag: str, value: object) -> None:
    """A prepare() argument checked as its flag's text would be."""
    kind = WORKERS if flag == "--workers" else FLAGS[flag][1]
    try:
        kind(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{flag} {exc}") from None
