"""Cross-validation folds: which images each fold holds out, recorded in the run folder.

Every image of the pool (`train/` and `val/`) is held out by exactly one fold; an image is
named by its path under the dataset's folder (`train/image/0001.png`). The folds are
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


def image_id(image: Path, dataset_root: Path) -> str:
    """An image's name in the folds: its path under the dataset's folder."""
    return image.relative_to(dataset_root).as_posix()


def _tn3k_order(pairs: list[Pair], root: Path) -> list[str]:
    return [image_id(image, root) for image, _ in sorted(
        pairs, key=lambda p: (int(p[0].stem) if p[0].stem.isdigit() else -1, p[0].name))]


def assign_folds(pairs: list[Pair], k: int, seed: int, dataset_root: Path) -> dict:
    """The folds of `pairs`: `{"k", "rule", "folds": [[image ids held out], ...]}`."""
    if k < 2 or k > len(pairs):
        raise UserError(f"--folds {k}: expected 2 to {len(pairs)} (the images in train/ and "
                        "val/)")
    record = dataset_root / "split.json"
    prepared = json.loads(record.read_text()).get("dataset") if record.is_file() else None
    if prepared == "tn3k" and k == TN3K_FOLDS:
        order, rule = _tn3k_order(pairs, dataset_root), "TN3K's official folds (position i % 5)"
    else:
        order = seeded_order([image_id(image, dataset_root) for image, _ in pairs], seed)
        rule = f"seeded order (seed {seed}) dealt round {k} folds"
    return {"k": k, "rule": rule, "folds": [order[i::k] for i in range(k)]}


def fold_pairs(pairs: list[Pair], folds: dict, fold: int, dataset_root: Path
               ) -> tuple[list[Pair], list[Pair]]:
    """Fold `fold`'s (training, held-out) pairs, each sorted by image path."""
    held = set(folds["folds"][fold])
    ordered = sorted(pairs)
    inside = [image_id(p[0], dataset_root) in held for p in ordered]
    return ([p for p, h in zip(ordered, inside, strict=True) if not h],
            [p for p, h in zip(ordered, inside, strict=True) if h])


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
    ids = sorted(image_id(p[0], dataset_root) for p in pairs)
    if sorted(n for fold in folds["folds"] for n in fold) != ids:
        raise UserError(f"{path}: its folds do not cover the images in train/ and val/ now "
                        "(the data changed since the run began: start a new run)")
    return folds
