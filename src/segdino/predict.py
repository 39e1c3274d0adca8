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
import os
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


def _find_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The image files that INPUT arguments name (files, folders, glob patterns), in order
    and without repeats, and one problem line per argument that names none."""
    found: dict[Path, Path] = {}  # resolved -> as given, so one file named twice runs once
    problems = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            paths = list_images(path)
            if not paths:
                problems.append(f"{arg}: no image files in this folder")
        elif path.is_file():
            paths = [path]  # named explicitly: taken whatever its extension
        else:
            # A pattern the shell did not expand (quoted, or on Windows).
            paths = sorted(
                Path(p) for p in glob.glob(arg)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not paths:
                problems.append(f"{arg}: no such file or folder, and no image matches it as "
                                "a pattern")
        for p in paths:
            found.setdefault(p.resolve(), p)
    return list(found.values()), problems


def _output_names(path: Path, probabilities: bool, with_overlay: bool, color: bool = False
                  ) -> dict[str, str]:
    """The files written for one image: `mask` `<stem>.png`, and if asked for, `prob`
    `<stem>_prob.png`, `overlay` `<stem>_overlay.png` and `color` `<stem>_color.png`."""
    names = {"mask": f"{path.stem}.png"}
    if probabilities:
        names["prob"] = f"{path.stem}_prob.png"
    if with_overlay:
        names["overlay"] = f"{path.stem}_overlay.png"
    if color:
        names["color"] = f"{path.stem}_color.png"
    return names


def _clashes(paths: list[Path], out: Path, probabilities: bool, with_overlay: bool,
             color: bool = False) -> list[str]:
    """A problem line per output file that two images would write, or that is an input."""
    inputs = {p.resolve() for p in paths}
    writers: dict[str, list[Path]] = defaultdict(list)  # output name, lower case -> images
    shown: dict[str, str] = {}  # output name, lower case -> as first written
    problems = []
    for p in paths:
        for name in _output_names(p, probabilities, with_overlay, color).values():
            # Lower case: on macOS and Windows a.png and A.png are one file.
            writers[name.lower()].append(p)
            shown.setdefault(name.lower(), name)
            if (out / name).resolve() in inputs:
                problems.append(f"{out / name}: is an input image and would be overwritten "
                                "(choose another --out)")
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
) -> None:
    """Write `out/<stem>.png` (a 0/255 mask at the image's size; for K classes, its class
    indices 0..K-1) for each image file, and `<stem>_prob.png` (probabilities x 255; for K
    classes, the chosen class's), `<stem>_overlay.png` and `<stem>_color.png` (the mask in
    CLASS_COLOURS) if asked; batch by batch, so that only one batch of images is in memory.
    Two images that would write the same file raise a UserError before anything is written."""
    out, paths = Path(out), [Path(p) for p in paths]
    classes = predictor.model.num_classes
    raise_problems("INPUT", _clashes(paths, out, probabilities, overlays, color))
    with tqdm(total=len(paths), unit="image", desc="predicting",
              disable=None if progress else True) as bar:
        for chunk in _chunks(paths, predictor.batch_size):
            images = [load_rgb(p) for p in chunk]
            results = predictor(images, return_probabilities=True)
            for path, image, (mask, prob) in zip(chunk, images, results, strict=True):
                names = _output_names(path, probabilities, overlays, color)
                save_png(mask, out / names["mask"])
                if "prob" in names:
                    chosen = prob if classes == 1 else prob.max(0)
                    save_png(np.round(chosen * 255).astype(np.uint8), out / names["prob"])
                if "overlay" in names:
                    save_png(overlay(np.asarray(image), pred=mask, num_classes=classes),
                             out / names["overlay"])
                if "color" in names:
                    save_png(colour_mask(mask), out / names["color"])
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
                        "(for a K-class model, class indices 0..K-1)")
    parser.add_argument("--backbone", metavar="PATH",
                        help="the backbone weights, if not found beside the checkpoint")
    add_allow_other_backbone(parser)
    parser.add_argument("--probabilities", action="store_true",
                        help="also write DIR/<stem>_prob.png, probabilities scaled to 0-255 "
                        "(for K classes, the chosen class's)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write DIR/<stem>_overlay.png, the mask drawn on the image")
    parser.add_argument("--color", action="store_true",
                        help="also write DIR/<stem>_color.png, the mask in a colour per class")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
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
    paths, problems = _find_inputs(args.inputs)
    problems += _clashes(paths, out, args.probabilities, args.overlay, args.color)
    # Every image is decoded once up front so that all problems show before any work;
    # PIL releases the GIL while decoding, so threads run in parallel.
    with ThreadPoolExecutor() as pool:
        problems += [p for p in pool.map(_unreadable, paths) if p]
    raise_problems("INPUT", problems)

    predictor = Predictor.from_checkpoint(
        args.checkpoint, args.backbone, args.device, args.batch_size, args.precision,
        args.engine, allow_other_backbone=args.allow_other_backbone)
    predict_files(predictor, paths, out, args.probabilities, args.overlay, color=args.color)
    print(f"{len(paths)} mask(s) written to {out}")
    return 0
