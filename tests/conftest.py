"""Shared test fixtures: where the reference fixtures live, and tiny models built from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
TINY_BACKBONES = ("tiny_mlp", "tiny_swiglu", "tiny_7b_like")


def tiny_config(name: str) -> dict:
    return json.loads((FIXTURES / "dinov3" / f"{name}.json").read_text())


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """Noise plus a bright disc, so that masks are neither empty nor full."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    image[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 3) ** 2] = (230, 90, 60)
    return image


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"reference fixtures not found at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny model for the commands that need one: `data` (DATA_DIR with dataset
    `synth`), `weights` (the tiny backbone under a user's file name), `run` (the run folder)
    and `ckpt` (its best.safetensors). Tests must not change these files."""
    import shutil

    from segdino.data.synthetic import make_synthetic_dataset
    from segdino.training.config import TrainConfig
    from segdino.training.loop import train

    root = tmp_path_factory.mktemp("tiny_run")
    make_synthetic_dataset(root / "data" / "synth", n_train=8, n_val=4, n_test=4, size=(40, 48),
                           seed=1)
    weights = root / "weights" / "tiny_mlp.pth"
    weights.parent.mkdir()
    shutil.copy(FIXTURES / "dinov3" / "tiny_mlp.pth", weights)
    cfg = TrainConfig(data_dir=str(root / "data"), dataset="synth", dino_ckpt=str(weights),
                      input_h=32, input_w=32, epochs=1, batch_size=4, num_workers=0, seed=3,
                      save_root=str(root / "runs"), name="run", device="cpu")
    run = train(cfg, progress=False)
    return {"data": root / "data", "weights": weights, "run": run,
            "ckpt": run / "best.safetensors"}


def random_member(weights: Path, path: Path, seed: int, classes: int = 1, decoder: str = "v1",
                  like: Path | None = None, **options: object) -> Path:
    """A checkpoint with a randomly initialised decoder (distinct per seed) on `weights`, with
    the preprocessing of checkpoint `like` when given."""
    import torch

    from segdino.backbone import load_backbone
    from segdino.checkpoints.format import save_segdino
    from segdino.checkpoints.load import load_segdino
    from segdino.models.segdino import SegDINO

    torch.manual_seed(seed)
    model = SegDINO(load_backbone(weights), classes, None, decoder, **options)
    if like is not None:
        model.preprocessing = load_segdino(like).preprocessing
    for p in model.head.parameters():  # larger than the init, so members disagree visibly
        p.data.mul_(4)
    save_segdino(model, path)
    return path
