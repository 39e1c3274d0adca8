"""`segdino train`: fit the decoder on a dataset, the backbone frozen (`segdino.training`).

The flags are `TrainConfig`'s fields; `--config` and `--resume` read a run's config.json,
each setting checked as its flag would check it.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import asdict, fields
from pathlib import Path

import segdino.argtypes as argtypes
from segdino.backbone.variants import ViTConfig
from segdino.commands.flags import (
    MAX_DEFAULT_WORKERS,
    add_backbone,
    add_progress,
    add_seed,
    add_threshold,
    add_workers,
    default_workers,
    progress_bars,
)
from segdino.cross_validation import ENSEMBLE, cross_validate
from segdino.data.transforms import RESIZE
from segdino.errors import UserError, first_line
from segdino.hub import parse_repo_id
from segdino.models.decoders import DECODERS
from segdino.training.config import TrainConfig, with_recipe
from segdino.training.feature_cache import CACHE_DTYPES
from segdino.training.loop import train
from segdino.training.loss import LOSSES
from segdino.training.metric_log import LOGS

PATCH = ViTConfig.patch_size  # every DINOv3 ViT's; input sizes are whole patches
# What a resumed run may change: none changes what it computes (--dino-ckpt only to weights
# of the same SHA-256, which verify_backbone enforces, or by --allow-other-backbone).
RESUME_MAY_CHANGE = ("epochs", "num_workers", "device", "dino_ckpt", "log")


def configure(parser: argparse.ArgumentParser) -> None:
    # Every setting defaults to None, so that a flag given can be told from one left out
    # (--config and --resume); TrainConfig fills in the defaults.
    d = TrainConfig("", "", "")
    size = argtypes.int_multiple_of(PATCH)
    parser.add_argument("--config", help="a run's config.json: its settings become the "
                        "defaults (flags given here still win)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run "
                        "(only --epochs, --num-workers, --device, --dino-ckpt and --log may "
                        "change)")
    parser.add_argument("--allow-other-backbone", action="store_true", help="with --resume: "
                        "continue on backbone weights other than the run's own")
    parser.add_argument("--data-dir", help="folder holding DATASET/{train,val,test}")
    parser.add_argument("--dataset", help="dataset folder name under --data-dir")
    add_backbone(parser, "DINOv3 weights: Meta .pth, transformers folder, timm safetensors, "
                 "or a Hugging Face Hub id (facebook/dinov3-..., timm/vit_..._dinov3...)")
    parser.add_argument("--dino-size", help="s, s+, b, l, l+, h+ or 7b (checked against "
                        "--dino-ckpt; inferred from it when left out)")
    parser.add_argument("--repo-dir", help="accepted for the reference's commands; not needed")
    parser.add_argument("--input-h", type=size, help=f"default {d.input_h}")
    parser.add_argument("--input-w", type=size, help=f"default {d.input_w}")
    parser.add_argument("--img-dir-name", help=f"default {d.img_dir_name}")
    parser.add_argument("--label-dir-name", help=f"default {d.label_dir_name}")
    parser.add_argument("--img-ext")
    parser.add_argument("--mask-ext")
    parser.add_argument("--epochs", type=argtypes.int_at_least(1), help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=argtypes.int_at_least(1),
                        help=f"default {d.batch_size}")
    parser.add_argument("--lr", type=argtypes.positive_float, help=f"default {d.lr}")
    parser.add_argument("--weight-decay", type=argtypes.non_negative_float,
                        help=f"default {d.weight_decay}")
    parser.add_argument("--loss", choices=LOSSES, help="bce (the default) or bce+dice for one "
                        "class; ce (the default) or ce+dice for --num-classes 2 or more")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="flips, rotation within 15 degrees, colour jitter (SegDINO v2); "
                        "off by default, as in the paper; on in v2's recipe")
    parser.add_argument("--decoder", choices=list(DECODERS), help=f"default {d.decoder}: "
                        "v1 the paper's, v1-proj its newest head (4x finer logits), v2 SegDINO "
                        "v2's TPA + SAD (and its recipe: bilinear resize, --augment, "
                        "--weight-decay 0.01, each overridable)")
    parser.add_argument("--decoder-channels", type=argtypes.int_at_least(1), metavar="N",
                        help="v2's width (default 256; its authors use 512 for harder tasks)")
    parser.add_argument("--resize", choices=list(RESIZE), help="image resampling (default: "
                        f"the decoder's recipe, else {d.resize})")
    parser.add_argument("--cache-features", action="store_true", default=None, help="run the "
                        "frozen backbone once per image and train the decoder from its cached "
                        "features")
    parser.add_argument("--cache-views", type=argtypes.int_at_least(1), help="cached views "
                        "per image: the plain one, and with --augment N-1 augmented ones "
                        f"(default {d.cache_views})")
    parser.add_argument("--cache-dtype", choices=list(CACHE_DTYPES),
                        help=f"default {d.cache_dtype}")
    parser.add_argument("--val-fraction", type=argtypes.fraction_below_one,
                        help=f"held out of train/ for validation when there is no val/ "
                        f"(default {d.val_fraction}; 0: train on all of train/ and keep the "
                        "last epoch's model, the reference's protocol)")
    parser.add_argument("--folds", type=argtypes.int_at_least(2), nargs="?", const=5,
                        metavar="K", help="K-fold cross-validation over train/ and val/ "
                        "(K 5 when the flag is given alone): RUN/fold<k>/ run folders, "
                        "RUN/cv_summary.json, RUN/ensemble.safetensors (calibrated); the "
                        "backbone runs once per image for all folds (features cached)")
    parser.add_argument("--num-classes", type=argtypes.int_at_least(1), help="1 (default): "
                        "binary masks; K >= 2: masks of class indices 0..K-1, 0 the background")
    parser.add_argument("--class-map", metavar="VALUE:CLASS,...", help="mask pixel values to "
                        "classes, e.g. 0:0,128:1,255:2 (default: the values are the classes)")
    parser.add_argument("--ignore-index", type=argtypes.int_at_least(0), metavar="N",
                        help="a mask value (K or more) that is no class: left out of the loss "
                        "and the metrics")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="the K classes' names, background first (for reports)")
    add_workers(parser, help_text="data-loading processes (default: the CPUs this process "
                f"may use, at most {MAX_DEFAULT_WORKERS}; here {default_workers()})")
    add_seed(parser, None, help_text=f"default {d.seed}")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best there is)")
    parser.add_argument("--amp", choices=("none", "bf16"),
                        help=f"bf16 mixed precision, or none (default {d.amp})")
    add_threshold(parser, "dice_thr", f"foreground where the probability is above T, for "
                  f"validation Dice and the checkpoint (default {d.dice_thr})")
    parser.add_argument("--save-root", help=f"default {d.save_root}")
    parser.add_argument("--name", help="run folder name under --save-root")
    parser.add_argument("--log", choices=LOGS, help="also log the step and epoch metrics "
                        "for TensorBoard, in RUN/tensorboard/ (needs segdino[tensorboard]; "
                        "default: steps.csv and metrics.csv only)")
    add_progress(parser)


def _fits(value: object, hint: object) -> bool:
    """Whether a JSON value has the type a TrainConfig field is annotated with."""
    if isinstance(hint, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if isinstance(value, bool) and hint is not bool:  # JSON true is no number
        return False
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint) if isinstance(hint, type) else value is None


def _expected(hint: object) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null"}
    if typing.get_origin(hint) is list:
        return "a list of strings"
    return " or ".join(_expected(h) for h in typing.get_args(hint)) or names[hint]


def read_settings(path: Path, flag: str) -> dict:
    """A config.json's settings, each of the type of its TrainConfig field and accepted by
    its flag (the flags' own argparse types and choices check both)."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} {path}: not a readable JSON file ({first_line(exc)})"
                        ) from None
    if not isinstance(values, dict):
        raise UserError(f"{flag} {path}: expected a JSON object of settings")
    hints = typing.get_type_hints(TrainConfig)
    unknown = set(values) - set(hints)
    if unknown:
        raise UserError(f"{flag} {path}: unknown settings {sorted(unknown)}")
    parser = argparse.ArgumentParser()
    configure(parser)
    actions = {action.dest: action for action in parser._actions}
    for key, value in values.items():
        problem = None
        if not _fits(value, hints[key]):
            problem = f"{json.dumps(value)}: expected {_expected(hints[key])}"
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            action = actions[key]
            if action.choices is not None and value not in action.choices:
                problem = f"{value!r}: expected one of {', '.join(action.choices)}"
            elif action.type is not None:
                try:
                    action.type(str(value))
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    problem = str(exc)
        if problem:
            raise UserError(f"{flag} {path}: setting {key} {problem}")
    return values


