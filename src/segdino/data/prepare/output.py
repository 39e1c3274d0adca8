"""From a dataset's plan to OUT: check every pair, write the files, record split.json.

split.json is written first (marked incomplete) with every id, then the files, then it is
marked complete. So OUT always says what it is: a rerun with the same request completes an
interrupted run (each file is written atomically, so one that exists is whole) or, once
complete, does nothing; a run with another request is refused rather than mixed in.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from segdino.atomic import atomic_path, write_text
from segdino.data.files import check_pair, raise_problems, read_mask
from segdino.data.prepare.plan import Pair, Plan
from segdino.data.prepare.source import Source
from segdino.errors import UserError

SPLITS = ("train", "val", "test")
RECORD = "split.json"
SCRATCH = ".source"  # zips extracted here; removed once the run completes

T = TypeVar("T")
R = TypeVar("R")


def build(
    request: dict[str, Any],
    out: Path,
    make_plan: Callable[[Source], Plan],
    skip_bad: bool,
    workers: int,
) -> dict[str, Any]:
    """Prepare OUT for `request` ({dataset, source, options}); return the split record."""
    existing = _existing_record(out, request)
    if existing is not None and existing.get("complete"):
        _say(f"{out} already holds this dataset ({RECORD}); nothing to do")
        return existing

    source = Source(Path(request["source"]), out / SCRATCH, exclude=out)
    plan = make_plan(source)
    for note in plan.notes:
        _say(f"warning: {note}")
    problems, bad = _problems(plan, workers)
    if problems and not skip_bad:
        raise_problems(f"{source.path} (--skip-bad leaves them out)", problems)
    splits = {
        name: [pair for pair in plan.splits[name].pairs if pair[0] not in bad] for name in SPLITS
    }
    record = {
        **request,
        "complete": False,
        "splits": {
            name: {
                "source": plan.splits[name].source,
                "count": len(splits[name]),
                "ids": sorted(image.stem for image, _ in splits[name]),
            }
            for name in SPLITS
        },
        "skipped": problems,
        "notes": plan.notes,
    }
    if existing is not None and existing.get("splits") != record["splits"]:
        raise UserError(
            f"{out / RECORD}: the interrupted run recorded other ids than {source.path} "
            "gives now (the download changed?); start again in a new OUT"
        )

    _remove_leftovers(out)
    write_text(out / RECORD, _dumps(record))
    jobs = [(pair, out / name) for name in SPLITS for pair in splits[name]]
    _parallel(lambda job: _write_pair(*job), jobs, workers, "writing")
    record["complete"] = True
    write_text(out / RECORD, _dumps(record))
    shutil.rmtree(out / SCRATCH, ignore_errors=True)
    return record


def _existing_record(out: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """OUT's split.json if it was made for `request`; refuse anything else in OUT."""
    path = out / RECORD
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            theirs = {key: record[key] for key in request}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a split record of segdino prepare ({exc!r})") from exc
        if theirs != request:
            raise UserError(
                f"{out} holds {_describe(theirs)}; this run asks for {_describe(request)}: "
                "refusing to mix them (choose another OUT)"
            )
        return record
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (expected OUT, a folder to fill)")
    if out.exists() and any(p.name != SCRATCH for p in out.iterdir()):
        raise UserError(
            f"{out}: not empty and has no {RECORD} (not made by segdino prepare): "
            "refusing to mix; choose an empty or new OUT"
        )
    return None


def _problems(plan: Plan, workers: int) -> tuple[list[str], set[Path]]:
    """Every problem line, and the images to leave out for them. (The plan's own problems,
    an image without a mask and the like, concern files it put in no split.)"""
    lines, bad = list(plan.problems), set()
    pairs = [pair for split in plan.splits.values() for pair in split.pairs]
    checked = _parallel(lambda pair: check_pair(*pair), pairs, workers, "checking")
    for (image, _), problem in zip(pairs, checked, strict=True):
        if problem:
            lines.append(problem)
            bad.add(image)
    for split in plan.splits.values():
        by_id: dict[str, list[Path]] = defaultdict(list)
        for image, _ in split.pairs:
            by_id[image.stem.lower()].append(image)
        for images in (images for images in by_id.values() if len(images) > 1):
            lines.append(f"{images[0].parent}: {', '.join(i.name for i in images)} share an id")
            bad.update(images)
    return lines, bad


def _write_pair(pair: Pair, split_dir: Path) -> None:
    """The image copied byte for byte; the mask as a single-channel 0/255 PNG."""
    image, mask = pair
    image_out = split_dir / "image" / image.name
    mask_out = split_dir / "mask" / f"{image.stem}.png"
    if not image_out.exists():
        with atomic_path(image_out) as tmp:
            shutil.copyfile(image, tmp)
    if not mask_out.exists():
        binary = read_mask(mask)
        with atomic_path(mask_out) as tmp:
            Image.fromarray(binary.astype(np.uint8) * 255).save(tmp, format="PNG")


def _remove_leftovers(out: Path) -> None:
    """Make the split folders, and drop temporary files a killed run left in them."""
    for name in SPLITS:
        for kind in ("image", "mask"):
            folder = out / name / kind
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*"):
                stale.unlink()


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int, what: str) -> list[R]:
    """fn over items on `workers` threads (PIL decodes and encodes without the GIL), with a
    progress bar; on an error or interrupt, what has not started is cancelled."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=what, disable=None):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]


def _describe(request: dict[str, Any]) -> str:
    options = ", ".join(f"{key}={value}" for key, value in request["options"].items())
    return f"{request['dataset']} from {request['source']}" + (f" ({options})" if options else "")


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2) + "\n"


def _say(message: str) -> None:
    print(f"segdino prepare: {message}", file=sys.stderr)
