"""Segmenting image files into an output folder, what `segdino predict` does: the inputs
found, every output checked before any work, and a manifest of the files written there, so
that a rerun replaces its own files and never a user's.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdino.atomic import folder_problem, write_text
from segdino.data.files import IMAGE_EXTENSIONS, list_images, raise_problems
from segdino.data.images import open_image
from segdino.data.transforms import load_rgb
from segdino.errors import UserError
from segdino.inference.background import in_background
from segdino.inference.predictor import Predictor, chunks, to_size
from segdino.inference.uncertainty import REVIEW, disagreement_map, entropy_map, write_review
from segdino.picture_files import save_jpeg, save_png
from segdino.progress import progress_bar
from segdino.visualize import colour_mask, figure

MANIFEST = ".segdino-predict.json"  # in the output folder: the files predict wrote there


def _read_manifest(out: Path) -> set[str]:
    """The files (relative, POSIX) that predict wrote in `out`; none if it holds no manifest
    or an unreadable one (then every existing file counts as the user's)."""
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _search(folder: Path, recursive: bool) -> list[Path]:
    """Image files in `folder`, or with `recursive` in it and its sub-folders (hidden ones
    skipped), sorted."""
    if not recursive:
        return list_images(folder)
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def find_inputs(inputs: Sequence[str], recursive: bool = False, out: Path | None = None
                 ) -> tuple[dict[Path, Path], list[str]]:
    """The image files that INPUT arguments name (files, folders, glob patterns), in order
    and without repeats, each with the sub-folder of `out` its outputs go to (its folder
    relative to the INPUT folder it was found in, with `recursive`; else none); and one
    problem line per argument that names none. Folders and patterns skip the files that
    predict wrote in `out`, so that a rerun does not take its own masks for images."""
    found: dict[Path, tuple[Path, Path]] = {}  # resolved -> (as given, sub-folder)
    ours = {(out / f).resolve() for f in _read_manifest(out)} if out else set()
    problems = []
    for arg in inputs:
        path = Path(arg)
        explicit = path.is_file()
        if path.is_dir():
            paths = [(p, p.parent.relative_to(path)) for p in _search(path, recursive)]
            if not paths:
                problems.append(f"{arg}: no image files in this folder")
        elif explicit:
            paths = [(path, Path())]  # named explicitly: taken whatever its extension
        else:
            # A pattern the shell did not expand (quoted, or on Windows).
            paths = [(Path(p), Path()) for p in sorted(glob.glob(arg))
                     if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS]
            if not paths:
                problems.append(f"{arg}: no such file or folder, and no image matches it as "
                                "a pattern")
        for p, sub in paths:
            if explicit or p.resolve() not in ours:
                found.setdefault(p.resolve(), (p, sub))
    return dict(found.values()), problems


def _output_names(stem: Path, probabilities: bool, with_overlay: bool, color: bool = False,
                  uncertainty: tuple[str, ...] = ()) -> dict[str, Path]:
    """The files written for one image whose outputs are `stem` (relative to the output
    folder, no suffix): `mask` `<stem>.png`, and if asked for, `prob` `<stem>_prob.png`,
    `overlay` `<stem>_overlay.jpg`, `color` `<stem>_color.png`, and the `uncertainty` maps
    named (`uncertainty`, `disagreement`: `<stem>_<name>.png`); the overlay, a photograph, is
    a JPEG."""
    wanted = {"mask": True, "prob": probabilities, "overlay": with_overlay, "color": color,
              **dict.fromkeys(uncertainty, True)}
    suffixes = {"mask": "", "prob": "_prob", "overlay": "_overlay", "color": "_color",
                **{name: f"_{name}" for name in uncertainty}}
    return {kind: stem.with_name(f"{stem.name}{suffixes[kind]}."
                                 f"{'jpg' if kind == 'overlay' else 'png'}")
            for kind, on in wanted.items() if on}


def uncertainty_maps(is_ensemble: bool) -> tuple[str, ...]:
    """The per-pixel maps `--uncertainty` writes: the entropy, and for an ensemble the
    members' disagreement."""
    return ("uncertainty", "disagreement") if is_ensemble else ("uncertainty",)


def output_stems(paths: Sequence[Path], subfolders: Sequence[str | os.PathLike] | None
           ) -> list[Path]:
    """Each image's output path without suffix, relative to the output folder."""
    subs = [Path()] * len(paths) if subfolders is None else subfolders
    return [Path(sub, p.stem) for p, sub in zip(paths, subs, strict=True)]


def _one_line(paths: list[Path], what: str, fix: str) -> list[str]:
    """One problem line for output files that share a problem: the first named, the rest
    counted (a folder of them is one mistake, not a page of lines)."""
    if not paths:
        return []
    more = f" (and {len(paths) - 1} more like it)" if len(paths) > 1 else ""
    return [f"{paths[0]}{more}: {what} ({fix})"]


def output_problems(paths: list[Path], stems: list[Path], out: Path, probabilities: bool,
                     with_overlay: bool, color: bool = False, overwrite: bool = False,
                     uncertainty: tuple[str, ...] = ()) -> list[str]:
    """Problem lines for output folders that cannot be written, and for output files that
    two images would write, that are inputs, that are folders, or that exist and predict did
    not write (unless `overwrite`); with `uncertainty`, `review.csv` too."""
    inputs = {p.resolve() for p in paths}
    ours = _read_manifest(out)
    writers: dict[str, list[Path]] = defaultdict(list)  # output name, lower case -> images
    shown: dict[str, Path] = {}  # output name, lower case -> as first written
    are_inputs, are_folders, are_users = [], [], []
    problems, blocked = [], []
    for folder in sorted({out / stem.parent for stem in stems}):
        # Sorted, a folder comes before its sub-folders, whose problem is the same one.
        if not any(b in folder.parents for b in blocked) and (why := folder_problem(folder)):
            blocked.append(folder)
            problems.append(f"{folder}: {why}")
    review = out / REVIEW
    if uncertainty and review.exists() and not overwrite and REVIEW not in ours:
        are_users.append(review)
    for path, stem in zip(paths, stems, strict=True):
        for name in _output_names(stem, probabilities, with_overlay, color,
                                  uncertainty).values():
            # Lower case: on macOS and Windows a.png and A.png are one file.
            writers[name.as_posix().lower()].append(path)
            shown.setdefault(name.as_posix().lower(), name)
            target = out / name
            if target.resolve() in inputs:
                are_inputs.append(target)
            elif target.is_dir():
                are_folders.append(target)
            elif target.exists() and not overwrite and name.as_posix() not in ours:
                are_users.append(target)
    # An input is not replaced even with --overwrite: it would be lost before it was read.
    problems += _one_line(are_inputs, "is an input image and would be overwritten",
                          "choose another --out")
    problems += _one_line(are_folders, "is a folder, where an output file would go",
                          "choose another --out")
    problems += _one_line(are_users, "exists and segdino predict did not write it",
                          "pass --overwrite to replace it, or choose another --out")
    problems += [
        f"{out / shown[key]}: would be written for each of {', '.join(map(str, ps))} "
        "(rename or leave out all but one)"
        for key, ps in writers.items()
        if len(ps) > 1
    ]
    return problems


def predict_files(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    probabilities: bool = False,
    overlays: bool = False,
    progress: bool = True,
    color: bool = False,
    overwrite: bool = False,
    subfolders: Sequence[str | os.PathLike] | None = None,
    uncertainty: bool = False,
    workers: int = 2,
) -> None:
    """Write `out/<stem>.png` (a 0/255 mask at the image's size; for K classes, its class
    indices 0..K-1) for each image file, and `<stem>_prob.png` (probabilities x 255; for K
    classes, the chosen class's), `<stem>_overlay.jpg` and `<stem>_color.png` (the mask in
    CLASS_COLOURS) if asked; batch by batch, so that only one batch of images is in memory.
    `subfolders` (one per image) puts an image's files in that sub-folder of `out`.
    `uncertainty` adds `<stem>_uncertainty.png` (and for an ensemble `_disagreement.png`),
    0-255 for 0-1 (`segdino.inference.uncertainty`), and `out/review.csv`.
    Images are decoded, and outputs written, by `workers` threads each, beside the model.

    Nothing is written, and a UserError raised, when two images would write the same file,
    or an output would replace an input image, or a file that predict did not write before
    (unless `overwrite`). What it writes is listed in `out/.segdino-predict.json`, so a rerun
    may replace it."""
    out, paths = Path(out), [Path(p) for p in paths]
    stems = output_stems(paths, subfolders)
    classes, class_names = predictor.model.num_classes, predictor.model.preprocessing.class_names
    maps = uncertainty_maps(predictor.model.is_ensemble) if uncertainty else ()
    raise_problems("INPUT", output_problems(paths, stems, out, probabilities, overlays, color,
                                             overwrite, maps))
    names = [_output_names(stem, probabilities, overlays, color, maps) for stem in stems]
    # Listed before they are written: an interrupted run's files are still predict's own.
    written = _read_manifest(out) | {n.as_posix() for each in names for n in each.values()}
    written |= {REVIEW} if uncertainty else set()
    review = []
    write_text(out / MANIFEST, json.dumps({"written_by": "segdino predict",
                                           "files": sorted(written)}, indent=1) + "\n")

    def decoded(path: Path) -> tuple[Image.Image, torch.Tensor]:
        image = load_rgb(path)
        return image, predictor.preprocess(image)

    def predicted() -> Iterator[tuple]:
        # Images are decoded and resized in threads ahead of the model, two batches' worth.
        ahead = in_background(decoded, paths, workers, ahead=2 * predictor.batch_size)
        for chunk in chunks(zip(paths, names, ahead, strict=True), predictor.batch_size):
            probs = predictor.probabilities(torch.stack([x for _, _, (_, x) in chunk]))
            members = (predictor.member_probabilities([image for _, _, (image, _) in chunk])
                       if "disagreement" in maps else [None] * len(chunk))
            for (path, files, (image, _)), prob, member in zip(chunk, probs, members,
                                                               strict=True):
                yield path, files, image, prob, member

    def write(item: tuple) -> dict | None:
        path, files, image, prob, member = item
        full = to_size(prob, (image.height, image.width))
        mask = predictor.decide(full)
        save_png(mask, out / files["mask"])
        if "prob" in files:
            chosen = full if classes == 1 else full.max(0)
            save_png(np.round(chosen * 255).astype(np.uint8), out / files["prob"])
        if "overlay" in files:
            save_jpeg(figure(np.asarray(image), pred=mask, num_classes=classes,
                             title=path.name, class_names=class_names), out / files["overlay"])
        if "color" in files:
            save_png(colour_mask(mask), out / files["color"])
        return _write_uncertainty(full, member, files, out, str(path)) if maps else None

    # Outputs are written in threads while the model runs on the next images.
    with progress_bar(total=len(paths), wanted=progress, unit="image",
                      desc="predicting") as bar:
        for row in in_background(write, predicted(), workers):
            if row is not None:
                review.append(row)
            bar.update()
    if review:
        write_review(review, out / REVIEW)


def _write_uncertainty(prob: np.ndarray, members: list[np.ndarray] | None,
                       files: dict[str, Path], out: Path, image: str) -> dict:
    """An image's uncertainty maps as PNGs; its row of review.csv."""
    row = {"image": image}
    maps = {"uncertainty": entropy_map(prob)}
    if members is not None:
        maps["disagreement"] = disagreement_map(members)
    for name, values in maps.items():
        save_png(np.round(values * 255).astype(np.uint8), out / files[name])
        row[name] = float(values.mean())
    return row


def _why_unreadable(path: Path) -> str | None:
    try:
        open_image(path, reduced=True)  # every byte decoded: a truncated file fails
    except UserError as exc:
        return str(exc)
    return None


def unreadable_images(paths: Sequence[Path]) -> dict[Path, str]:
    """Why each image that cannot be decoded cannot, by path; decoded in threads (PIL
    releases the GIL while decoding), so that all problems show before any work."""
    with ThreadPoolExecutor() as pool:
        reasons = pool.map(_why_unreadable, paths)
        return {p: why for p, why in zip(paths, reasons, strict=True) if why}
