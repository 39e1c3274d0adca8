"""A trained model as one self-contained ONNX file, for ONNX Runtime (`segdino export`).

The file holds the whole model, backbone and decoder: input `images` (B, 3, H, W) float32,
normalised as the model's preprocessing says; output `logits` (B, K, H, W). Batch size,
height and width are dynamic; height and width must be multiples of the patch size (16):
pad other sizes with zeros at the bottom and right and crop the logits back, as
`segdino.inference.engines.OnnxEngine` does. The RoPE tables are computed inside the graph from the
input's size, so one file serves every size.

The metadata (input size, mean and std, threshold, classes, layers, backbone architecture)
is stored in the model's `metadata_props` under the key `segdino`, as JSON, and in a JSON
file beside the model (`model.onnx` -> `model.json`).

It uses PyTorch's TorchScript-based exporter (`dynamo=False`), which handles the dynamic
sizes without extra dependencies; PyTorch deprecates it from 2.9 on, and still ships it.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import torch

from segdino.atomic import atomic_path, check_writable_file, write_text
from segdino.backbone.variants import variant_name
from segdino.errors import MissingExtra, UserError
from segdino.models.segdino import SegDINO

FORMAT = "segdino-onnx"
VERSION = 1
MIN_OPSET = 17  # LayerNormalization
# The TorchScript exporter's newest (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET,
# a private name, so not imported).
MAX_OPSET = 20
INPUT, OUTPUT = "images", "logits"


def onnx_metadata(model: SegDINO, opset: int) -> dict:
    """What a consumer of the ONNX file needs to prepare its input and read its output."""
    from segdino.version import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "segdino_version": __version__,
        "opset": opset,
        "input": {"name": INPUT, "shape": ["batch", 3, "height", "width"], "dtype": "float32",
                  "layout": f"RGB, resized ({model.preprocessing.resize}) to "
                            "preprocessing.input_size, (pixel / 255 - mean) / std"},
        "output": {"name": OUTPUT, "shape": ["batch", model.num_classes, "height", "width"],
                   "dtype": "float32",
                   "meaning": "one class: foreground where sigmoid(logit) > threshold; "
                              "K classes: the class of the largest logit (already divided "
                              "by preprocessing.temperature; an ensemble's are those of its "
                              "members' mean probability)"},
        "input_multiple": model.backbone.patch_size,
        "num_classes": model.num_classes,
        "layers": list(model.layers),
        "backbone": {"arch": variant_name(model.backbone.config),
                     "config": model.backbone.config.to_dict()},
        "preprocessing": asdict(model.preprocessing),
    }


def import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise MissingExtra("ONNX export needs the onnx package: pip install segdino[onnx]"
                           ) from None
    return onnx


def _is_ours(path: Path) -> bool:
    """Whether `path` is a file that export wrote: a model with our metadata, or its JSON."""
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
            return False
    onnx = import_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # any file that onnx cannot parse (it raises many types) is not ours
        return False
    return any(entry.key == "segdino" for entry in proto.metadata_props)


def check_target(path: Path, opset: int) -> None:
    """A UserError for an output name or opset that export cannot write, or for files it
    would replace that it did not write: the user's, never to be lost."""
    if path.suffix != ".onnx":
        raise UserError(f"--out {path}: expected a file name ending in .onnx")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset {opset}: expected {MIN_OPSET} to {MAX_OPSET}")
    for target in (path, path.with_suffix(".json")):
        check_writable_file(target, "--out")
        if target.exists() and not _is_ours(target):
            raise UserError(f"--out {path}: {target} exists and is not an export of segdino "
                            "(choose another --out, or move it away)")


def export_onnx(model: SegDINO, path: str | Path, opset: int = MIN_OPSET) -> dict:
    """Write `model` (in eval mode) to `path` (.onnx) and its metadata beside it (.json), both
    atomically; return the metadata. Dynamic batch, height and width (multiples of 16)."""
    onnx = import_onnx()
    path = Path(path)
    check_target(path, opset)
    meta = onnx_metadata(model, opset)
    patch = model.backbone.patch_size
    h, w = (-(-s // patch) * patch for s in model.preprocessing.input_size)
    # Batch 2 and a whole number of patches: nothing in the trace specialises on batch 1,
    # and the padding branch (sizes that are not multiples of 16) is left out of the graph.
    example = torch.zeros(2, 3, h, w, device=next(model.parameters()).device)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # Expected: the shape checks traced as constants, and the exporter's deprecation.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript",
                                    DeprecationWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")
            torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT],
                              output_names=[OUTPUT], opset_version=opset,
                              dynamic_axes={INPUT: dynamic, OUTPUT: dynamic}, **legacy)
            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "segdino", json.dumps(meta)
            onnx.save(proto, str(tmp))
    finally:
        model.train(was_training)
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return meta
