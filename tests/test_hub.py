"""The Hugging Face Hub, without a network: DINOv3 weights by Hub id (transformers and timm
copies) from an offline Hub cache, save_pretrained / from_pretrained, the model card of a run,
and the errors of a cache that lacks what is asked for."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from huggingface_hub import ModelCard, constants
from safetensors.torch import load_file, save_file
from test_backbone import TOL, reference_diff

from segdino.backbone import factory, load_backbone
from segdino.checkpoints.format import read_metadata
from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.commands import train as train_module
from segdino.data.synthetic import make_synthetic_dataset
from segdino.errors import UserError
from segdino.models.segdino import SegDINO

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HF_FOLDER = FIXTURES / "dinov3" / "tiny_mlp_hf"
TIMM_FILE = FIXTURES / "dinov3" / "tiny_mlp.timm.safetensors"
TINY_PTH = FIXTURES / "dinov3" / "tiny_mlp.pth"
REFERENCE_CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache in tmp_path, offline: nothing here can reach the network."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads those variables once, when imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> Path:
    """A repository as a download leaves it in the Hub cache: its files in
    `models--OWNER--NAME/snapshots/COMMIT/`, and `refs/main` naming that commit."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


def hf_files() -> dict[str, Path]:
    return {name: HF_FOLDER / name for name in ("config.json", "model.safetensors")}


def timm_config(architecture: str, num_heads: int) -> bytes:
    """A config.json as timm writes one for a model built with non-default sizes."""
    return json.dumps({"architecture": architecture, "num_classes": 0, "num_features": 64,
                       "global_pool": "avg", "model_args": {"num_heads": num_heads},
                       "pretrained_cfg": {"tag": "test", "input_size": [3, 256, 256]}}).encode()


def timm_without_qkv_bias(tmp_path: Path, source: Path) -> bytes:
    """timm's state dict without the q and v biases, as its non-`_qkvb` models have it."""
    sd = {k: v for k, v in load_file(source).items() if not k.endswith(("q_bias", "v_bias"))}
    save_file(sd, tmp_path / "no_bias.safetensors")
    return (tmp_path / "no_bias.safetensors").read_bytes()


# ---- DINOv3 weights by Hub id -------------------------------------------------------------

def test_transformers_copy_by_hub_id_reproduces_reference(hub: Path) -> None:
    snapshot = cache_repo(hub, "facebook/dinov3-tiny-test", hf_files())
    model = load_backbone("facebook/dinov3-tiny-test")
    assert reference_diff(model, "tiny_mlp") < TOL
    assert model.weights_path == snapshot
    pinned = load_backbone(f"facebook/dinov3-tiny-test@{COMMIT}")  # a revision, as timm writes
    assert torch.equal(pinned.cls_token, model.cls_token)


def test_timm_copy_by_hub_id_takes_head_count_from_its_config(hub: Path) -> None:
    cache_repo(hub, "timm/vit_tiny_patch16_dinov3_qkvb.test", {
        "config.json": timm_config("vit_small_patch16_dinov3_qkvb", num_heads=2),
        "model.safetensors": TIMM_FILE})
    assert reference_diff(load_backbone("timm/vit_tiny_patch16_dinov3_qkvb.test"), "tiny_mlp") < TOL


def test_timm_without_qkvb_loads_zero_biases_once_noted(hub: Path, tmp_path: Path) -> None:
    cache_repo(hub, "timm/vit_tiny_patch16_dinov3.test", {
        "config.json": timm_config("vit_small_patch16_dinov3", num_heads=2),
        "model.safetensors": timm_without_qkv_bias(tmp_path, TIMM_FILE)})
    factory._note_zero_qkv_bias.cache_clear()
    with pytest.warns(UserWarning, match="loaded with zero biases"):
        model = load_backbone("timm/vit_tiny_patch16_dinov3.test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        load_backbone("timm/vit_tiny_patch16_dinov3.test")
    # the truth: the `_qkvb` file with its q and v biases set to zero
    sd = load_file(TIMM_FILE)
    sd.update({k: torch.zeros_like(v) for k, v in sd.items() if k.endswith(("q_bias", "v_bias"))})
    expected = load_backbone(sd, num_heads=2)
    assert model.config == expected.config and model.config.qkv_bias
    ours, theirs = model.state_dict(), expected.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))


