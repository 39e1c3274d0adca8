"""The model card (`README.md`) that `save_pretrained` and `push_to_hub` write.

It always describes the model: the backbone and where its weights come from, the decoder's
layers, classes and preprocessing. Given the training run's folder it adds what the run
recorded: the dataset, the validation split, the scores of the epoch `best.safetensors` was
saved at (from `metrics.csv`), and the command that reproduces the run (rebuilt from
`config.json`); given the `summary.json` of `segdino test`, the test scores.
"""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelCardData

from segdino.atomic import write_text
from segdino.checkpoints.format import metadata, read_metadata
from segdino.errors import UserError
from segdino.models.decoders import ENSEMBLE
from segdino.training.config import RECIPES, TrainConfig

if TYPE_CHECKING:
    from segdino.models.segdino import SegDINO

PAPER = "https://arxiv.org/abs/2509.00833"
# The decoder only works on the backbone's features: the card carries DINOv3's licence.
LICENSE = {"license": "other", "license_name": "dinov3-license",
           "license_link": "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"}


# numbers in summary.json that describe the run of `segdino test`, not the model
NOT_SCORES = ("images_per_second", "threshold")


class SegDINOCard(ModelCard):
    """A model card whose `save` (what the Hub mixin calls) writes atomically."""

    def save(self, filepath: str | Path) -> None:
        write_text(filepath, str(self))


def train_command(config: dict) -> str:
    """The `segdino train` command line that gives a run with this `config.json`: every
    setting that differs from its default, as the flag of the same name."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    defaults.update(RECIPES.get(config.get("decoder"), {}))  # what --decoder alone sets
    argv = ["segdino", "train"]
    for name, value in config.items():
        default = defaults.get(name, MISSING)
        if name not in defaults or value is None or value == default:
            continue  # unknown to this version, unset, or the default
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):  # False differs only for --augment under v2's recipe
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


def _decoder_name(meta: dict) -> str:
    """The decoder as `segdino train --decoder` names it, with its options; an ensemble's
    members as such."""
    if meta["decoder"] == ENSEMBLE:
        members = meta["decoder_options"]["members"]
        return f"an ensemble of {len(members)}: " + "; ".join(_decoder_name(m) for m in members)
    options = ", ".join(f"{k} {v}" for k, v in meta["decoder_options"].items())
    return f"SegDINO {meta['decoder']}" + (f": {options}" if options else "")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable {what} ({exc})") from None


def _read_metrics(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise UserError(f"{path}: not readable ({exc})") from None


def _number(value: object) -> str:
    """A score as the card shows it: 4 decimals, counts as they are, missing as n/a."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, int):
        return str(value)
    try:
        return f"{float(value):.4f}"  # metrics.csv holds strings
    except ValueError:
        return str(value)


def _table(rows: dict) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items()), ""]


def _backbone_section(meta: dict) -> list[str]:
    info = meta["backbone"]
    config = info["config"]
    arch = (f"`{info['arch']}`" if info["arch"] else f"a custom ViT (dim {config['embed_dim']}, "
            f"depth {config['depth']}, {config['num_heads']} heads)")
    lines = ["## Backbone", "",
             f"DINOv3, frozen: {arch}. The decoder reads its blocks "
             f"{', '.join(map(str, meta['layers']))}.", ""]
    if info.get("hub_id"):
        lines += [f"Weights: [{info['hub_id']}](https://huggingface.co/{info['hub_id']}) at "
                  f"commit `{info['hub_revision']}`, which `from_pretrained` fetches through "
                  "the Hugging Face cache (accept the licence there first if it is gated).", ""]
    else:
        lines += [f"Weights: `{info['file']}` (SHA-256 `{info['sha256']}`), not in this "
                  "repository (Meta's DINOv3 licence). Get them from Meta, then set "
                  "`SEGDINO_WEIGHTS` to their folder or pass "
                  "`backbone=\"path/to/file\"` to `from_pretrained`.", ""]
    return lines


