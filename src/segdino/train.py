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
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from segdino import metrics
from segdino.argtypes import int_at_least, open_unit_float
from segdino.atomic import atomic_path, check_writable_folder, write_text
from segdino.backbone import load_backbone, resolve_arch
from segdino.backbone.formats import torch_load
from segdino.checkpoint import save_segdino
from segdino.data.dataset import SegmentationDataset, find_pairs
from segdino.data.holdout import holdout
from segdino.data.masks import IGNORE_INDEX, MaskFormat
from segdino.data.transforms import denormalise
from segdino.errors import UserError
from segdino.feature_cache import CACHE_DTYPES, build_cache
from segdino.hub import parse_repo_id
from segdino.model import Preprocessing, SegDINO
from segdino.runtime import autocast, keep_freed_memory, pick_device
from segdino.visualize import grid, overlay, save_curves, save_png

BINARY_LOSSES = ("bce", "bce+dice")  # one class: sigmoid
CLASS_LOSSES = ("ce", "ce+dice")  # K >= 2 classes: softmax
LOSSES = BINARY_LOSSES + CLASS_LOSSES


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
    cache_features: bool = False  # train the decoder from cached backbone features
    cache_views: int = 1  # cached views per image: 1 plain, the rest augmented
    cache_dtype: str = "float16"
    val_fraction: float = 0.1  # held out of train/ when there is no val/
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
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise UserError(f"--class-names: {len(self.class_names)} names for "
                            f"--num-classes {self.num_classes} (name every class, background "
                            "first)")

    @property
    def precision(self) -> str:
        """`--amp` in the terms of `segdino.runtime.autocast`."""
        return "bf16" if self.amp == "bf16" else "fp32"

    def mask_format(self) -> MaskFormat:
        return MaskFormat(self.num_classes, self.class_map, self.ignore_index)


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per image and channel, averaged; both (B, C, H, W)."""
    prob, target = prob.flatten(2), target.flatten(2)
    overlap = (prob * target).sum(2)
    return (1 - (2 * overlap + 1) / (prob.sum(2) + target.sum(2) + 1)).mean()


def compute_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss `kind` of a batch. One class: BCE (+ soft Dice of the sigmoid) against 0/1
    masks (B, 1, H, W). K classes: cross-entropy (+ soft Dice of the softmax over the
    foreground classes) against class indices (B, H, W), pixels IGNORE_INDEX left out."""
    if kind in BINARY_LOSSES:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss + dice_loss(logits.sigmoid(), target) if kind == "bce+dice" else loss
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    if kind == "ce":
        return loss
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2)
    return loss + dice_loss((logits.softmax(1) * valid)[:, 1:], (onehot * valid)[:, 1:].float())


def split_pairs(cfg: TrainConfig) -> tuple[list, list, bool]:
    """Train and validation pairs: `val/` when present, else a seeded hold-out of `train/`
    (the third value says which)."""
    root = Path(cfg.data_dir) / cfg.dataset
    if not (root / "train").is_dir():
        raise UserError(f"{root / 'train'}: no such folder (expected DATA_DIR/DATASET/train/"
                        f"{{{cfg.img_dir_name},{cfg.label_dir_name}}}; see --data-dir, --dataset)")
    find = {"img_dir_name": cfg.img_dir_name, "mask_dir_name": cfg.label_dir_name,
            "img_ext": cfg.img_ext, "mask_ext": cfg.mask_ext, "mask_format": cfg.mask_format()}
    train_pairs = find_pairs(root / "train", **find)
    if (root / "val").is_dir():
        return train_pairs, find_pairs(root / "val", **find), False
    return (*holdout(train_pairs, cfg.val_fraction, cfg.seed), True)


def build_model(cfg: TrainConfig) -> SegDINO:
    backbone = load_backbone(cfg.dino_ckpt, arch=resolve_arch(cfg.dino_size)
                             if cfg.dino_size else None)
    model = SegDINO(backbone, cfg.num_classes)
    model.preprocessing = Preprocessing(
        input_size=(cfg.input_h, cfg.input_w), threshold=cfg.dice_thr, class_map=cfg.class_map,
        ignore_index=cfg.ignore_index,
        class_names=tuple(cfg.class_names) if cfg.class_names else None)
    return model


