"""Reading DINOv3 weights in the formats users have, into Meta's key layout.

- Meta `.pth`: `torch.save(state_dict)`, the layout our module has; nothing to map.
- Hugging Face `transformers` (`config.json` + `model.safetensors`): separate q/k/v
  projections, `layer_scale*.lambda1`, `up/down/gate_proj`; no RoPE periods, no key bias.
- timm `*_dinov3_qkvb` (safetensors): `reg_token`, `gamma_*`, separate `q_bias`/`v_bias`,
  `fc1_g`/`fc1_x`; no RoPE periods, no mask token, no head count. timm's copies without
  `_qkvb` have no q and v biases at all.

Each reader returns the state dict in Meta's layout and the hyper-parameters the file's own
config states (`num_heads`, `norm_eps`, `rope_base`), since the keys cannot tell them.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from segdino.errors import UserError, first_line

StateDict = dict[str, torch.Tensor]

# timm model names (without `_qkvb` and the pretrained tag) -> our variant names
TIMM_ARCHS = {
    "vit_small_patch16_dinov3": "vits16",
    "vit_small_plus_patch16_dinov3": "vits16plus",
    "vit_base_patch16_dinov3": "vitb16",
    "vit_large_patch16_dinov3": "vitl16",
    "vit_large_plus_patch16_dinov3": "vitl16plus",
    "vit_huge_plus_patch16_dinov3": "vith16plus",
    "vit_7b_patch16_dinov3": "vit7b16",
}


def torch_load(path: Path) -> object:
    """`torch.load` restricted to tensors and plain containers, with a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except pickle.UnpicklingError:
        # torch's own text here is pages long and is about trusting the file: not loading it
        # is the point, since weights_only=True runs no code from a checkpoint
        raise UserError(f"{path}: not a readable PyTorch checkpoint (not a PyTorch file, or one "
                        "that holds more than tensors: segdino loads tensors only)") from None
    except Exception as exc:  # truncated zip, empty file: unreadable here
        first = first_line(exc)
        raise UserError(f"{path}: not a readable PyTorch checkpoint (damaged, truncated or "
                        f"empty: {first[:160]})") from None


