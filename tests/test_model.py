"""SegDINO against the reference's logits, training steps and checkpoint layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from safetensors.torch import load_file

from segdino.backbone import build_backbone, load_backbone
from segdino.checkpoints.format import read_metadata, save_segdino
from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.reference import head_to_reference, save_reference
from segdino.errors import UserError
from segdino.models.segdino import SegDINO

REFERENCE_CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
TOL = 1e-5


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "segdino" / "segdino_tiny_mlp_io.safetensors")


def test_logits_match_reference(io) -> None:
    model = load_segdino(REFERENCE_CKPT).eval()
    assert model.layers == (2, 5, 8, 11)
    with torch.no_grad():
        logits = model(io["input.x_64x80_b2"])
    diff = (logits - io["logits.x_64x80_b2"]).abs().max().item()
    print(f"segdino_tiny_mlp logits: max abs difference {diff:.2e}")
    assert diff < TOL


def test_three_adamw_steps_match_reference(io) -> None:
    model = load_segdino(REFERENCE_CKPT).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    losses = []
    for step in (1, 2, 3):
        loss = F.binary_cross_entropy_with_logits(model(io["train.x"]), io["train.y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in (1, 3):
            weights = head_to_reference(model.head.state_dict())
            for key, value in weights.items():
                assert (value - io[f"after{step}.{key}"]).abs().max().item() < TOL, key
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), io["train.losses"].double(),
                          atol=TOL, rtol=0)


def test_backbone_is_frozen_and_stays_in_eval() -> None:
    model = SegDINO(build_backbone("vits16"))
    assert model.trainable_parameters() == 2_213_793
    assert SegDINO(build_backbone("vitb16")).trainable_parameters() == 2_766_753
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())


def test_train_mode_gives_eval_features(io) -> None:
    # The reference trains with RoPE jitter on; ours never jitters, so train == eval outputs.
    model = load_segdino(REFERENCE_CKPT)
    with torch.no_grad():
        trained = model.train()(io["input.x_64x80_b2"])
    assert (trained - io["logits.x_64x80_b2"]).abs().max().item() < TOL


def test_no_gradients_reach_the_backbone(io) -> None:
    model = load_segdino(REFERENCE_CKPT).train()
    model(io["train.x"]).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize("size", [(72, 56), (50, 97), (16, 16), (17, 33)])
def test_any_input_size_is_padded_and_cropped(size: tuple[int, int]) -> None:
    model = load_segdino(REFERENCE_CKPT).eval()
    h, w = size
    x = torch.randn(1, 3, h, w)
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    padded = torch.zeros(1, 3, ph, pw)
    padded[..., :h, :w] = x
    with torch.no_grad():
        out = model(x)
        expected = model(padded)[..., :h, :w]
    assert out.shape == (1, 1, h, w)
    assert torch.equal(out, expected)


def test_default_layers_per_architecture() -> None:
    for arch, layers in [("vits16", (2, 5, 8, 11)), ("vitb16", (2, 5, 8, 11)),
                         ("vitl16", (4, 11, 17, 23)), ("vith16plus", (7, 15, 23, 31)),
                         ("vit7b16", (9, 19, 29, 39))]:
        assert SegDINO(build_backbone(arch, device="meta")).layers == layers


def test_our_format_round_trip(tmp_path, io) -> None:
    model = load_segdino(REFERENCE_CKPT).eval()
    backbone_file = tmp_path / "weights" / "tiny_mlp.pth"
    backbone_file.parent.mkdir()
    torch.save(model.backbone.state_dict(), backbone_file)
    model.preprocessing.input_size = (64, 80)
    save_segdino(model, tmp_path / "best.safetensors", backbone_file, {"epoch": 7})
    meta = read_metadata(tmp_path / "best.safetensors")
    assert meta["backbone"]["file"] == "tiny_mlp.pth" and meta["epoch"] == 7
    assert len(meta["backbone"]["sha256"]) == 64
    loaded = load_segdino(tmp_path / "best.safetensors").eval()
    assert loaded.preprocessing.input_size == (64, 80)
    with torch.no_grad():
        assert (loaded(io["input.x_64x80_b2"]) - io["logits.x_64x80_b2"]).abs().max() < TOL


def test_backbone_found_beside_checkpoint_and_checked(tmp_path) -> None:
    model = load_segdino(REFERENCE_CKPT)
    elsewhere = tmp_path / "elsewhere" / "tiny_mlp.pth"
    elsewhere.parent.mkdir()
    torch.save(model.backbone.state_dict(), elsewhere)
    run = tmp_path / "run"
    run.mkdir()
    save_segdino(model, run / "best.safetensors", elsewhere)
    moved = run / "tiny_mlp.pth"
    elsewhere.rename(moved)  # the recorded path is gone; the file beside it is found
    assert load_segdino(run / "best.safetensors").num_classes == 1
    sd = torch.load(moved, weights_only=True)
    sd["norm.bias"] += 1
    torch.save(sd, moved)
    with pytest.raises(UserError, match="SHA-256 differs"):
        load_segdino(run / "best.safetensors")
    moved.unlink()
    with pytest.raises(UserError, match="needs the backbone weights tiny_mlp.pth"):
        load_segdino(run / "best.safetensors")


def test_conversion_to_reference_layout(tmp_path, io) -> None:
    model = load_segdino(REFERENCE_CKPT)
    save_reference(model, tmp_path / "converted.pth")
    original = torch.load(REFERENCE_CKPT, weights_only=True)
    converted = torch.load(tmp_path / "converted.pth", weights_only=True)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)


def test_reference_latest_layout_with_state_dict(tmp_path, io) -> None:
    sd = torch.load(REFERENCE_CKPT, weights_only=True)
    torch.save({"epoch": 3, "state_dict": sd, "optimizer": {}}, tmp_path / "latest.pth")
    model = load_segdino(tmp_path / "latest.pth").eval()
    with torch.no_grad():
        assert (model(io["input.x_64x80_b2"]) - io["logits.x_64x80_b2"]).abs().max() < TOL


def test_reference_checkpoint_with_separate_backbone(io) -> None:
    backbone = load_backbone(FIXTURES / "dinov3" / "tiny_mlp_hf")
    sd = torch.load(REFERENCE_CKPT, weights_only=True)
    model = load_segdino(REFERENCE_CKPT, backbone=backbone).eval()
    assert torch.equal(model.head.classifier.weight, sd["head.scratch.output_conv.weight"])


def test_bad_whole_model_checkpoints(tmp_path) -> None:
    with pytest.raises(UserError, match="no such checkpoint"):
        load_segdino(tmp_path / "missing.pth")
    sd = torch.load(REFERENCE_CKPT, weights_only=True)
    sd["head.scratch.layer9_rn.weight"] = sd.pop("head.scratch.layer4_rn.weight")
    torch.save(sd, tmp_path / "mangled.pth")
    with pytest.raises(UserError, match="mangled.pth: decoder does not match"):
        load_segdino(tmp_path / "mangled.pth")
    torch.save({"backbone.cls_token": torch.zeros(1, 1, 4)}, tmp_path / "nohead.pth")
    with pytest.raises(UserError, match="no head"):
        load_segdino(tmp_path / "nohead.pth")
