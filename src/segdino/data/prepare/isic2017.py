"""ISIC 2017 Part 1 (skin lesions): the official training, validation and test sets.

The data folders also hold `*_superpixels.png` files and a metadata CSV (skipped); masks
are `<id>_segmentation.png`, the suffix's case varying between sources.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segdino.data.files import IMAGE_EXTENSIONS, list_images
from segdino.data.prepare.plan import Options, Plan, Split, count_note, find_pairs
from segdino.data.prepare.source import Source
from segdino.errors import UserError

OPTIONS: tuple[str, ...] = ()
# split -> (the set's names in folder names, first the official one; its size)
_SETS = {
    "train": (("Training",), 2000),
    "val": (("Validation",), 150),
    "test": (("Test_v2", "Test"), 600),
}


def plan(source: Source, options: Options) -> Plan:
    folders, missing = {}, []
    for split, (names, _) in _SETS.items():
        for kind in ("Data", "Part1_GroundTruth"):
            wanted = [f"ISIC-2017_{name}_{kind}" for name in names]
            folders[split, kind] = source.find_dir(_image_folder_named(wanted), wanted[0])
            if folders[split, kind] is None:
                missing.append(wanted[0])
    if missing:
        raise UserError(
            f"{source.path}: no {', '.join(missing)} folder or zip "
            "(expected the six ISIC 2017 Part 1 downloads)"
        )
    splits, problems, notes = {}, [], []
    for split, (_, expected) in _SETS.items():
        data, truth = folders[split, "Data"], folders[split, "Part1_GroundTruth"]
        images = [p for p in list_images(data) if not p.stem.lower().endswith("_superpixels")]
        pairs, found = find_pairs(images, truth, "_segmentation")
        where = f"{source.describe(data)}, {source.describe(truth)}"
        splits[split] = Split(pairs, where)
        problems += found
        notes += count_note(f"ISIC 2017 {split} images", len(images), expected)
    return Plan(splits, problems, notes)


def _image_folder_named(names: list[str]) -> Callable[[Path], bool]:
    """A test for a folder of one of `names` (any case) holding images: of the same-name
    folders an extraction can nest, the one with the files."""
    lowered = {name.lower() for name in names}

    def match(folder: Path) -> bool:
        return folder.name.lower() in lowered and any(
            p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()
        )

    return match
