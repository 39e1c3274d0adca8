"""The later decoders (v1-proj, v2) against their authors' fixtures; every decoder through
the same contract: parameter counts, checkpoint layouts, the feature cache's split forward."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from safetensors.torch import load_file

from segdino.backbone import build_backbone
from segdino.checkpoints.format import read_metadata, save_segdino
from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.reference import head_from_reference, save_reference
from segdino.errors import UserError
from segdino.models.decoders import DECODERS
from segdino.models.segdino import SegDINO

TOL = 1e-5
# decoder -> its fixture's name
FIXTURE = {"v1-proj": "segdino_v1proj_tiny_mlp", "v2": "segdino_v2_tiny_mlp"}


def _fixture(decoder: str) -> tuple[SegDINO, dict[str, torch.Tensor], dict]:
    name = FIXTURE[decoder]
    model = load_segdino(FIXTURES / "segdino" / f"{name}.pth")
    io = load_file(FIXTURES / "segdino" / f"{name}_io.safetensors")
    info = json.loads((FIXTURES / "segdino" / f"{name}.json").read_text())
    return model, io, info


def _after(io: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    return head_from_reference({k.split(".", 1)[1]: v for k, v in io.items()
                                if k.startswith(f"after{step}.")})


@pytest.mark.parametrize("decoder", FIXTURE)
def test_reference_checkpoint_loads(decoder: str) -> None:
    model, io, info = _fixture(decoder)
    assert model.decoder == decoder
    assert model.trainable_parameters() == info["decoder_parameters"]
    # these fixtures' .pth holds the decoder after the three steps, not before them
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in _after(io, 3).items())


@pytest.mark.parametrize("decoder", FIXTURE)
def test_reference_forward_and_gradient_step(decoder: str) -> None:
    """The reference's loss at the weights after step 1 is its step-2 loss: the whole forward
    (logits on the fixture's training batch) to 1e-5. The fixtures' `logits.*` were not
    computed from any weights they hold (neither the .pth nor after1/after3 reproduce
    them), so they cannot be compared; nor can step 1, whose starting weights are not
    stored."""
    model, io, _ = _fixture(decoder)
    model.head.load_state_dict(_after(io, 1))
    loss = F.binary_cross_entropy_with_logits(model.train()(io["train.x"]), io["train.y"])
    print(f"{decoder}: step-2 loss {loss.item():.7f}, reference {io['train.losses'][1]:.7f}")
    assert abs(loss.item() - io["train.losses"][1].item()) < TOL
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.head.parameters())


@pytest.mark.parametrize(("decoder", "options", "count"), [
    ("v1", {}, 2_213_793), ("v1-proj", {}, 2_475_937), ("v2", {}, 3_299_593),
    ("v2", {"channels": 128}, 928_905), ("v2", {"channels": 512}, 12_366_345)])
def test_parameter_counts_vits16(decoder: str, options: dict, count: int) -> None:
    assert SegDINO(build_backbone("vits16"), 1, None, decoder, **options
                   ).trainable_parameters() == count


def test_unknown_decoder_or_option() -> None:
    backbone = build_backbone("vits16")
    with pytest.raises(ValueError, match="unknown decoder"):
        SegDINO(backbone, decoder="v3")
    with pytest.raises(ValueError, match="no option channels"):
        SegDINO(backbone, decoder="v1", channels=64)


@pytest.fixture(scope="module")
def tiny_backbone():
    model, _, _ = _fixture("v2")
    return model.backbone


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("size", [(64, 80), (40, 56)])
def test_features_then_decode_is_forward(tiny_backbone, decoder: str, size) -> None:
    torch.manual_seed(0)
    model = SegDINO(tiny_backbone, 3, None, decoder, **(
        {"channels": 32} if decoder == "v2" else {})).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        whole = model(x)
        split = model.decode(model.features(x), size)
    assert whole.shape == (2, 3, *size)
    assert torch.equal(whole, split)


@pytest.mark.parametrize("decoder", FIXTURE)
def test_reference_layout_round_trip(tmp_path, decoder: str) -> None:
    model, io, _ = _fixture(decoder)
    save_reference(model, tmp_path / "ref.pth")
    fixture = FIXTURES / "segdino" / f"{FIXTURE[decoder]}.pth"
    original = torch.load(fixture, weights_only=True)
    written = torch.load(tmp_path / "ref.pth", weights_only=True)
    assert written.keys() == original.keys()
    assert all(torch.equal(written[k], original[k]) for k in original)
    # wrapped as {"state_dict": ...}, as some of the authors' scripts save
    torch.save({"state_dict": original}, tmp_path / "wrapped.pth")
    assert load_segdino(tmp_path / "wrapped.pth").decoder == decoder


@pytest.mark.parametrize("decoder", FIXTURE)
def test_our_format_records_the_decoder(tmp_path, decoder: str) -> None:
    model, io, _ = _fixture(decoder)
    save_segdino(model, tmp_path / "m.safetensors",
                 backbone_file=FIXTURES / "dinov3" / "tiny_mlp.pth")
    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["decoder"] == decoder
    assert meta["decoder_options"] == model.decoder_options
    loaded = load_segdino(tmp_path / "m.safetensors",
                          backbone=FIXTURES / "dinov3" / "tiny_mlp.pth").eval()
    with torch.no_grad():
        assert torch.equal(loaded(io["input.x_48x64_b1"]), model.eval()(io["input.x_48x64_b1"]))


def test_checkpoint_without_decoder_fields_is_v1(tmp_path) -> None:
    """Checkpoints written before decoders had names hold v1 and resized bicubically."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = load_segdino(FIXTURES / "segdino" / "segdino_tiny_mlp.pth")
    model.preprocessing.resize = "bilinear"
    path = tmp_path / "new.safetensors"
    save_segdino(model, path, backbone_file=FIXTURES / "dinov3" / "tiny_mlp.pth")
    meta = read_metadata(path)
    for key in ("decoder", "decoder_options"):
        del meta[key]
    del meta["preprocessing"]["resize"]
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    save_file(tensors, tmp_path / "old.safetensors", metadata={"segdino": json.dumps(meta)})
    old = load_segdino(tmp_path / "old.safetensors")
    assert (old.decoder, old.decoder_options, old.preprocessing.resize) == ("v1", {}, "bicubic")
    meta["decoder"] = "v3"
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"segdino": json.dumps(meta)})
    with pytest.raises(UserError, match="decoder unreadable"):
        load_segdino(tmp_path / "bad.safetensors")
