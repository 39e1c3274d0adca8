"""The Segment tab: images in (uploaded, or a folder on this machine), each shown with its
overlay and a probability heat map; the threshold and opacity sliders redraw from the
probabilities kept in the page's state, without running the model again; masks (0/255 PNGs
at each image's own size, class indices for K classes) download one by one or as a zip.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from matplotlib import colormaps
from PIL import Image

from segdino.data.transforms import load_rgb
from segdino.errors import UserError
from segdino.inference.predict_files import find_inputs
from segdino.inference.predictor import Predictor
from segdino.inference.uncertainty import entropy_map
from segdino.picture_files import save_png
from segdino.visualize import figure, fitted

HEAT_MAP = colormaps["viridis"]  # perceptually even, and readable with colour blindness


@dataclass
class Segmented:
    """One image and its probabilities (H x W, or K x H x W), both at the image's size."""

    name: str
    image: np.ndarray
    prob: np.ndarray


def segment(predictor: Predictor, paths: list[Path]) -> tuple[list[Segmented], list[str]]:
    """Each readable image with its probabilities, and a one-line problem per image that is
    unreadable or whose mask would have the name of an earlier one's (`<stem>.png`)."""
    done: list[Segmented] = []
    problems, stems = [], set()
    for path in paths:
        if path.stem.lower() in stems:
            problems.append(f"{path.name}: a mask {path.stem}.png is already made from another "
                            "image of this name (left out)")
            continue
        try:
            image = np.asarray(load_rgb(path))
        except UserError as exc:  # named by the file, not by the upload's temporary path
            problems.append(str(exc).replace(str(path), path.name))
            continue
        _, prob = predictor(image, return_probabilities=True)
        stems.add(path.stem.lower())
        done.append(Segmented(path.name, image, prob))
    return done, problems


def mask_of(item: Segmented, threshold: float) -> np.ndarray:
    """The mask at `threshold` (one class), or each pixel's most probable class."""
    return item.prob > threshold if item.prob.ndim == 2 else item.prob.argmax(0).astype(np.uint8)


def heat_map(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The foreground probability (for K classes, the chosen class's) in HEAT_MAP colours,
    at `size` = (w, h)."""
    chosen = prob if prob.ndim == 2 else prob.max(0)
    resized = Image.fromarray(chosen.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    return np.round(HEAT_MAP(np.clip(np.asarray(resized), 0, 1))[..., :3] * 255).astype(np.uint8)


def describe(item: Segmented, mask: np.ndarray, threshold: float,
             class_names: list[str] | None) -> str:
    """A line on what the mask holds: its foreground share (one class) or each class's."""
    h, w = mask.shape
    if item.prob.ndim == 2:
        return (f"{item.name} ({w} x {h}): foreground {int(mask.sum())} px "
                f"({mask.mean():.1%}) at threshold {threshold:.2f}")
    counts = np.bincount(mask.ravel(), minlength=item.prob.shape[0])
    shares = [f"{class_names[c] if class_names else f'class {c}'} {counts[c] / mask.size:.1%}"
              for c in range(1, len(counts)) if counts[c]]
    return f"{item.name} ({w} x {h}): " + (", ".join(shares) or "background only")


def render(items: list[Segmented], threshold: float, opacity: float,
           class_names: list[str] | None) -> tuple[list[tuple[np.ndarray, str]], str]:
    """The gallery (each image's overlay, its probability, and its uncertainty: the entropy
    of the probability, for an ensemble of its members' mean) and the lines `describe` gives."""
    gallery, lines = [], []
    for item in items:
        mask = mask_of(item, threshold)
        classes = 1 if item.prob.ndim == 2 else item.prob.shape[0]
        h, w = mask.shape
        gallery.append((figure(item.image, mask, None, classes, item.name, class_names,
                               opacity=opacity), f"{item.name}: overlay"))
        gallery.append((heat_map(item.prob, fitted((w, h))), f"{item.name}: probability"))
        gallery.append((heat_map(entropy_map(item.prob), fitted((w, h))),
                        f"{item.name}: uncertainty"))
        lines.append("- " + describe(item, mask, threshold, class_names))
    return gallery, "\n".join(lines)


def write_masks(items: list[Segmented], threshold: float) -> list[Path]:
    """`masks.zip` and `<stem>.png` per image, written into a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="segdino-masks-"))
    paths = []
    for item in items:
        paths.append(folder / f"{Path(item.name).stem}.png")
        save_png(mask_of(item, threshold), paths[-1])
    with zipfile.ZipFile(folder / "masks.zip", "w") as archive:
        for path in paths:
            archive.write(path, path.name)
    return [folder / "masks.zip", *paths]


def segment_tab(predictor: Predictor | None) -> None:
    """The tab's widgets and what they do, inside the page's `gr.Blocks`."""
    if predictor is None:
        gr.Markdown("No model: start `segdino app CHECKPOINT` (a file, a model folder or a "
                    "Hub id) to segment images.")
        return
    class_names = predictor.model.preprocessing.class_names
    binary = predictor.model.num_classes == 1
    with gr.Row():
        files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                        elem_id="segment-images")
        with gr.Column():
            folder = gr.Textbox(label="or a folder of images on this machine")
            run = gr.Button("Segment", variant="primary")
    with gr.Row():
        threshold = gr.Slider(0.01, 0.99, predictor.model.preprocessing.threshold, step=0.01,
                              label="Threshold", visible=binary, elem_id="threshold")
        opacity = gr.Slider(0, 1, 1, step=0.05, label="Overlay opacity", elem_id="opacity")
    problems = gr.Markdown(elem_id="segment-problems")
    summary = gr.Markdown(elem_id="segment-summary")
    gallery = gr.Gallery(label="Overlay, probability and uncertainty (yellow: prediction)",
                         columns=3, format="png", object_fit="contain", height=480)
    download = gr.Button("Masks to download")
    masks = gr.File(label="Masks (0/255 PNG at each image's size) and masks.zip",
                    file_count="multiple")
    state = gr.State([])

    def on_segment(uploaded, typed, threshold_value, opacity_value):
        paths = [Path(p) for p in uploaded or []]
        found = []
        if typed and typed.strip():
            inputs, found = find_inputs([typed.strip()])
            paths += list(inputs)
        items, bad = segment(predictor, paths)
        bad = found + bad
        shown, text = render(items, threshold_value, opacity_value, class_names)
        return items, shown, text, "\n".join(f"**error:** {b}" for b in bad)

    def on_slide(items, threshold_value, opacity_value):
        return render(items, threshold_value, opacity_value, class_names)

    run.click(on_segment, [files, folder, threshold, opacity],
              [state, gallery, summary, problems], api_name="segment")
    for slider in (threshold, opacity):
        slider.change(on_slide, [state, threshold, opacity], [gallery, summary],
                      show_progress="hidden", api_name=False)
    download.click(lambda items, t: [str(p) for p in write_masks(items, t)],
                   [state, threshold], masks, api_name="masks")
