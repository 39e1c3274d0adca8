"""`segdino train`: fit the decoder on a dataset, the backbone frozen. Read top to bottom.

One run folder holds everything a run makes: the resolved `config.json` (rerun it with
`--config`), `metrics.csv`, `curves.png`, `val_overlays.png`, the `best.safetensors` (best
validation Dice; never chosen on test) and `last.safetensors` checkpoints, and `state.pt`
from which `--resume` continues. Every epoch reseeds the RNGs from (seed, epoch), so an
interrupted run resumed from its last finished epoch ends with the weights it would have had.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from segdino import metrics
from segdino.atomic import atomic_path, write_text
from segdino.backbone import load_backbone, resolve_arch
from segdino.backbone.formats import torch_load
from segdino.checkpoint import save_segdino
from segdino.data.dataset import SegmentationDataset, find_pairs
from segdino.data.holdout import holdout
from segdino.data.transforms import denormalise
from segdino.errors import UserError
from segdino.model import Preprocessing, SegDINO
from segdino.runtime import autocast, pick_device
from segdino.visualize import grid, overlay, save_curves, save_png

LOSSES = ("bce", "bce+dice")


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
    loss: str = "bce"
    augment: bool = False
    val_fraction: float = 0.1  # held out of train/ when there is no val/
    num_classes: int = 1
    num_workers: int = 4
    seed: int = 42
    device: str | None = None
    amp: str = "none"  # or "bf16"
    dice_thr: float = 0.5
    save_root: str = "runs"
    name: str | None = None


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image, averaged."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    return (1 - (2 * overlap + 1) / (prob.sum(1) + target.sum(1) + 1)).mean()


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return loss + dice_loss(logits, target) if kind == "bce+dice" else loss


def split_pairs(cfg: TrainConfig) -> tuple[list, list, bool]:
    """Train and validation pairs: `val/` when present, else a seeded hold-out of `train/`
    (the third value says which)."""
    root = Path(cfg.data_dir) / cfg.dataset
    if not (root / "train").is_dir():
        raise UserError(f"{root / 'train'}: no such folder (expected DATA_DIR/DATASET/train/"
                        f"{{{cfg.img_dir_name},{cfg.label_dir_name}}}; see --data-dir, --dataset)")
    find = {"img_dir_name": cfg.img_dir_name, "mask_dir_name": cfg.label_dir_name,
            "img_ext": cfg.img_ext, "mask_ext": cfg.mask_ext}
    train_pairs = find_pairs(root / "train", **find)
    if (root / "val").is_dir():
        return train_pairs, find_pairs(root / "val", **find), False
    return (*holdout(train_pairs, cfg.val_fraction, cfg.seed), True)


def build_model(cfg: TrainConfig) -> SegDINO:
    backbone = load_backbone(cfg.dino_ckpt, arch=resolve_arch(cfg.dino_size)
                             if cfg.dino_size else None)
    if cfg.num_classes != 1:
        raise UserError(f"--num-classes {cfg.num_classes}: only binary segmentation (1) "
                        "is supported so far")
    model = SegDINO(backbone, cfg.num_classes)
    model.preprocessing = Preprocessing(input_size=(cfg.input_h, cfg.input_w),
                                        threshold=cfg.dice_thr)
    return model


@torch.no_grad()
def validate(model: SegDINO, loader: DataLoader, cfg: TrainConfig, device: torch.device
             ) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean loss, Dice and IoU at the input size, and overlays of the first images."""
    model.eval()
    losses, dices, ious, tiles = [], [], [], []
    for images, masks, _ in loader:
        images, masks = images.to(device), masks.to(device)
        with autocast(device, "bf16" if cfg.amp == "bf16" else "fp32"):
            logits = model(images)
        losses.append(compute_loss(logits.float(), masks, cfg.loss).item() * len(images))
        preds = (logits.float().sigmoid() > cfg.dice_thr).cpu().numpy()[:, 0]
        truths = masks.cpu().numpy()[:, 0] > 0.5
        for image, pred, truth in zip(images.cpu(), preds, truths, strict=True):
            dices.append(metrics.dice(pred, truth))
            ious.append(metrics.iou(pred, truth))
            if len(tiles) < 8:
                tiles.append(overlay(denormalise(image), pred, truth))
    n = max(len(dices), 1)
    return {"val_loss": sum(losses) / n, "val_dice": float(np.mean(dices)),
            "val_iou": float(np.mean(ious))}, tiles