def test_timm_7b_keeps_no_qkv_bias(tmp_path: Path) -> None:
    # ViT-7B has no qkv bias at all: its timm name must not get zero biases (a local folder
    # here: the same reader as the Hub's snapshot folders)
    folder = tmp_path / "vit_7b_patch16_dinov3"
    folder.mkdir()
    (folder / "config.json").write_bytes(timm_config("vit_7b_patch16_dinov3", num_heads=2))
    (folder / "model.safetensors").write_bytes(
        timm_without_qkv_bias(tmp_path, FIXTURES / "dinov3" / "tiny_swiglu.timm.safetensors"))
    factory._note_zero_qkv_bias.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_backbone(folder)
    assert not model.config.qkv_bias
    assert not any(k.endswith("qkv.bias") for k in model.state_dict())


def test_local_path_wins_over_hub_id(hub: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(HF_FOLDER, tmp_path / "facebook" / "dinov3-tiny-test")
    model = load_backbone("facebook/dinov3-tiny-test")  # the cache is empty: read locally
    assert model.weights_path == Path("facebook/dinov3-tiny-test")


def test_offline_and_not_cached_is_a_clear_error(hub: Path, capsys) -> None:
    expected = (r"facebook/dinov3-nothing: no such file or folder, and not in the Hugging Face "
                r"cache .* while HF_HUB_OFFLINE is set")
    with pytest.raises(UserError, match=expected):
        load_backbone("facebook/dinov3-nothing")
    with pytest.raises(UserError, match="someone/missing: no such file or folder, and not in"):
        SegDINO.from_pretrained("someone/missing")
    with pytest.raises(UserError, match="weights/missing.pth: no such file$"):
        load_backbone("weights/missing.pth")  # a mistyped path: the Hub is not asked
    code = main(["train", "--data-dir", str(hub), "--dataset", "none",
                 "--dino-ckpt", "facebook/dinov3-nothing"])
    err = capsys.readouterr().err
    assert code == 2 and re.search(expected, err) and len(err.strip().splitlines()) == 1


# ---- save_pretrained / from_pretrained ----------------------------------------------------

def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    weights = tmp_path / "weights" / "tiny_mlp.pth"
    weights.parent.mkdir()
    shutil.copy(TINY_PTH, weights)
    model = load_segdino(REFERENCE_CKPT, backbone=weights).eval()
    model.preprocessing.input_size = (64, 80)
    model.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config == read_metadata(tmp_path / "export" / "model.safetensors")
    assert config["backbone"]["file"] == "tiny_mlp.pth" and "hub_id" not in config["backbone"]
    assert "path" not in config["backbone"]  # a shared model does not record local paths
    with pytest.raises(UserError, match="needs the backbone weights tiny_mlp.pth"):
        SegDINO.from_pretrained(tmp_path / "export")
    loaded = SegDINO.from_pretrained(tmp_path / "export", backbone=weights).eval()
    assert loaded.preprocessing == model.preprocessing
    io = load_file(FIXTURES / "segdino" / "segdino_tiny_mlp_io.safetensors")
    with torch.no_grad():
        logits = loaded(io["input.x_64x80_b2"])
        assert torch.equal(logits, model(io["input.x_64x80_b2"]))
    assert (logits - io["logits.x_64x80_b2"]).abs().max().item() < TOL


def test_save_pretrained_needs_the_backbone_weights_file(tmp_path: Path) -> None:
    model = load_segdino(REFERENCE_CKPT)  # its backbone came out of the checkpoint itself
    with pytest.raises(UserError, match="not loaded from a weights file, folder or Hub repo"):
        model.save_pretrained(tmp_path / "export")


def test_from_pretrained_by_repo_id_fetches_the_backbone_by_its_hub_id(
        hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_repo(hub, "facebook/dinov3-tiny-test", hf_files())
    torch.manual_seed(0)
    model = SegDINO(load_backbone("facebook/dinov3-tiny-test")).eval()
    model.save_pretrained(tmp_path / "export")
    recorded = json.loads((tmp_path / "export" / "config.json").read_text())["backbone"]
    assert (recorded["hub_id"], recorded["hub_revision"]) == ("facebook/dinov3-tiny-test", COMMIT)

    # Another machine: a cache holding both repositories, and nothing at the recorded path.
    other = tmp_path / "other_cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(other))
    shutil.rmtree(hub)
    cache_repo(other, "someone/segdino-tiny",
               {p.name: p for p in (tmp_path / "export").iterdir()})
    backbone_snapshot = cache_repo(other, "facebook/dinov3-tiny-test", hf_files())
    loaded = SegDINO.from_pretrained("someone/segdino-tiny").eval()
    assert loaded.backbone.weights_path == backbone_snapshot / "model.safetensors"
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # without the backbone's repository: a clear error, unless the weights are given
    shutil.rmtree(backbone_snapshot.parents[1])
    with pytest.raises(UserError, match="facebook/dinov3-tiny-test@.*not in the Hugging Face "
                                        "cache.*or pass the backbone weights with --backbone"):
        SegDINO.from_pretrained("someone/segdino-tiny")
    given = SegDINO.from_pretrained("someone/segdino-tiny", backbone=HF_FOLDER).eval()
    with torch.no_grad():
        assert torch.equal(given(x), model(x))


def test_from_pretrained_of_other_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        SegDINO.from_pretrained(tmp_path / "missing")
    with pytest.raises(UserError, match="not a segdino model"):
        SegDINO.from_pretrained(HF_FOLDER)  # a backbone's folder, not a model's


# ---- a run published: folder, model card, push --------------------------------------------

def train_parser_config(command: str) -> dict:
    """The settings `segdino train` resolves from a command line (its own parser)."""
    argv = shlex.split(command)
    assert argv[:2] == ["segdino", "train"]
    parser = argparse.ArgumentParser()
    train_module.configure(parser)
    return asdict(train_module.config_from_args(parser.parse_args(argv[2:])))


def test_publish_a_run_with_its_model_card(hub: Path, tmp_path: Path, capsys) -> None:
    # a run on DINOv3 weights by Hub id, from the (offline) Hub cache
    cache_repo(hub, "facebook/dinov3-tiny-test", hf_files())
    data = tmp_path / "data"
    make_synthetic_dataset(data / "synth", n_train=12, n_val=0, n_test=4, size=(40, 48), seed=1)
    cfg = train_module.TrainConfig(
        data_dir=str(data), dataset="synth", dino_ckpt="facebook/dinov3-tiny-test",
        input_h=32, input_w=32,
        epochs=1, batch_size=4, lr=3e-4, num_workers=0, seed=3, save_root=str(tmp_path / "runs"),
        name="run", device="cpu")
    run_dir = train_module.train(cfg, progress=False)
    assert main(["test", "--ckpt", str(run_dir / "best.safetensors"), "--data-dir", str(data),
                 "--dataset", "synth", "--num-workers", "0", "--save-root",
                 str(tmp_path / "test"), "--name", "t", "--no-progress"]) == 0
    summary_path = tmp_path / "test" / "t" / "summary.json"
    out = tmp_path / "published"
    assert main(["publish", str(run_dir), str(out), "--test-summary", str(summary_path)]) == 0

    card = (out / "README.md").read_text()
    assert "`synth`" in card
    assert ("Weights: [facebook/dinov3-tiny-test](https://huggingface.co/facebook/dinov3-tiny-"
            f"test) at commit `{COMMIT}`") in card
    held_out = (run_dir / "val_list.txt").read_text().split()
    assert f"a seeded 10% of `train/` (seed 3): {len(held_out)} image" in card
    with (run_dir / "metrics.csv").open() as f:
        (epoch,) = list(csv.DictReader(f))
    assert f"| val_dice | {float(epoch['val_dice']):.4f} |" in card
    summary = json.loads(summary_path.read_text())
    assert f"| dice | {summary['dice']:.4f} |" in card
    (command,) = re.findall(r"```bash\n(segdino train .*)\n```", card)
    assert train_parser_config(command) == json.loads((run_dir / "config.json").read_text())
    data_card = ModelCard.load(out / "README.md").data
    assert data_card.library_name == "segdino" and data_card.pipeline_tag == "image-segmentation"
    assert data_card.base_model == "facebook/dinov3-tiny-test"

    loaded = SegDINO.from_pretrained(out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), load_segdino(run_dir / "best.safetensors").eval()(x))

    capsys.readouterr()
    assert main(["publish", str(run_dir), str(out)]) == 2  # never into a used folder
    assert "exists and is not an empty folder" in capsys.readouterr().err
    # offline, the push fails after the folder is complete, with one line saying so
    pushed = tmp_path / "pushed"
    assert main(["publish", str(run_dir), str(pushed), "--push", "someone/segdino-synth"]) == 2
    err = capsys.readouterr().err
    assert "--push someone/segdino-synth: the upload failed" in err
    assert len(err.strip().splitlines()) == 1
    assert 'from_pretrained("someone/segdino-synth")' in (pushed / "README.md").read_text()
