"""The training loop of `segdino train`: fit the decoder, the backbone frozen. Read top to bottom.

A run folder holds all a run makes: `config.json`, `metrics.csv`, `curves.png`,
`val_overlays.jpg`, `best.safetensors` (best validation Dice; never chosen on test),
`last.safetensors` and `state.pt` for `--resume`. Every epoch reseeds the RNGs from (seed,
epoch): a run resumed from its last finished epoch ends with the weights it would have had.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from segdino.atomic import check_writable_folder, write_text
from segdino.backbone import DinoVisionTransformer, load_backbone, resolve_arch
from segdino.checkpoints.build import verify_backbone
from segdino.checkpoints.format import read_metadata, save_segdino
from segdino.data.dataset import SegmentationDataset, find_pairs
from segdino.data.holdout import holdout
from segdino.errors import UserError
from segdino.models.preprocessing import Preprocessing
from segdino.models.segdino import SegDINO
from segdino.progress import format_interval, progress_bar
from segdino.runtime import autocast, batches, keep_freed_memory, pick_device, quiet_worker
from segdino.training.config import TrainConfig
from segdino.training.distributed import Ranks, cache_name, init_distributed, reduce_means
from segdino.training.feature_cache import build_cache
from segdino.training.loss import compute_loss
from segdino.training.metric_log import MetricLog, summary_writer_class
from segdino.training.pictures import RunPictures
from segdino.training.run_folder import (
    check_not_foreign,
    read_state,
    record_checkpoints,
    record_invocation,
    run_lock,
    save_state,
)
from segdino.training.validation import batch_dice, validate


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


def build_model(cfg: TrainConfig, backbone: DinoVisionTransformer | None = None) -> SegDINO:
    """A fresh decoder for `cfg`, on `backbone` or on the one `cfg` names."""
    if backbone is None:
        backbone = load_backbone(cfg.dino_ckpt, arch=resolve_arch(cfg.dino_size)
                                 if cfg.dino_size else None)
    model = SegDINO(backbone, cfg.num_classes, None, cfg.decoder, **cfg.decoder_options())
    model.preprocessing = Preprocessing(
        input_size=(cfg.input_h, cfg.input_w), threshold=cfg.dice_thr, class_map=cfg.class_map,
        ignore_index=cfg.ignore_index,
        class_names=tuple(cfg.class_names) if cfg.class_names else None, resize=cfg.resize)
    return model


def dataset(cfg: TrainConfig, pairs: list, augment: bool = False) -> SegmentationDataset:
    return SegmentationDataset(pairs, (cfg.input_h, cfg.input_w), augment=augment,
                               mask_format=cfg.mask_format(), resize=cfg.resize)


class TrainingStep(nn.Module):
    """What one step runs: the whole model on images, or the decoder on cached features."""

    def __init__(self, model: SegDINO, cached: bool, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.cached, self.size = model, cached, size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.decode(inputs, self.size) if self.cached else self.model(inputs)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


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
    if cfg.log == "tensorboard":
        summary_writer_class()  # a missing extra is refused before any work
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
        val_pairs: list, held_out: bool, device: torch.device, ranks: Ranks, progress: bool,
        caches: tuple | None = None) -> Path:
    """The epochs of a run whose folder is checked and locked, from `state` if not None;
    `caches` (train, val), when given, are the pairs' cached features (cross-validation's,
    whose folds draw no pictures: `segdino.training.pictures`)."""
    if ranks.main:
        announce(cfg, model, run_dir, len(train_pairs), len(val_pairs), device, ranks)
        # Written on resume too: a longer --epochs, a moved --dino-ckpt are the run's now.
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        if held_out and val_pairs:
            write_text(run_dir / "val_list.txt",
                       "".join(f"{image.name}\n" for image, _ in val_pairs))
        else:  # left by a restarted run that held some out
            (run_dir / "val_list.txt").unlink(missing_ok=True)
        record_invocation(run_dir, cfg, device, 0 if state is None else state["epoch"] + 1)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    size = (cfg.input_h, cfg.input_w)
    pin = device.type == "cuda"
    if cfg.cache_features:
        # Each rank caches its own fixed share and shuffles within it.
        shard = train_pairs[ranks.rank :: ranks.world]
        source = caches[0] if caches else build_cache(
            model, dataset(cfg, shard), dataset(cfg, shard, True) if cfg.augment else None,
            cfg.cache_views, cfg.cache_dtype, run_dir, device, cfg.seed + ranks.rank,
            cfg.batch_size, cfg.num_workers, progress, cache_name("train", ranks), ranks.main)
        sampler = DistributedSampler(source, num_replicas=1, rank=0, seed=cfg.seed + ranks.rank)
    else:
        source = dataset(cfg, train_pairs, cfg.augment)
        sampler = DistributedSampler(source, num_replicas=ranks.world, rank=ranks.rank,
                                     seed=cfg.seed)
    step_module = TrainingStep(model, cfg.cache_features, size)
    step = (DistributedDataParallel(step_module, broadcast_buffers=False) if ranks.world > 1
            else step_module)
    val_share = val_pairs[ranks.rank :: ranks.world]
    val_set = dataset(cfg, val_share)
    val_source = val_set
    if cfg.cache_features:  # validation is never augmented: one view, no backbone afterwards
        val_source = caches[1] if caches else build_cache(
            model, val_set, None, 1, cfg.cache_dtype, run_dir, device, cfg.seed,
            cfg.batch_size, cfg.num_workers, progress, cache_name("val", ranks), ranks.main)
    val_loader = DataLoader(val_source, batch_size=cfg.batch_size,
                            num_workers=0 if cfg.cache_features else cfg.num_workers,
                            pin_memory=pin, worker_init_fn=quiet_worker)
    history, best, start = [], -math.inf, 0
    if state is not None:
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = json.loads(state["history"]), state["best"], state["epoch"] + 1
    steps_per_epoch = math.ceil(len(sampler) / (cfg.batch_size // ranks.world))
    log = MetricLog(run_dir, cfg.log if ranks.main else None, steps_per_epoch, start)
    pictures = RunPictures(run_dir, val_set, cfg, drawn=caches is None)
    if ranks.main:
        if state is not None:
            print(f"resuming {run_dir} after epoch {start}/{cfg.epochs}")
        if not val_pairs:
            print("no validation (--val-fraction 0): training on all of train/, "
                  "best.safetensors is the last epoch's model", flush=True)

    run_started, steps_done = time.time(), 0
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
        started, seen, loss_sum, dice_sum, steps = time.time(), 0, 0.0, 0.0, []
        bar = progress_bar(batches(loader), progress, total=len(loader), leave=False,
                           desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for i, (inputs, masks, _) in enumerate(bar):
            inputs = inputs.to(device, non_blocking=True)  # from pinned memory on CUDA
            masks = masks.to(device, non_blocking=True)
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
            steps.append({"epoch": epoch + 1, "step": i + 1, "loss": loss_value,
                          "lr": optimizer.param_groups[0]["lr"]})
            # The whole run's ETA (tqdm's is the epoch's), at the pace so far, validation included.
            steps_done, steps_left = steps_done + 1, len(loader) * (cfg.epochs - epoch) - i - 1
            per_step = (time.time() - run_started) / steps_done
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", dice=f"{dice_sum / seen:.4f}",
                            run_eta=format_interval(per_step * steps_left))

        train_means = reduce_means({"train_loss": loss_sum / seen, "train_dice": dice_sum / seen},
                                   seen, ranks)
        val, shown = {}, []
        if val_pairs:
            val, shown = validate(step_module, val_loader, val_set, cfg, device)
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
        log.epoch(history, steps)  # before state.pt: a rerun epoch replaces these records
        pictures.epoch(history, shown if improved else [])
        save_state(run_dir / "state.pt", model, optimizer, epoch, history, best)
        record_checkpoints(run_dir)
        eta = (time.time() - run_started) / (epoch + 1 - start) * (cfg.epochs - epoch - 1)
        log.report(row, cfg.epochs, bool(val) and improved, eta)
    log.close()
    if ranks.world > 1:
        dist.barrier()  # rank 0's last checkpoint is written before anyone leaves
    return run_dir
