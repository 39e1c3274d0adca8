"""`TrainConfig`: every setting of a training run, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from segdino.data.masks import MaskFormat
from segdino.errors import UserError
from segdino.training.loss import BINARY_LOSSES, CLASS_LOSSES

# a decoder's published recipe: settings its authors train it with, the defaults of a run of
# it unless given (SegDINO v2's train.py: bilinear resize, augmentation, torch's AdamW decay)
RECIPES: dict[str, dict] = {
    "v2": {"resize": "bilinear", "augment": True, "weight_decay": 0.01},
}


def with_recipe(values: dict) -> dict:
    """`values` (a run's settings by field name), with the recipe of its decoder filling the
    settings they leave out."""
    return {**RECIPES.get(values.get("decoder", ""), {}), **values}


@dataclass
class TrainConfig:
    """Every setting of a run; `config.json` in the run folder is this, resolved."""

    data_dir: str
    dataset: str
    dino_ckpt: str
    dino_size: str | None = None  # checked against the checkpoint when given
    input_h: int = 256
    input_w: int = 256
    img_dir_name: str = "image"
    label_dir_name: str = "mask"
    img_ext: str | None = None
    mask_ext: str | None = None
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    loss: str | None = None  # bce for one class, ce for more, when not given
    augment: bool = False
    decoder: str = "v1"  # a segdino.models.decoders name
    decoder_channels: int | None = None  # v2's width; None: its default
    resize: str = "bicubic"  # image resampling (segdino.data.transforms.RESIZE)
    cache_features: bool = False  # train the decoder from cached backbone features
    cache_views: int = 1  # cached views per image: 1 plain, the rest augmented
    cache_dtype: str = "float16"
    val_fraction: float = 0.1  # held out of train/ when there is no val/
    folds: int | None = None  # K: cross-validation over train/ and val/ (segdino.cross_validation)
    num_classes: int = 1  # 1: binary; K >= 2: class-index masks, class 0 the background
    class_map: str | None = None  # "value:class,..." for K classes (segdino.data.masks)
    ignore_index: int | None = None  # a mask value that is no class: left out of loss, metrics
    class_names: list[str] | None = None  # K names, background first
    num_workers: int = 4
    seed: int = 42
    device: str | None = None
    amp: str = "none"  # or "bf16"
    dice_thr: float = 0.5
    save_root: str = "runs"
    log: str | None = None  # "tensorboard": scalars beside the CSVs (training/metric_log.py)
    name: str | None = None

    def __post_init__(self) -> None:
        # Resolves the loss for the number of classes and checks the class settings, so
        # that a wrong combination fails before anything runs.
        self.mask_format()
        losses = BINARY_LOSSES if self.num_classes == 1 else CLASS_LOSSES
        self.loss = self.loss or losses[0]
        if self.loss not in losses:
            raise UserError(f"--loss {self.loss}: with --num-classes {self.num_classes}, "
                            f"expected {' or '.join(losses)}")
        if self.decoder_channels is not None and self.decoder != "v2":
            raise UserError(f"--decoder-channels: decoder {self.decoder} has a fixed width "
                            "(only v2 takes it)")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise UserError(f"--class-names: {len(self.class_names)} names for "
                            f"--num-classes {self.num_classes} (name every class, background "
                            "first)")

    @property
    def precision(self) -> str:
        """`--amp` in the terms of `segdino.runtime.autocast`."""
        return "bf16" if self.amp == "bf16" else "fp32"

    def decoder_options(self) -> dict:
        """The decoder's options given (the rest are its defaults)."""
        return {} if self.decoder_channels is None else {"channels": self.decoder_channels}

    def mask_format(self) -> MaskFormat:
        return MaskFormat(self.num_classes, self.class_map, self.ignore_index)
