"""`segdino train`: fit the decoder on a dataset, the backbone frozen. Read top to bottom.

One run folder holds everything a run makes: the resolved `config.json` (rerun it with
`--config`), `metrics.csv`, `curves.png`, `val_overlays.png`, the `best.safetensors` (best
validation Dice; never chosen on test) and `last.safetensors` checkpoints, and `state.pt`
from which `--resume` continues. Every epoch reseeds the RNGs from (seed, epoch), so an
interrupted run resumed from its last finished epoch ends with the weights it would have had.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import io
import json
import math
import os
import time
import types
import typing
from collections.abc import Iterator
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

from segdino import argtypes, metrics
from segdino.atomic import atomic_path, check_writable_folder, write_text
from segdino.backbone import load_backbone, resolve_arch
from segdino.backbone.formats import torch_load
from segdino.backbone.variants import ViTConfig
from segdino.checkpoint import read_metadata, save_segdino, verify_backbone
from segdino.data.dataset import SegmentationDataset, find_pairs
from segdino.data.holdout import holdout
from segdino.data.masks import IGNORE_INDEX, MaskFormat
from segdino.data.transforms import denormalise
from segdino.errors import UserError, first_line
from segdino.feature_cache import CACHE_DTYPES, build_cache
from segdino.hub import parse_repo_id
from segdino.model import Preprocessing, SegDINO
from segdino.runtime import autocast, batches, keep_freed_memory, pick_device, quiet_worker
from segdino.visualize import grid, overlay, save_curves, save_png

BINARY_LOSSES = ("bce", "bce+dice")  # one class: sigmoid
CLASS_LOSSES = ("ce", "ce+dice")  # K >= 2 classes: softmax
LOSSES = BINARY_LOSSES + CLASS_LOSSES
PATCH = ViTConfig.patch_size  # every DINOv3 ViT's; input sizes are whole patches
LOCK_FILE = "train.lock"
RUN_MARKERS = ("config.json", "state.pt")  # a folder holding one is a run's
# What a resumed run may change: none changes what it computes (--dino-ckpt only to weights
# of the same SHA-256, which verify_backbone enforces, or by --allow-other-backbone).
RESUME_MAY_CHANGE = ("epochs", "num_workers", "device", "dino_ckpt")


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
    for inputs, masks, index in batches(loader):
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


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/train.lock meanwhile, so that a second `segdino train` into the same folder
    is refused rather than both writing its checkpoints. The OS drops the lock when the
    process ends, however it ends: a killed run never leaves its folder locked."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{run_dir}: another segdino train is running in this run folder (it "
                        f"holds {LOCK_FILE}); wait for it to end, or choose another --name"
                        ) from None
    try:
        yield
    finally:
        os.close(fd)


def check_not_foreign(run_dir: Path) -> None:
    """Refuse a run folder that holds files, but no run (checked before it is locked, which
    would add a file to it)."""
    if (run_dir.is_dir() and not any((run_dir / name).exists() for name in RUN_MARKERS)
            and any(p.name != LOCK_FILE for p in run_dir.iterdir())):
        raise UserError(f"{run_dir}: folder exists, is not empty and holds no run (choose "
                        "another --name)")


def read_state(run_dir: Path, resuming: bool, announce: bool) -> dict | None:
    """The state to continue from, or None to start afresh: in a new folder, or in one whose
    run was interrupted before its first state.pt (said when `announce`)."""
    if (run_dir / "state.pt").is_file():
        if not resuming:
            raise UserError(f"{run_dir}: run folder exists and is not empty (choose another "
                            f"--name, or continue it with --resume {run_dir})")
        return torch_load(run_dir / "state.pt")
    if (run_dir / "config.json").is_file() and announce:
        print(f"restarting {run_dir}: its run was interrupted before its first epoch ended "
              "(no state.pt)", flush=True)
    return None


def check_finite(value: float, epoch: int, what: str, cfg: TrainConfig) -> None:
    """Stop a diverged run before it saves anything of the epoch."""
    if not math.isfinite(value):
        raise UserError(f"training diverged in epoch {epoch + 1}: the {what} is {value} "
                        f"(try a lower --lr than {cfg.lr:g}); nothing of epoch {epoch + 1} "
                        "was saved")


def train(cfg: TrainConfig, resume: Path | None = None, progress: bool = True,
          allow_other_backbone: bool = False) -> Path:
    """Run (or resume) training; returns the run folder. `resume` continues the run folder
    from its state.pt (one without is restarted), on the same backbone weights unless
    `allow_other_backbone`."""
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
    check_not_foreign(run_dir)
    with contextlib.ExitStack() as lock:
        # An existing folder is locked at once, so that a second `train` into it is refused
        # before it loads anything; a new one once it is made, after every check.
        locked = ranks.main and run_dir.is_dir()
        if locked:
            lock.enter_context(run_lock(run_dir))
        state = read_state(run_dir, resume is not None, ranks.main)
        if state is not None:
            if cfg.epochs <= state["epoch"]:
                raise UserError(f"--epochs {cfg.epochs}: the run has finished "
                                f"{state['epoch'] + 1} epochs already (expected at least that)")
            recorded = (read_metadata(run_dir / "last.safetensors") or {}).get("backbone", {})
            verify_backbone(recorded.get("sha256", ""), cfg.dino_ckpt, allow_other_backbone,
                                run_dir)
        torch.manual_seed(cfg.seed)  # the decoder's initial weights
        model = build_model(cfg).to(device)
        if state is not None and model.backbone.config.to_dict() != recorded.get("config"):
            raise UserError(f"--dino-ckpt {cfg.dino_ckpt}: another architecture than the "
                            f"run's {recorded.get('arch') or 'backbone'}: its decoder cannot "
                            "continue on it")
        train_pairs, val_pairs, held_out = split_pairs(cfg)
        if ranks.world > 1:
            dist.barrier()  # every rank has checked the run folder before rank 0 writes to it
        # Everything is checked: only now does the run folder appear.
        run_dir.mkdir(parents=True, exist_ok=True)
        if ranks.main and not locked:
            lock.enter_context(run_lock(run_dir))
        return fit(cfg, model, run_dir, state, train_pairs, val_pairs, held_out, device,
                   ranks, progress)


def announce(cfg: TrainConfig, model: SegDINO, run_dir: Path, n_train: int, n_val: int,
             device: torch.device, ranks: Ranks) -> None:
    """The line that says what a run will do, before it does it."""
    on = f"{ranks.world} x {device.type}" if ranks.world > 1 else str(device)
    print(f"training on {on} in {cfg.precision}: {n_train} train and {n_val} val images, "
          f"{model.trainable_parameters():,} trainable parameters, run folder {run_dir}",
          flush=True)


def fit(cfg: TrainConfig, model: SegDINO, run_dir: Path, state: dict | None, train_pairs: list,
        val_pairs: list, held_out: bool, device: torch.device, ranks: Ranks, progress: bool
        ) -> Path:
    """The epochs of a run whose folder is checked and locked, from `state` if not None."""
    if ranks.main:
        announce(cfg, model, run_dir, len(train_pairs), len(val_pairs), device, ranks)
        # Written on resume too: a longer --epochs, a moved --dino-ckpt are the run's now.
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if held_out and val_pairs:
            write_text(run_dir / "val_list.txt",
                       "".join(f"{image.name}\n" for image, _ in val_pairs))
        else:  # left by a restarted run that held some out
            (run_dir / "val_list.txt").unlink(missing_ok=True)
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
                            pin_memory=pin, worker_init_fn=quiet_worker)
    history: list[dict] = []
    best, start = -math.inf, 0
    if state is not None:
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = json.loads(state["history"]), state["best"], state["epoch"] + 1
    if ranks.main:
        if state is not None:
            print(f"resuming {run_dir} after epoch {start}/{cfg.epochs}")
        if not val_pairs:
            print("no validation (--val-fraction 0): training on all of train/, "
                  "best.safetensors is the last epoch's model", flush=True)

    for epoch in range(start, cfg.epochs):
        # Shuffling, worker seeds and augmentation draw from RNGs seeded by (seed, epoch):
        # an epoch's randomness does not depend on whether the run was interrupted before it.
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + ranks.rank)
        sampler.set_epoch(epoch)
        if cfg.cache_features:
            source.set_epoch(epoch)
        loader = DataLoader(source, batch_size=cfg.batch_size // ranks.world, sampler=sampler,
                            num_workers=0 if cfg.cache_features else cfg.num_workers,
                            pin_memory=pin, worker_init_fn=quiet_worker,
                            generator=torch.Generator().manual_seed(
                                epoch_seed(cfg.seed, epoch) + ranks.rank))
        model.train()
        started, seen, loss_sum, dice_sum = time.time(), 0, 0.0, 0.0
        bar = tqdm(batches(loader), total=len(loader), leave=False, disable=not progress,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for inputs, masks, _ in bar:
            inputs, masks = inputs.to(device), masks.to(device)
            with autocast(device, cfg.precision):
                logits = step(inputs)
            loss = compute_loss(logits.float(), masks, cfg.loss)
            loss_value = loss.item()
            check_finite(loss_value, epoch, "training loss", cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                dice_sum += sum(batch_dice(logits, masks, cfg))
            seen += len(inputs)
            loss_sum += loss_value * len(inputs)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", dice=f"{dice_sum / seen:.4f}")

        train_means = reduce_means({"train_loss": loss_sum / seen, "train_dice": dice_sum / seen},
                                   seen, ranks)
        val, tiles = {}, []
        if val_pairs:
            val, tiles = validate(step_module, val_loader, val_set, cfg, device)
            val = reduce_means(val, len(val_share), ranks)
            check_finite(val["val_loss"], epoch, "validation loss", cfg)
        # The last step's update shows in no loss yet: weights gone nan or inf show here.
        check_finite(sum(p.sum().item() for p in model.head.parameters()), epoch,
                     "sum of the decoder's weights", cfg)
        if not ranks.main:
            continue
        row = {"epoch": epoch + 1, **train_means, **val,
               "seconds": round(time.time() - started, 2)}
        history.append(row)
        extra = {"epoch": epoch + 1, "dataset": cfg.dataset, "val_dice": val.get("val_dice")}
        save_segdino(model, run_dir / "last.safetensors", cfg.dino_ckpt, extra)
        # Without validation every epoch is the best so far: the last one is kept.
        improved = not val or val["val_dice"] > best
        if improved:
            best = val.get("val_dice", best)
            save_segdino(model, run_dir / "best.safetensors", cfg.dino_ckpt, extra)
        if tiles and improved:
            save_png(grid(tiles), run_dir / "val_overlays.png")
        write_metrics(history, run_dir / "metrics.csv")
        save_curves(history, run_dir / "curves.png")
        save_state(run_dir / "state.pt", model, optimizer, epoch, history, best)
        scores = "".join(f"  {label} {val[key]:.4f}" for key, label in (
            ("val_loss", "val loss"), ("val_dice", "val Dice"), ("val_iou", "val IoU"))
            if key in val)
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}{scores}  "
              f"{row['seconds']:.1f}s" + ("  *best" if val and improved else ""), flush=True)
    if ranks.world > 1:
        dist.barrier()  # rank 0's last checkpoint is written before anyone leaves
    return run_dir


# ---- command line -------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    # Every setting defaults to None, so that a flag given can be told from one left out
    # (--config and --resume); TrainConfig fills in the defaults.
    d = TrainConfig("", "", "")
    size = argtypes.int_multiple_of(PATCH)
    parser.add_argument("--config", help="a run's config.json: its settings become the "
                        "defaults (flags given here still win)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run "
                        "(only --epochs, --num-workers, --device and --dino-ckpt may change)")
    parser.add_argument("--allow-other-backbone", action="store_true", help="with --resume: "
                        "continue on backbone weights other than the run's own")
    parser.add_argument("--data-dir", help="folder holding DATASET/{train,val,test}")
    parser.add_argument("--dataset", help="dataset folder name under --data-dir")
    parser.add_argument("--dino-ckpt", help="DINOv3 weights: Meta .pth, transformers folder, "
                        "timm safetensors, or a Hugging Face Hub id (facebook/dinov3-..., "
                        "timm/vit_..._dinov3...)")
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
    parser.add_argument("--augment", action="store_true", default=None, help="flips, "
                        "rotation within 15 degrees, colour jitter (SegDINO v2); off by "
                        "default, as in the paper")
    parser.add_argument("--cache-features", action="store_true", default=None, help="run the "
                        "frozen backbone once per image and train the decoder from its cached "
                        "features")
    parser.add_argument("--cache-views", type=argtypes.int_at_least(1), help="cached views "
                        "per image: the plain one, and with --augment N-1 augmented ones")
    parser.add_argument("--cache-dtype", choices=list(CACHE_DTYPES),
                        help=f"default {d.cache_dtype}")
    parser.add_argument("--val-fraction", type=argtypes.fraction_below_one,
                        help=f"held out of train/ for validation when there is no val/ "
                        f"(default {d.val_fraction}; 0: train on all of train/ and keep the "
                        "last epoch's model, the reference's protocol)")
    parser.add_argument("--num-classes", type=argtypes.int_at_least(1), help="1 (default): "
                        "binary masks; K >= 2: masks of class indices 0..K-1, 0 the background")
    parser.add_argument("--class-map", metavar="VALUE:CLASS,...", help="mask pixel values to "
                        "classes, e.g. 0:0,128:1,255:2 (default: the values are the classes)")
    parser.add_argument("--ignore-index", type=argtypes.int_at_least(0), metavar="N",
                        help="a mask value (K or more) that is no class: left out of the loss "
                        "and the metrics")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="the K classes' names, background first (for reports)")
    parser.add_argument("--num-workers", type=argtypes.int_at_least(0),
                        help=f"default {d.num_workers}")
    parser.add_argument("--seed", type=int, help=f"default {d.seed}")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best there is)")
    parser.add_argument("--amp", choices=("none", "bf16"), help="bf16 mixed precision")
    parser.add_argument("--dice-thr", type=argtypes.open_unit_float,
                        help=f"default {d.dice_thr}")
    parser.add_argument("--save-root", help=f"default {d.save_root}")
    parser.add_argument("--name", help="run folder name under --save-root")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    missing = [f"--{n.replace('_', '-')}" for n in ("data_dir", "dataset", "dino_ckpt")
               if not values.get(n)]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or a --config that sets them)")
    return TrainConfig(**values)


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
                        "only --epochs, --num-workers, --device and --dino-ckpt may (start a "
                        "new run for the rest)")
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
    run_dir = train(cfg, resume=resume, progress=not args.no_progress,
                    allow_other_backbone=args.allow_other_backbone)
    print(f"run folder: {run_dir}  (best: {run_dir / 'best.safetensors'})")
    return 0