def batch_masks(logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """A batch's predicted and true masks (B, H, W) in NumPy: bool for one class (sigmoid
    above --dice-thr), else class indices (argmax; ignored truth pixels IGNORE_INDEX)."""
    if cfg.num_classes == 1:
        return ((logits.float().sigmoid() > cfg.dice_thr).cpu().numpy()[:, 0],
                masks.cpu().numpy()[:, 0] > 0.5)
    return logits.argmax(1).cpu().numpy(), masks.cpu().numpy()


def cache_name(split: str, ranks: Ranks) -> str:
    """Each rank caches its own share, in its own file when on disk."""
    return split if ranks.world == 1 else f"{split}{ranks.rank}"


class TrainingStep(nn.Module):
    """What one step runs: the whole model on images, or the decoder on cached features."""

    def __init__(self, model: SegDINO, cached: bool, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.cached, self.size = model, cached, size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.cached:
            return self.model.decode(inputs, self.size)
        return self.model(inputs)


@torch.no_grad()
def validate(step: TrainingStep, loader: DataLoader, images: Dataset, cfg: TrainConfig,
             device: torch.device) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean loss, Dice and IoU at the input size (for K classes, the mean over the foreground
    classes), and overlays of the first images (`images` holds them, for when `loader`
    yields cached features)."""
    step.model.eval()
    losses, dices, ious, tiles = [], [], [], []
    for inputs, masks, index in loader:
        inputs, masks = inputs.to(device), masks.to(device)
        with autocast(device, cfg.precision):
            logits = step(inputs)
        losses.append(compute_loss(logits.float(), masks, cfg.loss).item() * len(inputs))
        preds, truths = batch_masks(logits, masks, cfg)
        for i, pred, truth in zip(index.tolist(), preds, truths, strict=True):
            dices.append(metrics.foreground_mean(metrics.dice, pred, truth, cfg.num_classes))
            ious.append(metrics.foreground_mean(metrics.iou, pred, truth, cfg.num_classes))
            if len(tiles) < 8:
                tiles.append(overlay(denormalise(images[i][0]), pred, truth, cfg.num_classes))
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


def batch_dice(logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig) -> list[float]:
    """The Dice of each image of a training batch (for the progress bar); for K classes,
    the mean over the foreground classes."""
    return [metrics.foreground_mean(metrics.dice, p, t, cfg.num_classes)
            for p, t in zip(*batch_masks(logits, masks, cfg), strict=True)]


@dataclass
class Ranks:
    """This process's place among the training processes (torchrun sets the environment)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Ranks(dist.get_rank(), world), device


def reduce_means(means: dict[str, float], count: int, ranks: Ranks) -> dict[str, float]:
    """Means over every rank's share, weighted by how many images each rank saw."""
    if ranks.world == 1:
        return means
    keys = sorted(means)
    totals = torch.tensor([means[k] * count for k in keys] + [count], dtype=torch.float64)
    dist.all_reduce(totals)
    return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)}