def write_metrics(history: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def save_state(path: Path, model: SegDINO, optimizer: torch.optim.Optimizer, epoch: int,
               history: list[dict], best: float) -> None:
    state = {"head": model.head.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "history": json.dumps(history), "best": best}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def train(cfg: TrainConfig, resume: Path | None = None, progress: bool = True) -> Path:
    """Run (or resume) training; returns the run folder."""
    name = cfg.name or f"{cfg.dataset}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = resume or Path(cfg.save_root) / name
    if resume is None and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: run folder exists and is not empty (choose another "
                        f"--name, or continue it with --resume {run_dir})")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the decoder's initial weights
    model = build_model(cfg).to(device)
    train_pairs, val_pairs, held_out = split_pairs(cfg)
    # Everything is checked: only now does the run folder appear.
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    if held_out:
        write_text(run_dir / "val_list.txt", "".join(f"{image.name}\n" for image, _ in val_pairs))
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    size = (cfg.input_h, cfg.input_w)
    train_set = SegmentationDataset(train_pairs, size, augment=cfg.augment)
    val_loader = DataLoader(SegmentationDataset(val_pairs, size), batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    history: list[dict] = []
    best, start = -math.inf, 0
    if resume is not None:
        state = torch_load(run_dir / "state.pt")
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = json.loads(state["history"]), state["best"], state["epoch"] + 1
        print(f"resuming {run_dir} after epoch {start}/{cfg.epochs}")
    precision = "bf16" if cfg.amp == "bf16" else "fp32"
    for epoch in range(start, cfg.epochs):
        # Shuffling, worker seeds and augmentation draw from RNGs seeded by (seed, epoch):
        # an epoch's randomness does not depend on whether the run was interrupted before it.
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))
        model.train()
        started, seen, loss_sum, dice_sum = time.time(), 0, 0.0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress)
        for images, masks, _ in bar:
            images, masks = images.to(device), masks.to(device)
            with autocast(device, precision):
                logits = model(images)
            loss = compute_loss(logits.float(), masks, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                preds = (logits.float().sigmoid() > cfg.dice_thr).cpu().numpy()[:, 0]
                truths = masks.cpu().numpy()[:, 0] > 0.5
                batch_dice = [metrics.dice(p, t) for p, t in zip(preds, truths, strict=True)]
            seen += len(images)
            loss_sum += loss.item() * len(images)
            dice_sum += sum(batch_dice)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", dice=f"{dice_sum / seen:.4f}")

        val, tiles = validate(model, val_loader, cfg, device)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_dice": dice_sum / seen,
               **val, "seconds": round(time.time() - started, 2)}
        history.append(row)
        extra = {"epoch": epoch + 1, "dataset": cfg.dataset, "val_dice": val["val_dice"]}
        save_segdino(model, run_dir / "last.safetensors", cfg.dino_ckpt, extra)
        improved = val["val_dice"] > best
        if improved:
            best = val["val_dice"]
            save_segdino(model, run_dir / "best.safetensors", cfg.dino_ckpt, extra)
            save_png(grid(tiles), run_dir / "val_overlays.png")
        write_metrics(history, run_dir / "metrics.csv")
        save_curves(history, run_dir / "curves.png")
        save_state(run_dir / "state.pt", model, optimizer, epoch, history, best)
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
              f"val loss {val['val_loss']:.4f}  val Dice {val['val_dice']:.4f}  "
              f"val IoU {val['val_iou']:.4f}  {row['seconds']:.1f}s" + ("  *best" if improved
                                                                        else ""), flush=True)
    return run_dir


