"""Kvasir-SEG (polyps): the published 120-image test split; val a seeded share of the 880.

An image whose id is in neither published list is a problem (it is not from the Kvasir-SEG
release, or was renamed): putting it in train would silently change the published split.
Listed ids missing from the download are only noted.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from segdino.data.files import list_images
from segdino.data.holdout import seeded_order, share
from segdino.data.prepare.plan import (
    Options,
    Plan,
    Split,
    count_note,
    find_pairs,
)
from segdino.data.prepare.source import Source
from segdino.errors import UserError

OPTIONS = ("val_fraction", "seed")
TRAIN_LIST, TEST_LIST = "kvasir_seg_train_880.txt", "kvasir_seg_test_120.txt"


def published_split() -> tuple[list[str], list[str]]:
    """The ids of the dataset authors' 880/120 train/test split, as shipped in the package."""
    splits = resources.files("segdino.data") / "splits"
    return (splits / TRAIN_LIST).read_text().split(), (splits / TEST_LIST).read_text().split()


def plan(source: Source, options: Options) -> Plan:
    root = source.find_dir(_holds_images_and_masks, "the Kvasir-SEG folder")
    if root is None:
        raise UserError(
            f"{source.path}: no folder holding images/ and masks/ (expected Kvasir-SEG)"
        )
    train_ids, test_ids = map(set, published_split())
    listed = train_ids | test_ids
    images = list_images(root / "images")
    pairs, problems = find_pairs(images, root / "masks")
    problems += [
        f"{image}: id not in the published split ({TRAIN_LIST}, {TEST_LIST})"
        for image in images
        if image.stem not in listed
    ]
    train = [p for p in pairs if p[0].stem in train_ids]
    order = seeded_order([image.stem for image, _ in train], options.seed)
    val_ids = set(order[: share(len(order), options.val_fraction)])
    where = f"{source.describe(root)}/images, masks"
    val_rule = f"a {options.val_fraction:g} share of {TRAIN_LIST} (seed {options.seed})"
    absent = sorted(listed - {image.stem for image in images})
    notes = count_note("Kvasir-SEG images", len(images), 1000)
    if absent:
        notes.append(
            f"{len(absent)} ids of the published split are not in the download, e.g. {absent[0]}"
        )
    return Plan(
        splits={
            "train": Split(
                [p for p in train if p[0].stem not in val_ids], f"{where}: {TRAIN_LIST}, not val"
            ),
            "val": Split([p for p in train if p[0].stem in val_ids], f"{where}: {val_rule}"),
            "test": Split([p for p in pairs if p[0].stem in test_ids], f"{where}: {TEST_LIST}"),
        },
        problems=problems,
        notes=notes,
    )


def _holds_images_and_masks(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()