def train(cfg: TrainConfig, resume: Path | None = None, progress: bool = True) -> Path:
    """Run (or resume) training; returns the run folder."""
    device = pick_device(cfg.device)
    ranks, device = init_distributed(device)
    if device.type == "cpu":
        keep_freed_memory()
    progress = progress and ranks.main
    if cfg.batch_size % ranks.world:
        raise UserError(f"--batch-size {cfg.batch_size}: the global batch must divide evenly "
                        f"among the {ranks.world} processes")
    name = cfg.name or f"{cfg.dataset}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = resume or Path(cfg.save_root) / name
    check_writable_folder(run_dir, "--resume" if resume else "--save-root")
    if resume is None and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: run folder exists and is not empty (choose another "
                        f"--name, or continue it with --resume {run_dir})")
    torch.manual_seed(cfg.seed)  # the decoder's initial weights
    model = build_model(cfg).to(device)
    train_pairs, val_pairs, held_out = split_pairs(cfg)
    if ranks.world > 1:
        dist.barrier()  # every rank has checked the run folder before rank 0 writes to it
    # Everything is checked: only now does the run folder appear.
    run_dir.mkdir(parents=True, exist_ok=True)
    if ranks.main and resume is None:
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    if ranks.main and held_out:
        write_text(run_dir / "val_list.txt", "".join(f"{image.name}\n" for image, _ in val_pairs))
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    size = (cfg.input_h, cfg.input_w)
    pin = device.type == "cuda"
    if cfg.cache_features:
        # Each rank caches its own fixed share and shuffles within it.
        shard = train_pairs[ranks.rank :: ranks.world]
        source = build_cache(
            model, SegmentationDataset(shard, size, mask_format=cfg.mask_format()),
            SegmentationDataset(shard, size, augment=True, mask_format=cfg.mask_format())
            if cfg.augment else None,
            cfg.cache_views, cfg.cache_dtype, run_dir, device, cfg.seed + ranks.rank,
            cfg.batch_size, cfg.num_workers, progress, cache_name("train", ranks), ranks.main)
        sampler = DistributedSampler(source, num_replicas=1, rank=0, seed=cfg.seed + ranks.rank)
    else:
        source = SegmentationDataset(train_pairs, size, augment=cfg.augment,
                                     mask_format=cfg.mask_format())
        sampler = DistributedSampler(source, num_replicas=ranks.world, rank=ranks.rank,
                                     seed=cfg.seed)
    step_module = TrainingStep(model, cfg.cache_features, size)
    step = step_module
    if ranks.world > 1:
        step = DistributedDataParallel(step_module, broadcast_buffers=False)
    val_share = val_pairs[ranks.rank :: ranks.world]
    val_set = SegmentationDataset(val_share, size, mask_format=cfg.mask_format())
    val_source = val_set
    if cfg.cache_features:  # validation is never augmented: one view, no backbone afterwards
        val_source = build_cache(model, val_set, None, 1, cfg.cache_dtype, run_dir, device,
                                 cfg.seed, cfg.batch_size, cfg.num_workers, progress,
                                 cache_name("val", ranks), ranks.main)
    val_loader = DataLoader(val_source, batch_size=cfg.batch_size,
                            num_workers=0 if cfg.cache_features else cfg.num_workers,
                            pin_memory=pin)
    history: list[dict] = []
    best, start = -math.inf, 0
    if resume is not None:
        state = torch_load(run_dir / "state.pt")
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = json.loads(state["history"]), state["best"], state["epoch"] + 1
        if ranks.main:
            print(f"resuming {run_dir} after epoch {start}/{cfg.epochs}")

    for epoch in range(start, cfg.epochs):
        # Shuffling, worker seeds and augmentation draw from RNGs seeded by (seed, epoch):
        # an epoch's randomness does not depend on whether the run was interrupted before it.
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + ranks.rank)
        sampler.set_epoch(epoch)
        if cfg.cache_features:
            source.set_epoch(epoch)
        loader = DataLoader(source, batch_size=cfg.batch_size // ranks.world, sampler=sampler,
                            num_workers=0 if cfg.cache_features else cfg.num_workers,
                            pin_memory=pin, generator=torch.Generator().manual_seed(
                                epoch_seed(cfg.seed, epoch) + ranks.rank))
        model.train()
        started, seen, loss_sum, dice_sum = time.time(), 0, 0.0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress)
        for inputs, masks, _ in bar:
            inputs, masks = inputs.to(device), masks.to(device)
            with autocast(device, cfg.precision):
                logits = step(inputs)
            loss = compute_loss(logits.float(), masks, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                dice_sum += sum(batch_dice(logits, masks, cfg))
            seen += len(inputs)
            loss_sum += loss.item() * len(inputs)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", dice=f"{dice_sum / seen:.4f}")

        train_means = reduce_means({"train_loss": loss_sum / seen, "train_dice": dice_sum / seen},
                                   seen, ranks)
        val, tiles = validate(step_module, val_loader, val_set, cfg, device)
        val = reduce_means(val, len(val_share), ranks)
        if not ranks.main:
            continue
        row = {"epoch": epoch + 1, **train_means, **val,
               "seconds": round(time.time() - started, 2)}
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
    if ranks.world > 1:
        dist.barrier()  # rank 0's last checkpoint is written before anyone leaves
    return run_dir


# ---- command line -------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig("", "", "")
    parser.add_argument("--config", help="a run's config.json: its settings become the "
                        "defaults (flags given here still win)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--data-dir", help="folder holding DATASET/{train,val,test}")
    parser.add_argument("--dataset", help="dataset folder name under --data-dir")
    parser.add_argument("--dino-ckpt", help="DINOv3 weights: Meta .pth, transformers folder, "
                        "timm safetensors, or a Hugging Face Hub id (facebook/dinov3-..., "
                        "timm/vit_..._dinov3...)")
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
    parser.add_argument("--batch-size", type=int_at_least(1), default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--loss", choices=LOSSES, help="bce (the default) or bce+dice for one "
                        "class; ce (the default) or ce+dice for --num-classes 2 or more")
    parser.add_argument("--augment", action="store_true", help="flips, rotation within 15 "
                        "degrees, colour jitter (SegDINO v2); off by default, as in the paper")
    parser.add_argument("--cache-features", action="store_true", help="run the frozen "
                        "backbone once per image and train the decoder from its cached features")
    parser.add_argument("--cache-views", type=int, default=d.cache_views, help="cached views "
                        "per image: the plain one, and with --augment N-1 augmented ones")
    parser.add_argument("--cache-dtype", choices=list(CACHE_DTYPES), default=d.cache_dtype)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction,
                        help="held out of train/ for validation when there is no val/")
    parser.add_argument("--num-classes", type=int, default=d.num_classes, help="1 (default): "
                        "binary masks; K >= 2: masks of class indices 0..K-1, 0 the background")
    parser.add_argument("--class-map", metavar="VALUE:CLASS,...", help="mask pixel values to "
                        "classes, e.g. 0:0,128:1,255:2 (default: the values are the classes)")
    parser.add_argument("--ignore-index", type=int, metavar="N", help="a mask value (K or more) "
                        "that is no class: left out of the loss and the metrics")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="the K classes' names, background first (for reports)")
    parser.add_argument("--num-workers", type=int_at_least(0), default=d.num_workers)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best there is)")
    parser.add_argument("--amp", choices=("none", "bf16"), default=d.amp,
                        help="bf16 mixed precision")
    parser.add_argument("--dice-thr", type=open_unit_float, default=d.dice_thr)
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
    if not Path(cfg.dino_ckpt).exists() and parse_repo_id(cfg.dino_ckpt) is None:
        raise UserError(f"--dino-ckpt {cfg.dino_ckpt}: no such file or folder (expected "
                        "DINOv3 weights, e.g. dinov3_vits16_pretrain_lvd1689m-08c60483.pth, "
                        "or a Hub id such as facebook/dinov3-vits16-pretrain-lvd1689m)")


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
