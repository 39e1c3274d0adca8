"""From a dataset's plan to OUT: check every pair, write the files, record split.json.

split.json is written first (marked incomplete) with every id, then the files, then it is
marked complete. So OUT always says what it is: a rerun with the same request completes an
interrupted run (each file is written atomically, so one that exists is whole) or, once
complete, does nothing; a run with another request is refused rather than mixed in.

One run at a time writes to an OUT (a lock file in it), and a run that fails before
split.json is written leaves nothing behind: not its extracted zips, nor the folders it made.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from segdino.atomic import atomic_path, write_text
from segdino.data.files import check_pair, raise_problems, read_mask
from segdino.data.prepare.plan import Pair, Plan
from segdino.data.prepare.source import Source
from segdino.errors import UserError
from segdino.picture_files import write_image
from segdino.progress import progress_bar

SPLITS = ("train", "val", "test")
RECORD = "split.json"
SCRATCH = ".source"  # zips extracted here; removed once the run completes
LOCK = ".segdino-prepare.lock"
_OURS = (SCRATCH, LOCK)  # what OUT may hold before split.json is written

T = TypeVar("T")
R = TypeVar("R")


def check_out(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an OUT that is a file, or that overlaps one of `inputs` (SOURCE, --masks):
    writing inside the download changes it, and the download inside OUT would be mixed with
    what prepare writes there."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (expected OUT, a folder to fill)")
    target = out.resolve()
    for path in inputs:
        given = path.resolve()
        if target.is_relative_to(given):
            raise UserError(f"{out}: inside {path}, the download; choose an OUT outside it")
        if given.is_relative_to(target):
            raise UserError(f"{path}: inside OUT {out}; choose an OUT apart from the download")


def build(
    request: dict[str, Any],
    out: Path,
    make_plan: Callable[[Source], Plan],
    skip_bad: bool,
    workers: int,
) -> dict[str, Any]:
    """Prepare OUT for `request` ({dataset, source, options}); return the split record."""
    source = Source(Path(request["source"]), out / SCRATCH)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        with _locked(out):
            existing = _existing_record(out, request)
            if existing is not None and existing.get("complete"):
                _say(f"{out} already holds this dataset ({RECORD}); nothing to do")
                return existing
            try:
                return _fill(request, out, existing, source, make_plan, skip_bad, workers)
            except BaseException:
                if not (out / RECORD).exists():  # nothing to resume: leave no trace
                    shutil.rmtree(out / SCRATCH, ignore_errors=True)
                raise
    except BaseException:
        # After the lock file is gone; rmdir refuses a folder with anything in it, so only
        # folders this run made and left empty go.
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold OUT's lock file (made if need be) or refuse: a second `prepare` into the same OUT
    at once would write the same files and split.json. The file is removed on the way out
    if this run made it."""
    lock = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            fd, made = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:  # a live run's, or a killed one's
            fd, made = os.open(lock, os.O_RDWR), False
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The run that held it may have removed the file after we opened it: the lock
            # we hold is then on a file nobody else will look at.
            held = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            held = False
        if not held:
            raise UserError(
                f"{out}: another segdino prepare is writing there (locked: {lock}); "
                "wait for it or choose another OUT"
            )
        try:
            yield
        finally:
            if made:
                lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _fill(
    request: dict[str, Any],
    out: Path,
    existing: dict[str, Any] | None,
    source: Source,
    make_plan: Callable[[Source], Plan],
    skip_bad: bool,
    workers: int,
) -> dict[str, Any]:
    """Plan, check and write; `existing` is the record of an interrupted run to complete."""
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

    write_text(out / RECORD, _dumps(record))
    _remove_leftovers(out)
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
    if any(p.name not in _OURS for p in out.iterdir()):
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
        write_image(Image.fromarray(binary.astype(np.uint8) * 255), mask_out, format="PNG")


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
            for future in progress_bar(as_completed(futures), total=len(futures), desc=what):
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
