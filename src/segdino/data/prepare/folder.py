"""Any folder of images with a folder of masks: seeded val and test shares."""

from __future__ import annotations

from segdino.data.files import list_images
from segdino.data.holdout import seeded_order, share
from segdino.data.prepare.plan import Options, Plan, Split, find_pairs
from segdino.data.prepare.source import Source
from segdino.errors import UserError

OPTIONS = ("val_fraction", "test_fraction", "seed", "masks", "mask_suffix")


def plan(source: Source, options: Options) -> Plan:
    if options.masks is None:
        raise UserError("folder: --masks is required (the folder of masks, paired by file stem)")
    if not source.path.is_dir():
        raise UserError(f"{source.path}: not a folder (expected the folder of images)")
    pairs, problems = find_pairs(list_images(source.path), options.masks, options.mask_suffix)
    order = seeded_order(sorted({image.stem for image, _ in pairs}), options.seed)
    n_test = share(len(order), options.test_fraction)
    n_val = share(len(order), options.val_fraction)
    test, val = set(order[:n_test]), set(order[n_test : n_test + n_val])
    where = f"{source.path}, {options.masks}"
    rule = f"(seed {options.seed})"
    return Plan(
        splits={
            "train": Split([p for p in pairs if p[0].stem not in test | val], f"{where}: the rest"),
            "val": Split(
                [p for p in pairs if p[0].stem in val], f"{where}: {options.val_fraction:g} {rule}"
            ),
            "test": Split(
                [p for p in pairs if p[0].stem in test],
                f"{where}: {options.test_fraction:g} {rule}",
            ),
        },
        problems=problems,
    )
