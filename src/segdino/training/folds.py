"""Cross-validation folds: which images each fold holds out, recorded in the run folder.

Every image of the pool (`train/` and `val/`) is held out by exactly one fold. The folds are
TN3K's official ones when the data came from `segdino prepare tn3k` and K is 5 (its fold
files' rule: position `i` of the trainval images sorted by number is in fold `i % 5`);
otherwise a seeded order (`segdino.data.holdout.seeded_order`, by image stem) dealt round
the K folds, so they differ in size by at most one.
"""

from __future__ import annotations

import json
from pathlib import Path

from segdino.atomic import write_text
from segdino.data.holdout import Pair, seeded_order
from segdino.data.prepare.tn3k import FOLDS as TN3K_FOLDS
from segdino.errors import UserError

FOLDS_FILE = "folds.json"


def _tn3k_order(pairs: list[Pair]) -> list[str]:
    return [image.name for image, _ in sorted(
        pairs, key=lambda p: (int(p[0].stem) if p[0].stem.isdigit() else -1, p[0].name))]


def assign_folds(pairs: list[Pair], k: int, seed: int, dataset_root: Path) -> dict:
    """The folds of `pairs`: `{"k", "rule", "folds": [[image names held out], ...]}`."""
    if k < 2 or k > len(pairs):
        raise UserError(f"--folds {k}: expected 2 to {len(pairs)} (the images in train/ and "
                        "val/)")
    record = dataset_root / "split.json"
    prepared = json.loads(record.read_text()).get("dataset") if record.is_file() else None
    if prepared == "tn3k" and k == TN3K_FOLDS:
        order, rule = _tn3k_order(pairs), "TN3K's official folds (position i % 5)"
    else:
        by_stem = {image.stem: image.name for image, _ in pairs}
        order = [by_stem[s] for s in seeded_order(list(by_stem), seed)]
        rule = f"seeded order (seed {seed}) dealt round {k} folds"
    return {"k": k, "rule": rule, "folds": [order[i::k] for i in range(k)]}


def fold_pairs(pairs: list[Pair], folds: dict, fold: int) -> tuple[list[Pair], list[Pair]]:
    """Fold `fold`'s (training, held-out) pairs, each sorted by image path."""
    held = set(folds["folds"][fold])
    ordered = sorted(pairs)
    return [p for p in ordered if p[0].name not in held], [p for p in ordered if p[0].name in held]


def recorded_folds(run_dir: Path, pairs: list[Pair], k: int, seed: int,
                   dataset_root: Path) -> dict:
    """The run's folds: those recorded in `run_dir` (a resumed run keeps them, and they
    must still cover its images), else assigned now and recorded."""
    path = run_dir / FOLDS_FILE
    if not path.is_file():
        folds = assign_folds(pairs, k, seed, dataset_root)
        write_text(path, json.dumps(folds, indent=2) + "\n")
        return folds
    folds = json.loads(path.read_text())
    if sorted(n for fold in folds["folds"] for n in fold) != sorted(p[0].name for p in pairs):
        raise UserError(f"{path}: its folds do not cover the images in train/ and val/ now "
                        "(the data changed since the run began: start a new run)")
    return folds