def _training_section(run_dir: Path) -> tuple[list[str], str]:
    """The card's training and validation sections, and the dataset's name."""
    config = _read_json(run_dir / "config.json", "run config")
    if config.get("folds"):
        return _cross_validation_section(run_dir, config), str(config.get("dataset"))
    rows = _read_metrics(run_dir / "metrics.csv")
    best_meta = read_metadata(run_dir / "best.safetensors") or {}
    best = next((r for r in rows if str(r.get("epoch")) == str(best_meta.get("epoch"))), None)
    if best is None and rows:  # a checkpoint without its epoch: the best validation Dice
        best = max(rows, key=lambda r: float(r.get("val_dice") or "-inf"))
    dataset = str(config.get("dataset", "unknown"))
    held_out = run_dir / "val_list.txt"
    if rows and "val_dice" not in rows[0]:
        split = "none (`--val-fraction 0`): trained on all of `train/`, the last epoch kept"
    elif held_out.is_file():
        count = len(held_out.read_text().split())
        split = (f"a seeded {float(config.get('val_fraction', 0)):.0%} of `train/` (seed "
                 f"{config.get('seed')}): {count} image{'s' * (count != 1)}, listed in "
                 "`val_list.txt`")
    else:
        split = f"the dataset's own `{dataset}/val/`"
    settings = {
        "dataset": f"`{dataset}`",
        "validation split (chooses the best epoch)": split,
        "test split": f"`{dataset}/test/`, never used while training",
        "input size": f"{config.get('input_h')} x {config.get('input_w')}",
        "epochs": config.get("epochs"),
        "batch size": config.get("batch_size"),
        "optimizer": f"AdamW, lr {config.get('lr')}, weight decay {config.get('weight_decay')}",
        "loss": config.get("loss"),
        "augmentation": "on" if config.get("augment") else "off",
    }
    lines = ["## Training", "", *_table(settings)]
    scores = {k: _number(v) for k, v in (best or {}).items() if k.startswith("val_")}
    if scores:
        lines += [f"### Validation, epoch {best['epoch']} of {len(rows)} (`best.safetensors`)",
                  "", *_table(scores)]
    lines += ["### Reproduce", "", "```bash", train_command(config), "```", ""]
    return lines, dataset


def _cross_validation_section(run_dir: Path, config: dict) -> list[str]:
    """A cross-validation run's card section (`segdino train --folds`: its cv_summary.json)."""
    summary = _read_json(run_dir / "cv_summary.json", "cross-validation summary")
    cal = summary["calibration"]
    scores = {m: f"{_number(summary['mean'][m])} +- {_number(summary['sd'][m])}"
              for m in summary["mean"]}
    return ["## Training: cross-validation", "",
            f"{summary['k']} folds of `{config.get('dataset')}`'s train/ and val/ images "
            f"({summary['rule']}); one decoder per fold, the {summary['k']} averaged as an "
            f"ensemble, calibrated with temperature {cal['temperature']:.3f} (pixel ECE "
            f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after, out of fold).", "",
            "### Out of fold (mean +- sd over the folds)", "", *_table(scores),
            "### Reproduce", "", "```bash", train_command(config), "```", ""]


def _test_section(summary_path: Path) -> list[str]:
    summary = _read_json(summary_path, "test summary")
    scores = {k: _number(v) for k, v in summary.items() if k not in NOT_SCORES and (
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)))}
    about = ", ".join(f"{k} {summary[k]}" for k in ("eval_size", "hd95_variant") if k in summary)
    return ["## Test", "", f"`segdino test` on the test split{f' ({about})' if about else ''}:",
            "", *_table(scores)]


def _usage_section(model: SegDINO, repo_id: str) -> list[str]:
    lines = ["## Use", "", "```python", "import segdino", "",
             f'model = segdino.SegDINO.from_pretrained("{repo_id}")']
    if model.num_classes == 1:
        lines += ["predictor = segdino.Predictor(model)",
                  'mask = predictor("image.png")  # bool H x W, at the image\'s own size']
    else:
        lines += ["logits = model(images)  # (B, classes, H, W) for normalised images"]
    return [*lines, "```", ""]


def model_card(
    model: SegDINO,
    run_dir: str | Path | None = None,
    test_summary: str | Path | None = None,
    repo_id: str | None = None,
) -> SegDINOCard:
    """The card of `model`; `run_dir` (a `segdino train` run folder) and `test_summary`
    (`segdino test`'s summary.json) add the training and test sections; `repo_id` is the
    repository the usage example loads (default: a placeholder)."""
    meta = metadata(model)
    training, dataset = _training_section(Path(run_dir)) if run_dir is not None else ([], None)
    info = meta["backbone"]
    data = ModelCardData(**model._hub_mixin_info.model_card_data.to_dict(), **LICENSE)
    if info.get("hub_id"):
        data.base_model = info["hub_id"]
    pre = meta["preprocessing"]
    title = f"SegDINO on DINOv3 {info['arch'] or 'ViT'}" + (f" for {dataset}" if dataset else "")
    body = [
        f"# {title}", "",
        f"A [SegDINO]({PAPER}) model: a frozen DINOv3 vision transformer and a light decoder "
        f"({_decoder_name(meta)}, {sum(p.numel() for p in model.head.parameters()):,} "
        f"parameters, {model.num_classes} class{'es' if model.num_classes > 1 else ''}), made "
        f"with segdino. Inputs are resized ({pre['resize']}) to {pre['input_size'][0]} x "
        f"{pre['input_size'][1]} and normalised with mean "
        f"{pre['mean']} and std {pre['std']}; masks come back at each image's own size.", "",
        *_usage_section(model, repo_id or "OWNER/NAME"),
        *_backbone_section(meta),
        *training,
        *(_test_section(Path(test_summary)) if test_summary is not None else []),
    ]
    return SegDINOCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
