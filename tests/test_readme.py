"""The README's Python examples run as written, on files of the names they use (a randomly
initialised ViT-S/16 under Meta's file name, a run trained from it, a JPEG); the LICENSE and
the citation say what the package metadata and the paper's reference say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdino.backbone import build_backbone
from segdino.checkpoints.load import load_segdino
from segdino.data.synthetic import make_synthetic_dataset
from segdino.training.config import TrainConfig
from segdino.training.loop import train

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """What the examples name: the ViT-S/16 weights, runs/kvasir (trained on 32 x 32
    synthetic images, so that it is quick) and polyp.jpg."""
    root = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    weights = root / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    torch.save(build_backbone("vits16").state_dict(), weights)
    make_synthetic_dataset(root / "data" / "synth", n_train=4, n_val=2, n_test=1,
                           size=(40, 48), seed=1)
    train(TrainConfig(data_dir=str(root / "data"), dataset="synth", dino_ckpt=str(weights),
                      input_h=32, input_w=32, epochs=1, batch_size=2, num_workers=0,
                      save_root=str(root / "runs"), name="kvasir", device="cpu"),
          progress=False)
    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "polyp.jpg")
    return root


def test_there_are_examples() -> None:
    assert len(BLOCKS) == 2


def test_python_api_example(workdir, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    names: dict = {}
    exec(BLOCKS[0], names)  # noqa: S102 (the README's own code)
    assert names["model"].trainable_parameters() == 2213793  # as its comment says
    assert [f.shape for f in names["feats"]] == [(1, 384, 16, 16)] * 4
    assert names["mask"].shape == (60, 90) and names["mask"].dtype == bool
    assert names["prob"].shape == (60, 90)
    assert len(names["masks"]) == 2 and (names["masks"][0] == names["masks"][1]).all()
    assert (workdir / "as_reference.pth").is_file()


def test_hub_example(workdir, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    names: dict = {}
    exec("import segdino\n" + BLOCKS[1], names)  # noqa: S102 (it follows the first block)
    assert (workdir / "hub" / "kvasir" / "README.md").is_file()  # the model card
    trained = load_segdino(workdir / "runs" / "kvasir" / "best.safetensors").head.state_dict()
    shared = names["model"].head.state_dict()
    assert trained.keys() == shared.keys()
    assert all(torch.equal(trained[k], shared[k]) for k in trained)


def test_license_and_citation() -> None:
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    # the paper's arXiv id, from the reference's facts, in the README and CITATION.cff
    arxiv = re.search(r"arXiv (\d{4}\.\d{5})", (REPO.parent / "shared" / "docs" /
                                                 "reference.md").read_text()).group(1)
    assert f"eprint        = {{{arxiv}}}" in README
    assert f'value: "arXiv:{arxiv}"' in (REPO / "CITATION.cff").read_text()
