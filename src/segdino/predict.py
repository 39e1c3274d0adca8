"""Segmenting images with a trained model: the `Predictor` API and `segdino predict`.

An image goes through the model's own preprocessing (bicubic resize to its input size,
normalisation), the model and a sigmoid; the probability map is resized back to the image's
own size (bilinear, on the probabilities, so the mask's edge is not blocky), then
thresholded. Masks therefore always have the size of the image they came from.

A model of K >= 2 classes goes the same way with a softmax: the K class probabilities are
resized, and each pixel takes the most probable class (uint8 class indices, 0 the background).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from segdino.argtypes import int_at_least, open_unit_float
from segdino.atomic import check_writable_folder, folder_problem, write_text
from segdino.checkpoint import add_allow_other_backbone, load_segdino
from segdino.data.files import IMAGE_EXTENSIONS, list_images, raise_problems
from segdino.data.transforms import image_to_tensor, load_rgb
from segdino.engines import ENGINES, make_engine
from segdino.errors import UserError
from segdino.model import SegDINO
from segdino.runtime import INFERENCE_PRECISIONS, pick_device
from segdino.visualize import colour_mask, overlay, save_png

ImageSource = str | os.PathLike | Image.Image | np.ndarray
Prediction = np.ndarray | tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def to_size(prob: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (C, h, w) probability map resized to `size` = (H, W): bilinear, as float32; H x W
    for one channel (binary), else C x H x W."""
    resized = F.interpolate(prob[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0].squeeze(0).cpu().numpy()


class Predictor:
    """Masks from a SegDINO model for images at their own size.

    `predictor(image)` takes a path, a PIL image or an H x W x 3 uint8 array and returns a
    boolean H x W mask (or `(mask, probabilities)` with `return_probabilities=True`); a list
    of images gives a list of those. For a model of K >= 2 classes the mask is H x W uint8
    class indices and the probabilities K x H x W float32. Images are run `batch_size` at a
    time. The model is moved to `device` (default: the best available) and put in eval mode.

    `engine` runs the model (see `segdino.engines`): "torch" (eager, the default), "compile"
    (`torch.compile`) or "onnx" (exported at once, run by ONNX Runtime). `precision` "auto"
    (the default) is bf16 autocast where the hardware computes bf16 natively, float32
    elsewhere (`segdino.runtime.resolve_precision`); "fp32" or "bf16" choose.
    """

    def __init__(
        self,
        model: SegDINO,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        precision: str = "auto",
        engine: str = "torch",
    ) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: expected 1 or more")
        self.device = pick_device(None if device is None else str(device))
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()
        self.engine = make_engine(self.model, self.device, precision, engine)
        self.precision = self.engine.precision  # "auto" resolved: "fp32" or "bf16"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        backbone: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        precision: str = "auto",
        engine: str = "torch",
        *,
        allow_other_backbone: bool = False,
    ) -> Predictor:
        """A predictor for a checkpoint in our format or the reference's `.pth` layout
        (`backbone` and `allow_other_backbone` as `load_segdino` takes them)."""
        model = load_segdino(path, backbone, allow_other_backbone=allow_other_backbone)
        return cls(model, device, batch_size, precision, engine)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The (3, h, w) network input for an RGB image, by the model's preprocessing."""
        pre = self.model.preprocessing
        return image_to_tensor(image, pre.input_size, pre.mean, pre.std)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities, float32 on the CPU, for a preprocessed batch (B, 3, h, w): the
        foreground's (B, 1, h, w) for one class (sigmoid), else each class's (B, K, h, w)
        (softmax)."""
        logits = self.engine(batch)
        return (torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(1)).cpu()

    def decide(self, prob: np.ndarray) -> np.ndarray:
        """The mask for `to_size`'s probabilities: bool H x W, foreground above the threshold
        (one class), or uint8 H x W, the most probable class (K classes)."""
        if prob.ndim == 2:
            return prob > self.model.preprocessing.threshold
        return prob.argmax(0).astype(np.uint8)

    def _predict(self, sources: Sequence[ImageSource], with_prob: bool) -> Iterator[Prediction]:
        for chunk in _chunks(sources, self.batch_size):
            images = [load_rgb(source) for source in chunk]
            probs = self.probabilities(torch.stack([self.preprocess(im) for im in images]))
            for image, prob in zip(images, probs, strict=True):
                full = to_size(prob, (image.height, image.width))
                mask = self.decide(full)
                yield (mask, full) if with_prob else mask

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        return_probabilities: bool = False,
    ) -> Prediction | list[Prediction]:
        if isinstance(images, list | tuple):
            return list(self._predict(images, return_probabilities))
        return next(self._predict([images], return_probabilities))


# --- segdino predict ---------------------------------------------------------------------


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


def _find_inputs(inputs: Sequence[str], recursive: bool = False, out: Path | None = None
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


def _output_names(stem: Path, probabilities: bool, with_overlay: bool, color: bool = False
                  ) -> dict[str, Path]:
    """The files written for one image whose outputs are `stem` (relative to the output
    folder, no suffix): `mask` `<stem>.png`, and if asked for, `prob` `<stem>_prob.png`,
    `overlay` `<stem>_overlay.png` and `color` `<stem>_color.png`."""
    wanted = {"mask": True, "prob": probabilities, "overlay": with_overlay, "color": color}
    suffixes = {"mask": "", "prob": "_prob", "overlay": "_overlay", "color": "_color"}
    return {kind: stem.with_name(f"{stem.name}{suffixes[kind]}.png")
            for kind, on in wanted.items() if on}


def _stems(paths: Sequence[Path], subfolders: Sequence[str | os.PathLike] | None
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


def _output_problems(paths: list[Path], stems: list[Path], out: Path, probabilities: bool,
                     with_overlay: bool, color: bool = False, overwrite: bool = False
                     ) -> list[str]:
    """Problem lines for output folders that cannot be written, and for output files that
    two images would write, that are inputs, that are folders, or that exist and predict did
    not write (unless `overwrite`)."""
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
    for path, stem in zip(paths, stems, strict=True):
        for name in _output_names(stem, probabilities, with_overlay, color).values():
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
) -> None:
    """Write `out/<stem>.png` (a 0/255 mask at the image's size; for K classes, its class
    indices 0..K-1) for each image file, and `<stem>_prob.png` (probabilities x 255; for K
    classes, the chosen class's), `<stem>_overlay.png` and `<stem>_color.png` (the mask in
    CLASS_COLOURS) if asked; batch by batch, so that only one batch of images is in memory.
    `subfolders` (one per image) puts an image's files in that sub-folder of `out`.

    Nothing is written, and a UserError raised, when two images would write the same file,
    or an output would replace an input image, or a file that predict did not write before
    (unless `overwrite`). What it writes is listed in `out/.segdino-predict.json`, so a rerun
    may replace it."""
    out, paths = Path(out), [Path(p) for p in paths]
    stems = _stems(paths, subfolders)
    classes = predictor.model.num_classes
    raise_problems("INPUT", _output_problems(paths, stems, out, probabilities, overlays, color,
                                             overwrite))
    names = [_output_names(stem, probabilities, overlays, color) for stem in stems]
    # Listed before they are written: an interrupted run's files are still predict's own.
    written = _read_manifest(out) | {n.as_posix() for each in names for n in each.values()}
    write_text(out / MANIFEST, json.dumps({"written_by": "segdino predict",
                                           "files": sorted(written)}, indent=1) + "\n")
    with tqdm(total=len(paths), unit="image", desc="predicting",
              disable=None if progress else True) as bar:
        for chunk in _chunks(list(zip(paths, names, strict=True)), predictor.batch_size):
            images = [load_rgb(p) for p, _ in chunk]
            results = predictor(images, return_probabilities=True)
            for (_, files), image, (mask, prob) in zip(chunk, images, results, strict=True):
                save_png(mask, out / files["mask"])
                if "prob" in files:
                    chosen = prob if classes == 1 else prob.max(0)
                    save_png(np.round(chosen * 255).astype(np.uint8), out / files["prob"])
                if "overlay" in files:
                    save_png(overlay(np.asarray(image), pred=mask, num_classes=classes),
                             out / files["overlay"])
                if "color" in files:
                    save_png(colour_mask(mask), out / files["color"])
                bar.update()


def _unreadable(path: Path) -> str | None:
    try:
        load_rgb(path)  # a full decode: a truncated file passes a header check
    except UserError as exc:
        return str(exc)
    return None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a trained model: .safetensors (ours) or .pth (reference layout)")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image files, folders of images, or glob patterns such as 'x/*.jpg'")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: DIR/<stem>.png, a 0/255 mask at the image's size "
                        "(for a K-class model, class indices 0..K-1); files there that predict "
                        "did not write are never replaced without --overwrite")
    parser.add_argument("--backbone", metavar="PATH",
                        help="the backbone weights, if not found beside the checkpoint")
    add_allow_other_backbone(parser)
    parser.add_argument("--threshold", type=open_unit_float, metavar="T",
                        help="foreground where the probability is above T (default: the "
                        "checkpoint's, 0.5); one-class models only")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write DIR/<stem>_prob.png, probabilities scaled to 0-255 "
                        "(for K classes, the chosen class's)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write DIR/<stem>_overlay.png, the mask drawn on the image")
    parser.add_argument("--color", action="store_true",
                        help="also write DIR/<stem>_color.png, the mask in a colour per class")
    parser.add_argument("--recursive", action="store_true",
                        help="also take the images in INPUT folders' sub-folders, their outputs "
                        "in the same sub-folders of DIR")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images, with a warning each, instead of stopping")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files in DIR that predict did not write (never "
                        "an input image)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, metavar="N",
                        help="images per forward pass (default 8)")
    parser.add_argument("--device", metavar="D",
                        help="cpu, cuda, cuda:N or mps (default: the best available)")
    add_engine_flags(parser)


def add_engine_flags(parser: argparse.ArgumentParser, precision: str = "auto") -> None:
    """--precision (default `precision`) and --engine, as `segdino predict` and `segdino test`
    take them."""
    auto = "bf16 where the CPU or GPU computes it natively, else fp32"
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=precision,
                        help=f"auto ({auto}), fp32 or bf16 mixed precision (default "
                        f"{precision})")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch (default: eager PyTorch), compile (torch.compile: slow "
                        "first batch, then faster) or onnx (ONNX Runtime, float32; needs "
                        "segdino[onnx])")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable_folder(out, "--out")
    found, problems = _find_inputs(args.inputs, args.recursive, out)
    # Every image is decoded once up front so that all problems show before any work;
    # PIL releases the GIL while decoding, so threads run in parallel.
    with ThreadPoolExecutor() as pool:
        reasons = pool.map(_unreadable, found)
        unreadable = {p: why for p, why in zip(found, reasons, strict=True) if why}
    if not args.skip_bad:
        problems += unreadable.values()
    elif unreadable:
        found = {p: sub for p, sub in found.items() if p not in unreadable}
        if not found:  # nothing left to skip to
            problems += unreadable.values()
    paths = list(found)
    problems += _output_problems(paths, _stems(paths, list(found.values())), out,
                                 args.probabilities, args.overlay, args.color, args.overwrite)
    raise_problems("INPUT", problems)

    predictor = Predictor.from_checkpoint(
        args.checkpoint, args.backbone, args.device, args.batch_size, args.precision,
        args.engine, allow_other_backbone=args.allow_other_backbone)
    if args.threshold is not None:
        if predictor.model.num_classes > 1:
            raise UserError(f"--threshold: {args.checkpoint} has {predictor.model.num_classes} "
                            "classes, and a pixel takes the most probable one (a threshold is "
                            "for one-class models)")
        predictor.model.preprocessing.threshold = args.threshold
    if args.skip_bad:  # said once the run is certain to go ahead
        for why in unreadable.values():
            print(f"segdino predict: warning: {why} (skipped)", file=sys.stderr)
    predict_files(predictor, paths, out, args.probabilities, args.overlay, color=args.color,
                  overwrite=args.overwrite, subfolders=list(found.values()))
    print(f"{len(paths)} mask(s) written to {out}")
    return 0
