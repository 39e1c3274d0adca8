"""The native DINOv3 ViT against the reference's own outputs, in every weight format."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, TINY_BACKBONES, tiny_config
from safetensors.torch import load_file

from segdino.backbone import VARIANTS, DinoVisionTransformer, build_backbone, load_backbone
from segdino.errors import UserError

CASES = ("x_64x64_b2", "x_48x80_b1", "x_72x56_b1")
TOL = 1e-5


def sources(name: str) -> list[tuple[str, dict]]:
    """Each file holding the tiny weights, with the arguments its format needs."""
    found = [(f"{name}.pth", {})]
    if (FIXTURES / "dinov3" / f"{name}_hf").is_dir():
        found.append((f"{name}_hf", {}))
    if (FIXTURES / "dinov3" / f"{name}.timm.safetensors").is_file():
        found.append((f"{name}.timm.safetensors", {"num_heads": tiny_config(name)["num_heads"]}))
    return found


PARAMS = [(name, file, kw) for name in TINY_BACKBONES for file, kw in sources(name)]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def reference_diff(model: DinoVisionTransformer, name: str) -> float:
    """The largest difference between `model`'s outputs and the reference's for the tiny
    backbone `name`: intermediate layers, forward_features and RoPE tables."""
    io = load_file(FIXTURES / "dinov3" / f"{name}_io.safetensors")
    layers = tiny_config(name)["intermediate_layers"]
    worst = 0.0
    with torch.no_grad():
        for case in CASES:
            x = io[f"input.{case}"]
            normed = model.get_intermediate_layers(
                x, n=layers, return_class_token=True, return_extra_tokens=True)
            raw = model.get_intermediate_layers(x, n=layers, norm=False)
            for i, (patch, cls, storage), raw_patch in zip(layers, normed, raw, strict=True):
                worst = max(worst, max_diff(patch, io[f"{case}.layer{i}.norm.patch"]),
                            max_diff(cls, io[f"{case}.layer{i}.norm.cls"]),
                            max_diff(storage, io[f"{case}.layer{i}.norm.storage"]),
                            max_diff(raw_patch, io[f"{case}.layer{i}.raw.patch"]))
            features = model.forward_features(x)
            for key in ("x_norm_clstoken", "x_storage_tokens", "x_norm_patchtokens", "x_prenorm"):
                worst = max(worst, max_diff(features[key], io[f"{case}.forward_features.{key}"]))
        sin, cos = model.rope_embed(4, 5)
    return max(worst, max_diff(sin, io["rope.4x5.sin"]), max_diff(cos, io["rope.4x5.cos"]))


@pytest.mark.parametrize(("name", "file", "kwargs"), PARAMS, ids=[p[1] for p in PARAMS])
def test_outputs_match_reference(name: str, file: str, kwargs: dict) -> None:
    worst = reference_diff(load_backbone(FIXTURES / "dinov3" / file, **kwargs), name)
    print(f"{file}: max abs difference {worst:.2e}")
    assert worst < TOL


def test_reshape_matches_tokens() -> None:
    io = load_file(FIXTURES / "dinov3" / "tiny_mlp_io.safetensors")
    model = load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth")
    x = io["input.x_48x80_b1"]  # a 3 x 5 grid
    with torch.no_grad():
        (maps,) = model.get_intermediate_layers(x, n=[11], reshape=True)
    assert maps.shape == (1, 64, 3, 5)
    expected = io["x_48x80_b1.layer11.norm.patch"]  # row-major tokens
    assert max_diff(maps.flatten(2).transpose(1, 2), expected) < TOL
    # an int n means the last n blocks, in order
    with torch.no_grad():
        last_two = model.get_intermediate_layers(x, n=2)
    assert len(last_two) == 2 and max_diff(last_two[1], expected) < TOL


def test_forward_stops_after_deepest_block() -> None:
    model = load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth")
    ran = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    with torch.no_grad():
        model.get_intermediate_layers(torch.zeros(1, 3, 32, 32), n=[1, 3])
    assert ran == [0, 1, 2, 3]


def test_rope_tables_built_once_per_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth")
    calls = []
    original = torch.meshgrid
    monkeypatch.setattr(torch, "meshgrid", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        for _ in range(3):
            model.get_intermediate_layers(torch.zeros(1, 3, 32, 32), n=[11])
        model.get_intermediate_layers(torch.zeros(1, 3, 48, 32), n=[11])
    assert len(calls) == 2  # two grid sizes, twelve blocks, four forwards


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_matches_official_manifest(variant: str) -> None:
    manifest = json.loads((FIXTURES / "dinov3" / "official_state_dict_manifest.json").read_text())
    official = manifest[f"dinov3_{variant}"]
    model = build_backbone(variant, device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {key: shape for key, shape, _ in official["state_dict"]}
    assert VARIANTS[variant].checkpoint == official["checkpoint_file"]
    assert sum(v.numel() for v in model.state_dict().values()) == official["num_values"]
    assert (model.embed_dim, model.n_blocks) == (official["embed_dim"], official["depth"])
    assert model.config.num_heads == official["num_heads"]


def test_architecture_inferred_from_weights(tmp_path) -> None:
    model = build_backbone("vits16plus")
    path = tmp_path / "small_plus.pth"
    torch.save(model.state_dict(), path)
    loaded = load_backbone(path)
    assert loaded.config == model.config
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model.eval().forward(x), loaded(x))


def test_key_bias_is_off_whatever_the_source() -> None:
    sd = torch.load(FIXTURES / "dinov3" / "tiny_mlp.pth", weights_only=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = load_backbone(sd)(x)
        third = sd["blocks.0.attn.qkv.bias"].numel() // 3
        sd["blocks.0.attn.qkv.bias"][third: 2 * third] += 5.0  # a key bias the mask switches off
        after = load_backbone(sd)(x)
    assert torch.equal(before, after)


def test_timm_without_head_count_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="num_heads"):
        load_backbone(FIXTURES / "dinov3" / "tiny_mlp.timm.safetensors")


def test_truncated_file(tmp_path) -> None:
    data = (FIXTURES / "dinov3" / "tiny_mlp.pth").read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated.pth: not a readable PyTorch checkpoint"):
        load_backbone(bad)


def test_not_a_checkpoint(tmp_path) -> None:
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights\n")
    with pytest.raises(UserError, match="notes.pth: not a readable"):
        load_backbone(bad)
    other = tmp_path / "other.pth"
    torch.save({"epoch": torch.tensor(3)}, other)
    with pytest.raises(UserError, match="other.pth: not a DINOv3 backbone"):
        load_backbone(other)


def test_other_architecture_than_asked(tmp_path) -> None:
    torch.save(build_backbone("vits16").state_dict(), tmp_path / "small.pth")
    with pytest.raises(UserError, match="holds vits16, not the vitb16 that was asked for"):
        load_backbone(tmp_path / "small.pth", arch="b")
    # a custom shape must at least be of the asked variant's family
    assert load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth", arch="s").n_blocks == 12
    with pytest.raises(UserError, match="swiglu FFN.*not the vits16 that was asked for"):
        load_backbone(FIXTURES / "dinov3" / "tiny_swiglu.pth", arch="s")


def test_mangled_key_is_named() -> None:
    sd = torch.load(FIXTURES / "dinov3" / "tiny_mlp.pth", weights_only=True)
    sd["blocks.3.attn.qkvv.weight"] = sd.pop("blocks.3.attn.qkv.weight")
    with pytest.raises(UserError, match=r"missing blocks\.3\.attn\.qkv\.weight.*unexpected "
                                        r"blocks\.3\.attn\.qkvv\.weight"):
        load_backbone(sd)
    sd = torch.load(FIXTURES / "dinov3" / "tiny_mlp.pth", weights_only=True)
    sd["norm.weight"] = sd["norm.weight"][:10]
    with pytest.raises(UserError, match=r"norm\.weight has shape \(10,\), expected \(64,\)"):
        load_backbone(sd)


def test_unknown_architecture_name() -> None:
    with pytest.raises(UserError, match="unknown backbone architecture 'vitx'"):
        build_backbone("vitx")
