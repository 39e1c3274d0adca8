"""K-fold cross-validation (`segdino train --folds K`): K decoders on one frozen backbone,
their held-out scores, a temperature fitted on their out-of-fold predictions, and the K
models as one ensemble.

The pool is `train/` plus `val/` when present; `segdino.training.folds` deals it into K
folds (recorded in `RUN/folds.json`). The backbone runs once per image for all folds: one
feature cache of the pool (`--cache-views` views), which each fold reads through the indices
of its images. Fold k trains on the other folds and validates (choosing its best epoch) on
its own, in `RUN/fold<k>/`, a usual run folder (`val_list.txt` lists its held-out images)
but for its pictures: `RUN/cv_curves.png` draws every fold's curves side by side.
A resumed run (`--resume RUN`) skips finished folds and continues an interrupted one.

Then each fold's best model is scored on its held-out images at their own size, as `segdino
test` scores (`RUN/fold<k>/heldout/`), from its probabilities on the cached features (the
backbone does not run again; the fold was validated on the same features), and
`RUN/cv_summary.json` gathers Dice, IoU and HD95 per fold with their mean and sample SD over
the folds. A temperature is fitted on the out-of-fold logits at the input size (every 4th
pixel of every 4th row, enough for one number) and written into `RUN/ensemble.safetensors`,
the K fold models combined; the summary gives the pixel-level ECE before and after, and how
well each image's uncertainty (its mean entropy, out of fold) finds the images of low Dice
(Spearman correlation, AUROC).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from segdino.atomic import check_writable_folder, write_text
from segdino.calibration import expected_calibration_error, fit_temperature
from segdino.checkpoints.build import verify_backbone
from segdino.checkpoints.ensemble import combine, save_ensemble
from segdino.checkpoints.format import read_metadata
from segdino.checkpoints.load import load_segdino
from segdino.errors import UserError
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.inference.uncertainty import SCORE, entropy_map, finds_bad_cases
from segdino.models.segdino import SegDINO
from segdino.runtime import keep_freed_memory, pick_device
from segdino.training.config import TrainConfig
from segdino.training.curves import save_fold_curves
from segdino.training.distributed import init_distributed
from segdino.training.feature_cache import CacheSubset, FeatureCache, build_cache
from segdino.training.folds import fold_pairs, recorded_folds
from segdino.training.loop import build_model, dataset, fit, split_pairs
from segdino.training.run_folder import check_not_foreign, read_state, run_lock

SUMMARY = "cv_summary.json"
ENSEMBLE = "ensemble.safetensors"
CURVES = "cv_curves.png"
SCORED = ("dice", "iou", "hd95")
PIXEL_STRIDE = 4  # out-of-fold pixels kept for the temperature fit, per row and column


def cross_validate(cfg: TrainConfig, resume: Path | None = None, progress: bool = True) -> Path:
    """Run (or resume) a `cfg.folds`-fold cross-validation; returns the run folder."""
    device = pick_device(cfg.device)
    ranks, device = init_distributed(device)
    if ranks.world > 1:
        raise UserError("--folds: runs in one process (its folds share one feature cache); "
                        "start it without torchrun")
    if device.type == "cpu":
        keep_freed_memory()
    name = cfg.name or f"{cfg.dataset}_cv_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = resume or Path(cfg.save_root) / name
    check_writable_folder(run_dir, "--resume" if resume else "--save-root")
    check_not_foreign(run_dir)
    if resume is None and (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: run folder exists (choose another --name, or continue "
                        f"it with --resume {run_dir})")
    train_pairs, val_pairs, held_out = split_pairs(replace(cfg, val_fraction=0.0))
    pairs = train_pairs + ([] if held_out else val_pairs)
    root = Path(cfg.data_dir) / cfg.dataset
    if cfg.folds > len(pairs):
        raise UserError(f"--folds {cfg.folds}: more folds than the {len(pairs)} images in "
                        f"{root}'s train/ and val/")
    recorded = read_metadata(run_dir / "fold1" / "last.safetensors") if resume else None
    if recorded is not None:  # the cache must hold the features the folds trained on
        verify_backbone(recorded["backbone"]["sha256"], cfg.dino_ckpt, False, run_dir)
    torch.manual_seed(cfg.seed)
    base = build_model(cfg).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        write_text(run_dir / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        folds = recorded_folds(run_dir, pairs, cfg.folds, cfg.seed, root)
        print(f"{cfg.folds}-fold cross-validation of {len(pairs)} images ({folds['rule']}), "
              f"run folder {run_dir}", flush=True)
        cache = build_cache(base, dataset(cfg, pairs), dataset(cfg, pairs, True)
                            if cfg.augment else None, cfg.cache_views, cfg.cache_dtype, run_dir,
                            device, cfg.seed, cfg.batch_size, cfg.num_workers, progress, "cv")
        index = {image: i for i, (image, _) in enumerate(pairs)}
        fold_cfg = replace(cfg, folds=None, cache_features=True, save_root=str(run_dir))
        for k in range(cfg.folds):
            fold_dir = run_dir / f"fold{k + 1}"
            state = read_state(fold_dir, True, True)
            if state is not None and state["epoch"] + 1 >= cfg.epochs:
                print(f"fold {k + 1}/{cfg.folds}: finished already, skipped", flush=True)
                continue
            print(f"fold {k + 1}/{cfg.folds}", flush=True)
            train_k, held_k = fold_pairs(pairs, folds, k, root)
            caches = (CacheSubset(cache, [index[p[0]] for p in train_k]),
                      CacheSubset(cache, [index[p[0]] for p in held_k], plain=True))
            torch.manual_seed(cfg.seed)  # each fold's decoder starts as a single run's would
            fold_dir.mkdir(exist_ok=True)
            fit(replace(fold_cfg, name=fold_dir.name), build_model(cfg, base.backbone), fold_dir,
                state, train_k, held_k, True, device, ranks, progress, caches)
        held_out = [fold_pairs(pairs, folds, k, root)[1] for k in range(cfg.folds)]
        summarise(cfg, base, run_dir, held_out, cache, index, device, progress, folds["rule"])
    return run_dir


def summarise(cfg: TrainConfig, base: SegDINO, run_dir: Path, held_out: list[list],
              cache: FeatureCache, index: dict[Path, int], device: torch.device,
              progress: bool, rule: str) -> None:
    """Each fold scored on its `held_out` pairs, the temperature fitted out of fold, the
    ensemble written, and `cv_summary.json`."""
    rows, logits, targets, unsure, dice = [], [], [], [], []
    checkpoints = [run_dir / f"fold{k + 1}" / "best.safetensors" for k in range(cfg.folds)]
    for k, checkpoint in enumerate(checkpoints):
        model = load_segdino(checkpoint, base.backbone).to(device).eval()
        held = held_out[k]
        loader = DataLoader(CacheSubset(cache, [index[p[0]] for p in held], plain=True),
                            batch_size=cfg.batch_size)
        probs = []  # each held-out image's, at the input size, from the cached features
        with torch.no_grad():
            for features, masks, _ in loader:
                out = model.decode(features.to(device), (cfg.input_h, cfg.input_w)).float()
                probs += list((torch.sigmoid(out) if out.shape[1] == 1 else out.softmax(1)).cpu())
                logits.append(out[..., ::PIXEL_STRIDE, ::PIXEL_STRIDE].cpu())
                targets.append(masks[..., ::PIXEL_STRIDE, ::PIXEL_STRIDE])
        unsure += [float(entropy_map(p.squeeze(0).numpy()).mean()) for p in probs]
        summary = evaluate(Predictor(model, device, cfg.batch_size, "fp32"), held,
                           checkpoint.parent / "heldout", worst=4,
                           num_workers=cfg.num_workers, progress=progress, probabilities=probs)
        dice += image_dice(checkpoint.parent / "heldout" / "metrics.csv", len(held))
        rows.append({"fold": k + 1, "images": len(held),
                     **{m: summary[m] for m in SCORED}})
    logits_all, targets_all = torch.cat(logits), torch.cat(targets)
    temperature = fit_temperature(logits_all, targets_all)
    ensemble = combine(checkpoints, base.backbone)
    ensemble.preprocessing = replace(ensemble.preprocessing, temperature=temperature)
    save_ensemble(ensemble, run_dir / ENSEMBLE, checkpoints)
    result = {
        "folds": rows, "k": cfg.folds, "rule": rule,
        "mean": {m: float(np.mean([r[m] for r in rows])) for m in SCORED},
        "sd": {m: float(np.std([r[m] for r in rows], ddof=1)) for m in SCORED},
        "calibration": {
            "temperature": temperature, "pixels": targets_all.numel(),
            "ece_before": expected_calibration_error(logits_all, targets_all),
            "ece_after": expected_calibration_error(logits_all, targets_all, temperature)},
        "uncertainty": {"score": f"{SCORE}, input size",
                        **finds_bad_cases(unsure, dice)},
        "ensemble": ENSEMBLE,
    }
    # HD95 is nan where every held-out image of a fold has empty masks: null in JSON
    write_text(run_dir / SUMMARY, json.dumps(result, indent=2).replace("NaN", "null") + "\n")
    save_fold_curves([json.loads(read_state(c.parent, True, False)["history"])
                      for c in checkpoints], run_dir / CURVES, title=run_dir.name)
    mean, sd, cal = result["mean"], result["sd"], result["calibration"]
    print("out of fold: " + ", ".join(f"{m} {mean[m]:.4f} +- {sd[m]:.4f}" for m in SCORED)
          + f"; temperature {temperature:.3f} (pixel ECE {cal['ece_before']:.4f} -> "
          f"{cal['ece_after']:.4f}); {run_dir / ENSEMBLE}", flush=True)


def image_dice(report: Path, n: int) -> list[float]:
    """The per-image Dice of a held-out report's metrics.csv (its first `n` rows; for K
    classes the mean over the classes)."""
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    return [float(r.get("dice", r.get("dice_mean"))) for r in rows]