# ---- command line -------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig("", "", "")
    parser.add_argument("--config", help="a run's config.json: its settings become the "
                        "defaults (flags given here still win)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--data-dir", help="folder holding DATASET/{train,val,test}")
    parser.add_argument("--dataset", help="dataset folder name under --data-dir")
    parser.add_argument("--dino-ckpt", help="DINOv3 weights: Meta .pth, transformers folder "
                        "or timm safetensors")
    parser.add_argument("--dino-size", help="s, s+, b, l, l+, h+ or 7b (checked against "
                        "--dino-ckpt; inferred from it when left out)")
    parser.add_argument("--repo-dir", help="accepted for the reference's commands; not needed")
    parser.add_argument("--input-h", type=int, default=d.input_h)
    parser.add_argument("--input-w", type=int, default=d.input_w)
    parser.add_argument("--img-dir-name", default=d.img_dir_name)
    parser.add_argument("--label-dir-name", default=d.label_dir_name)
    parser.add_argument("--img-ext", default=d.img_ext)
    parser.add_argument("--mask-ext", default=d.mask_ext)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--loss", choices=LOSSES, default=d.loss)
    parser.add_argument("--augment", action="store_true", help="flips, rotation within 15 "
                        "degrees, colour jitter (SegDINO v2); off by default, as in the paper")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction,
                        help="held out of train/ for validation when there is no val/")
    parser.add_argument("--num-classes", type=int, default=d.num_classes)
    parser.add_argument("--num-workers", type=int, default=d.num_workers)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best there is)")
    parser.add_argument("--amp", choices=("none", "bf16"), default=d.amp,
                        help="bf16 mixed precision")
    parser.add_argument("--dice-thr", type=float, default=d.dice_thr)
    parser.add_argument("--save-root", default=d.save_root)
    parser.add_argument("--name", help="run folder name under --save-root")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace, parser_defaults: dict) -> TrainConfig:
    """The run's settings: a --config file's values, overridden by flags given explicitly."""
    names = {f.name for f in fields(TrainConfig)}
    values = {}
    if args.config:
        path = Path(args.config)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--config {path}: not a readable JSON file ({exc})") from None
        unknown = set(values) - names
        if unknown:
            raise UserError(f"--config {path}: unknown settings {sorted(unknown)}")
    for name in names:
        given = getattr(args, name)
        if name not in values or (given is not None and given != parser_defaults.get(name)):
            values[name] = given
    missing = [f"--{n.replace('_', '-')}" for n in ("data_dir", "dataset", "dino_ckpt")
               if not values.get(n)]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or a --config that sets them)")
    return TrainConfig(**values)


def check_config(cfg: TrainConfig) -> None:
    for flag, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size),
                        ("--input-h", cfg.input_h), ("--input-w", cfg.input_w)):
        if value < 1:
            raise UserError(f"{flag} {value}: expected a positive number")
    if not Path(cfg.dino_ckpt).exists():
        raise UserError(f"--dino-ckpt {cfg.dino_ckpt}: no such file or folder (expected "
                        "DINOv3 weights, e.g. dinov3_vits16_pretrain_lvd1689m-08c60483.pth)")


def run(args: argparse.Namespace) -> int:
    if args.repo_dir:
        print("note: --repo-dir is not needed: segdino has its own DINOv3 implementation")
    resume = Path(args.resume) if args.resume else None
    if resume is not None:
        if not (resume / "state.pt").is_file():
            raise UserError(f"--resume {resume}: no state.pt there (expected a run folder)")
        args.config = args.config or str(resume / "config.json")
    cfg = config_from_args(args, {f.name: f.default for f in fields(TrainConfig)})
    check_config(cfg)
    run_dir = train(cfg, resume=resume, progress=not args.no_progress)
    print(f"run folder: {run_dir}  (best: {run_dir / 'best.safetensors'})")
    return 0