def check_finite(sd: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """A UserError naming `where` when a floating-point tensor holds NaN or infinity: such
    weights (a diverged run, a damaged copy) would give garbage masks without any error."""
    bad = [key for key, value in sd.items()
           if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise UserError(f"{where}: tensor {bad[0]!r}{more} holds NaN or infinite values "
                        "(a damaged file or a diverged training run)")


def safetensors_load(path: Path) -> StateDict:
    try:
        sd = load_file(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    check_finite(sd, path)
    return sd


def read_tensors(path: Path) -> StateDict:
    """A file of tensors: safetensors by suffix, else a PyTorch checkpoint (state dict,
    possibly wrapped in `{"state_dict": ...}` or `{"model": ...}`), its values all finite."""
    if path.suffix == ".safetensors":
        return safetensors_load(path)
    obj = torch_load(path)
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    check_finite(obj, path)
    return dict(obj)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON config ({exc})") from None


def _map_keys(sd: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """Rename keys by the first matching regex rule; keys no rule matches keep their name
    (and fail the strict load later, by name)."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            new, count = re.subn(pattern, repl, key)
            if count:
                key = new
                break
        out[key] = value
    return out


def _block_ids(sd: StateDict, prefix: str) -> list[str]:
    return sorted({m.group(1) for key in sd if (m := re.match(prefix + r"(\d+)\.", key))}, key=int)


def _fuse_qkv(
    sd: StateDict, weights: tuple[str, str, str] | None, biases: tuple[str, str, str], out: str
) -> None:
    """Replace separate q/k/v weights (if given) and biases by one fused projection `out`.

    A missing key bias becomes zeros; `bias_mask` switches it off whatever its value.
    """
    if weights is not None and all(name in sd for name in weights):
        sd[f"{out}.weight"] = torch.cat([sd.pop(name) for name in weights])
    q, k, v = (sd.pop(name, None) for name in biases)
    if q is not None and v is not None:
        k = torch.zeros_like(q) if k is None else k
        sd[f"{out}.bias"] = torch.cat([q, k, v])
        sd[f"{out}.bias_mask"] = torch.cat([torch.ones_like(q), torch.zeros_like(k),
                                            torch.ones_like(v)])


HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "storage_tokens"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (r"^layer\.(\d+)\.attention\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^layer\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
]
HF_MLP = [(r"\.mlp\.up_proj\.", ".mlp.fc1."), (r"\.mlp\.down_proj\.", ".mlp.fc2.")]
HF_SWIGLU = [(r"\.mlp\.gate_proj\.", ".mlp.w1."), (r"\.mlp\.up_proj\.", ".mlp.w2."),
             (r"\.mlp\.down_proj\.", ".mlp.w3.")]


def from_transformers(sd: StateDict, config: dict) -> tuple[StateDict, dict]:
    sd = dict(sd)
    for n in _block_ids(sd, r"layer\."):
        base = f"layer.{n}.attention."
        projections = [f"{base}{x}_proj" for x in "qkv"]
        _fuse_qkv(sd, tuple(f"{p}.weight" for p in projections),
                  tuple(f"{p}.bias" for p in projections), f"{base}qkv")
    sd = _map_keys(sd, HF_RULES)
    sd = _map_keys(sd, HF_SWIGLU if config.get("use_gated_mlp") else HF_MLP)
    if "mask_token" in sd:
        sd["mask_token"] = sd["mask_token"].reshape(1, -1)
    hints = {"num_heads": config.get("num_attention_heads"),
             "norm_eps": config.get("layer_norm_eps"), "rope_base": config.get("rope_theta")}
    return sd, {k: v for k, v in hints.items() if v is not None}


TIMM_RULES = [
    (r"^reg_token$", "storage_tokens"),
    (r"^blocks\.(\d+)\.gamma_([12])$", r"blocks.\1.ls\2.gamma"),
    (r"\.mlp\.fc1_g\.", ".mlp.w1."),
    (r"\.mlp\.fc1_x\.", ".mlp.w2."),
]


def from_timm(sd: StateDict, config: dict) -> tuple[StateDict, dict]:
    sd = dict(sd)
    swiglu = any(".mlp.fc1_g." in key for key in sd)
    for n in _block_ids(sd, r"blocks\."):
        base = f"blocks.{n}.attn."
        _fuse_qkv(sd, None, tuple(f"{base}{x}_bias" for x in "qkv"), f"{base}qkv")
    sd = _map_keys(sd, TIMM_RULES)
    if swiglu:  # timm's fc2 is the SwiGLU output projection, our w3
        sd = _map_keys(sd, [(r"\.mlp\.fc2\.", ".mlp.w3.")])
    dim = sd["cls_token"].shape[-1] if "cls_token" in sd else 0
    sd.setdefault("mask_token", torch.zeros(1, dim))  # unused outside SSL training
    hints: dict = {"timm_without_qkv_bias": not any(k.endswith(".attn.qkv.bias") for k in sd)}
    arch = str(config.get("architecture", "")).split(".")[0].removesuffix("_qkvb")
    if arch in TIMM_ARCHS:
        hints["arch"] = TIMM_ARCHS[arch]
    # timm records the arguments of a model built with non-default sizes in `model_args`
    if "num_heads" in (config.get("model_args") or {}):
        hints["num_heads"] = config["model_args"]["num_heads"]
    return sd, hints


def add_zero_qkv_bias(sd: StateDict) -> None:
    """Give every block of a Meta-layout state dict zero q and v biases (and the key mask)."""
    for n in _block_ids(sd, r"blocks\."):
        base = f"blocks.{n}.attn."
        zeros = torch.zeros(sd[f"{base}qkv.weight"].shape[1])
        sd[f"{base}q_bias"], sd[f"{base}v_bias"] = zeros, zeros
        _fuse_qkv(sd, None, (f"{base}q_bias", f"{base}k_bias", f"{base}v_bias"), f"{base}qkv")


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    if "embeddings.cls_token" in sd:
        return "transformers"
    if "reg_token" in sd or any(k.endswith(".gamma_1") for k in sd):
        return "timm"
    return "meta"


READERS: dict[str, Callable[[StateDict, dict], tuple[StateDict, dict]]] = {
    "transformers": from_transformers,
    "timm": from_timm,
    "meta": lambda sd, config: (dict(sd), {}),
}


def read_backbone_weights(
    source: str | Path | Mapping[str, torch.Tensor],
) -> tuple[StateDict, dict]:
    """Any supported source -> (state dict in Meta's layout, hints from its config)."""
    config: dict = {}
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            weights = path / "model.safetensors"
            if not weights.is_file():
                raise UserError(f"{path}: expected a checkpoint folder with model.safetensors")
            config = _json(path / "config.json") if (path / "config.json").is_file() else {}
            sd = safetensors_load(weights)
        else:
            sd = read_tensors(path)
            if (path.parent / "config.json").is_file() and path.suffix == ".safetensors":
                config = _json(path.parent / "config.json")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    return READERS[detect_layout(sd)](sd, config)
