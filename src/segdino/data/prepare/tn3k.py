"""TN3K (thyroid ultrasound): test from `test-*`, val fold k of the trainval images."""

from __future__ import annotations

import json
from pathlib import Path

from segdino.data.files import list_images
from segdino.data.prepare.plan import Options, Plan, Split, count_note, find_pairs
from segdino.data.prepare.source import Source
from segdino.errors import UserError

OPTIONS = ("fold",)
FOLDS = 5
_FOLDERS = ("trainval-image", "trainval-mask", "test-image", "test-mask")


def plan(source: Source, options: Options) -> Plan:
    root = source.find_dir(lambda d: all((d / f).is_dir() for f in _FOLDERS), "the tn3k folder")
    if root is None:
        raise UserError(f"{source.path}: no folder holding {', '.join(_FOLDERS)} (expected TN3K)")
    # Fold files list positions in the trainval images sorted by their number.
    trainval = sorted(list_images(root / "trainval-image"), key=_number)
    val_positions, rule, notes = _fold(source, options.fold, len(trainval))
    val_images = {trainval[i] for i in val_positions}
    pairs, problems = find_pairs(trainval, root / "trainval-mask")
    test_images = list_images(root / "test-image")
    test_pairs, test_problems = find_pairs(test_images, root / "test-mask")
    where = source.describe(root)
    return Plan(
        splits={
            "train": Split(
                [p for p in pairs if p[0] not in val_images], f"{where}/trainval-*, not {rule}"
            ),
            "val": Split([p for p in pairs if p[0] in val_images], f"{where}/trainval-*, {rule}"),
            "test": Split(test_pairs, f"{where}/test-*"),
        },
        problems=problems + test_problems,
        notes=notes
        + count_note("TN3K trainval images", len(trainval), 2879)
        + count_note("TN3K test images", len(test_images), 614),
    )


def _number(image: Path) -> tuple[int, str]:
    return (int(image.stem) if image.stem.isdigit() else -1, image.name)


def _fold(source: Source, k: int, n: int) -> tuple[set[int], str, list[str]]:
    """Fold k's val positions, a description of the rule, and a note if it was derived."""
    name = f"tn3k-trainval-fold{k}.json"
    path = source.find_file(name)
    if path is None:
        rule = f"positions i % {FOLDS} == {k}"
        note = f"no {name} in the download: val is the documented fold rule, {rule}"
        return {i for i in range(n) if i % FOLDS == k}, rule, [note]
    try:
        val = json.loads(path.read_text())["val"]
        positions = {int(i) for i in val}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f'{path}: not a TN3K fold file ({exc!r}); expected {{"train": [...], "val": [...]}}'
        ) from exc
    outside = sorted(i for i in positions if not 0 <= i < n)
    if outside:
        raise UserError(
            f"{path}: val position {outside[0]} is outside the {n} trainval images found "
            "(the fold file does not belong to this download)"
        )
    return positions, f"val of {source.describe(path)}", []
