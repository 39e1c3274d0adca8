"""Training from cached features, and with several processes (DistributedDataParallel, gloo):
both must give the decoder weights plain single-process training gives."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from segdino.commands import main
from segdino.data.synthetic import make_synthetic_dataset
from segdino.training import feature_cache
from segdino.training.config import TrainConfig
from segdino.training.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth", n_train=16, n_val=4, n_test=2, size=(40, 48), seed=5)
    return root


def config(data: Path, save_root: Path, **kw) -> TrainConfig:
    settings = dict(data_dir=str(data), dataset="synth",
                    dino_ckpt=str(FIXTURES / "dinov3" / "tiny_mlp.pth"), input_h=32, input_w=32,
                    epochs=2, batch_size=4, num_workers=0, seed=11, save_root=str(save_root),
                    name="run", device="cpu")
    return TrainConfig(**{**settings, **kw})


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "last.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory) -> Path:
    """Single-process training without a cache: the truth the others must reproduce."""
    return train(config(data, tmp_path_factory.mktemp("plain")), progress=False)


def test_float32_cache_gives_the_uncached_weights(tmp_path, data, plain) -> None:
    cached = train(config(data, tmp_path, cache_features=True, cache_dtype="float32"),
                   progress=False)
    assert max_diff(weights(cached), weights(plain)) < 1e-5
    assert not list(cached.glob("feature_cache.*"))  # small enough for memory


def test_cache_on_disk_when_memory_is_short(tmp_path, data, monkeypatch) -> None:
    in_memory = train(config(data, tmp_path / "mem", cache_features=True), progress=False)
    monkeypatch.setattr(feature_cache, "available_memory", lambda: 0)
    on_disk = train(config(data, tmp_path / "disk", cache_features=True), progress=False)
    assert (on_disk / "feature_cache.train.bin").is_file()
    assert (on_disk / "feature_cache.val.bin").is_file()
    assert max_diff(weights(on_disk), weights(in_memory)) == 0.0


def test_float16_cache_stays_close(tmp_path, data, plain) -> None:
    half = train(config(data, tmp_path, cache_features=True), progress=False)
    assert max_diff(weights(half), weights(plain)) < 1e-3
    assert abs(float(rows(half)[-1]["val_dice"]) - float(rows(plain)[-1]["val_dice"])) < 0.02


def test_augmented_views_are_cached_reproducibly(tmp_path, data) -> None:
    cfg = dict(cache_features=True, cache_views=3, augment=True, epochs=3)
    first = train(config(data, tmp_path / "a", **cfg), progress=False)
    second = train(config(data, tmp_path / "b", **cfg), progress=False)
    assert max_diff(weights(first), weights(second)) == 0.0
    assert main(["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt",
                 str(FIXTURES / "dinov3" / "tiny_mlp.pth"), "--cache-features",
                 "--cache-views", "2", "--save-root", str(tmp_path)]) == 2  # needs --augment


def torchrun(cfg: TrainConfig, *extra: str) -> subprocess.CompletedProcess:
    args = []
    for key, value in vars(cfg).items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "segdino", "train", "--no-progress", *args, *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_train_like_one(tmp_path, data, plain) -> None:
    result = torchrun(config(data, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert max_diff(weights(run_dir), weights(plain)) < 1e-5
    for ours, single in zip(rows(run_dir), rows(plain), strict=True):
        for key in ("train_loss", "val_loss", "val_dice", "val_iou"):
            assert float(ours[key]) == pytest.approx(float(single[key]), abs=1e-5), key
    assert result.stdout.count("epoch 2/2") == 1  # only rank 0 reports

    # resume: one epoch under two processes, then the second one after a restart
    first = config(data, tmp_path / "resumed", epochs=1)
    assert torchrun(first).returncode == 0
    result = torchrun(first, "--resume", str(tmp_path / "resumed" / "run"), "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_diff(weights(tmp_path / "resumed" / "run"), weights(plain)) < 1e-5


def test_two_processes_with_the_feature_cache(tmp_path, data) -> None:
    result = torchrun(config(data, tmp_path, cache_features=True))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(rows(tmp_path / "run")) == 2
    assert result.stdout.count("caching train0 features: 1 view(s) of 8 images") == 1
    shutil.rmtree(tmp_path / "run")