def given_settings(args: argparse.Namespace) -> dict:
    """The settings given as flags (argparse leaves the others None)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name) is not None}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: a --config file's values, overridden by flags given explicitly."""
    values = read_settings(Path(args.config), "--config") if args.config else {}
    values.update(given_settings(args))
    # Not TrainConfig's fixed default: the CPUs here (it changes no result, only speed).
    values.setdefault("num_workers", default_workers())
    missing = [f"--{n.replace('_', '-')}" for n in ("data_dir", "dataset", "dino_ckpt")
               if not values.get(n)]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or a --config that sets them)")
    return TrainConfig(**with_recipe(values))


def resumed_config(args: argparse.Namespace, run_dir: Path) -> TrainConfig:
    """The settings of the run in `run_dir`, with the changes a resumed run may make: a flag
    given that would change what the run computes is refused, all of them in one line."""
    if args.config:
        raise UserError(f"--config with --resume {run_dir}: a resumed run keeps its own "
                        "config.json (leave --config out)")
    if not (run_dir / "config.json").is_file():
        raise UserError(f"--resume {run_dir}: no config.json or state.pt there (expected a "
                        "run folder)")
    recorded = read_settings(run_dir / "config.json", "--resume")
    given = given_settings(args)
    defaults = asdict(TrainConfig("", "", ""))

    def shown(value: object) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    changed = [f"--{k.replace('_', '-')} {shown(v)} (run: {shown(recorded.get(k, defaults[k]))})"
               for k, v in given.items()
               if k not in RESUME_MAY_CHANGE and v != recorded.get(k, defaults[k])]
    if changed:
        raise UserError(f"--resume {run_dir}: {', '.join(changed)} would change the run; "
                        "only --epochs, --num-workers, --device, --dino-ckpt and --log may (start "
                        "a new run for the rest)")
    return TrainConfig(**{**recorded, **given})


