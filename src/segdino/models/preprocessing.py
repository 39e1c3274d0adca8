"""`Preprocessing`: how images reach the model and how logits become masks."""

from __future__ import annotations

from dataclasses import dataclass

from segdino.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RESIZE


@dataclass
class Preprocessing:
    """How images reach the model and how logits become masks; saved with every checkpoint.

    The defaults are the reference's: 256 x 256 bicubic resize (`resize`; SegDINO v2
    trains with bilinear), ImageNet normalisation,
    foreground where sigmoid > 0.5. `temperature` divides the logits (temperature scaling,
    fitted on held-out predictions; 1 means uncalibrated). A model of K >= 2 classes takes
    the most probable class instead (the threshold is unused) and may record how its mask
    files map to classes (`class_map`, `ignore_index`: see `segdino.data.masks`) and the
    classes' names.
    """

    input_size: tuple[int, int] = (256, 256)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5
    class_map: str | None = None  # "value:class,..."; None: mask values are the classes
    ignore_index: int | None = None
    class_names: tuple[str, ...] | None = None  # K names, background first
    resize: str = "bicubic"  # a segdino.data.transforms.RESIZE name
    temperature: float = 1.0  # logits are divided by it; fitted by segdino.calibration

    @classmethod
    def from_dict(cls, saved: dict) -> Preprocessing:
        """From its JSON form in a checkpoint (older ones have no class fields, and resized
        bicubically)."""
        names = saved.get("class_names")
        resize = saved.get("resize", "bicubic")
        if resize not in RESIZE:
            raise ValueError(f"resize {resize!r}, expected one of {', '.join(RESIZE)}")
        temperature = saved.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not 0 < temperature < float("inf"):
            raise ValueError(f"temperature {temperature!r}, expected a positive number")
        return cls(tuple(saved["input_size"]), tuple(saved["mean"]), tuple(saved["std"]),
                   saved["threshold"], saved.get("class_map"), saved.get("ignore_index"),
                   tuple(names) if names else None, resize, float(temperature))
