"""The Correct tab: a predicted or existing mask painted on and erased in the browser, saved
as `DATASET/train/mask/<stem>.png` (0/255) with its image copied beside it into
`train/image/` when the dataset lacks it. An existing mask is replaced only when the page's
box says so. Binary masks only (a class-index mask needs a class per stroke).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from segdino.atomic import atomic_path
from segdino.data.files import IMAGE_EXTENSIONS, read_mask
from segdino.data.images import open_image
from segdino.data.transforms import load_rgb
from segdino.errors import UserError
from segdino.inference.predictor import Predictor
from segdino.picture_files import save_png
from segdino.visualize import PRED_COLOUR

PAINT_ALPHA = 128  # the mask layer's opacity in the editor: the image shows through
REPLACE = "Replace an existing mask of this name"


def _same_stem(folder: Path, stem: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def save_correction(mask: np.ndarray, image_path: Path, dataset: Path, replace: bool) -> str:
    """Write `mask` (bool, the image's size) as `dataset/train/mask/<stem>.png`, copying the
    image into `train/image/` when no image of its stem is there; a UserError naming the
    file that is in the way. Returns what was written."""
    train = dataset / "train"
    target = train / "mask" / f"{image_path.stem}.png"
    for existing in _same_stem(train / "mask", image_path.stem):
        if existing != target:
            raise UserError(f"{existing}: a mask of this name in another format (remove it "
                            f"to save {target.name})")
        if not replace:
            raise UserError(f"{target}: exists (tick '{REPLACE}' to overwrite it)")
    written = []
    dataset_images = _same_stem(train / "image", image_path.stem)
    if dataset_images:
        with open_image(dataset_images[0]) as im:
            if im.size[::-1] != mask.shape:
                raise UserError(f"{dataset_images[0]}: {im.width} x {im.height}, but the "
                                f"mask is {mask.shape[1]} x {mask.shape[0]}")
    else:
        copy = train / "image" / image_path.name
        with atomic_path(copy) as tmp:
            shutil.copyfile(image_path, tmp)
        written.append(str(copy))
    save_png(mask, target)
    return "saved " + ", ".join([str(target), *written])


def starting_layer(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The editor's paint layer: the mask in the prediction's yellow, half transparent."""
    layer = np.zeros((*image.shape[:2], 4), np.uint8)
    layer[mask] = (*PRED_COLOUR, PAINT_ALPHA)
    return layer


def editor_value(image: np.ndarray, mask: np.ndarray) -> dict:
    """What the editor starts from: the image, the mask as its paint layer, and the two
    composed (without the composite, Gradio's editor does not show the layer)."""
    layer = starting_layer(image, mask)
    alpha = layer[..., 3:] / 255
    composite = np.round(image * (1 - alpha) + layer[..., :3] * alpha).astype(np.uint8)
    return {"background": image, "layers": [layer], "composite": composite}


def painted_mask(layer: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask a paint layer holds (any paint counts), at `shape` = (h, w)."""
    painted = layer[..., 3] > 0
    if painted.shape != shape:  # the editor may have scaled the canvas
        resized = Image.fromarray(painted).resize(shape[::-1], Image.Resampling.NEAREST)
        painted = np.asarray(resized)
    return painted


def _start_mask(image_path: Path, image: np.ndarray, start: str, predictor: Predictor | None,
                dataset: Path | None) -> np.ndarray:
    if start == "prediction":
        if predictor is None or predictor.model.num_classes > 1:
            raise UserError("no one-class model loaded: start from an existing mask or empty")
        return predictor(image)
    if start == "existing mask":
        found = _same_stem(dataset / "train" / "mask", image_path.stem) if dataset else []
        if not found:
            raise UserError(f"no mask named {image_path.stem}.* in the dataset's train/mask")
        return read_mask(found[0])
    return np.zeros(image.shape[:2], bool)


def correct_tab(predictor: Predictor | None, dataset: Path | None) -> None:
    """The tab's widgets and what they do, inside the page's `gr.Blocks`."""
    if dataset is None:
        gr.Markdown("Start `segdino app` with `--data-dir D --dataset X` to save corrected "
                    "masks into `D/X/train/mask/`.")
        return
    gr.Markdown(f"Paint the mask (yellow) on the image, or erase it; **Save** writes "
                f"`{dataset}/train/mask/<stem>.png` (0/255). To retrain on the corrections: "
                f"`segdino train --data-dir {dataset.parent} --dataset {dataset.name} "
                "--dino-ckpt WEIGHTS --name NAME` (a new run), or continue a run with more "
                "epochs: `segdino train --resume runs/NAME --epochs N`.")
    with gr.Row():
        upload = gr.File(label="Image", file_types=["image"], elem_id="correct-image")
        with gr.Column():
            start = gr.Radio(["prediction", "existing mask", "empty"], value="prediction"
                             if predictor else "existing mask", label="Start from")
            load = gr.Button("Load into the editor", variant="primary")
    editor = gr.ImageEditor(label="Mask", type="numpy", image_mode="RGBA", format="png",
                            brush=gr.Brush(colors=[("#F0E442", 0.5)], color_mode="fixed"),
                            eraser=gr.Eraser(), transforms=(), layers=False)
    with gr.Row():
        replace = gr.Checkbox(label=REPLACE)
        save = gr.Button("Save", variant="primary")
    message = gr.Markdown(elem_id="correct-message")

    def on_load(path, how):
        if not path:
            return gr.update(), "**error:** no image uploaded"
        try:
            image = np.asarray(load_rgb(path))
            mask = _start_mask(Path(path), image, how, predictor, dataset)
        except UserError as exc:
            return gr.update(), f"**error:** {str(exc).replace(str(path), Path(path).name)}"
        return editor_value(image, mask), ""

    def on_save(path, value, confirmed):
        if not path or not value or not value.get("layers"):
            return "**error:** load an image into the editor first"
        try:
            shape = load_rgb(path).size[::-1]  # upright, as the dataset's reader sees it
            return save_correction(painted_mask(value["layers"][0], shape), Path(path),
                                   dataset, confirmed)
        except UserError as exc:
            return f"**error:** {exc}"

    load.click(on_load, [upload, start], [editor, message], api_name=False)
    save.click(on_save, [upload, editor, replace], message, api_name=False)