def check_config(cfg: TrainConfig) -> None:
    if not Path(cfg.dino_ckpt).exists() and parse_repo_id(cfg.dino_ckpt) is None:
        raise UserError(f"--dino-ckpt {cfg.dino_ckpt}: no such file or folder (expected "
                        "DINOv3 weights, e.g. dinov3_vits16_pretrain_lvd1689m-08c60483.pth, "
                        "or a Hub id such as facebook/dinov3-vits16-pretrain-lvd1689m)")


def run(args: argparse.Namespace) -> int:
    if args.repo_dir:
        print("note: --repo-dir is not needed: segdino has its own DINOv3 implementation")
    resume = Path(args.resume) if args.resume else None
    cfg = config_from_args(args) if resume is None else resumed_config(args, resume)
    check_config(cfg)
    if cfg.folds:
        if args.allow_other_backbone:
            raise UserError("--allow-other-backbone: not with --folds (a resumed "
                            "cross-validation keeps its backbone)")
        run_dir = cross_validate(cfg, resume=resume, progress=progress_bars(args))
        print(f"run folder: {run_dir}  (ensemble: {run_dir / ENSEMBLE})")
        return 0
    run_dir = train(cfg, resume=resume, progress=progress_bars(args),
                    allow_other_backbone=args.allow_other_backbone)
    print(f"run folder: {run_dir}  (best: {run_dir / 'best.safetensors'})")
    return 0
