"""The decoders `SegDINO` can run, by name, with their default options.

Every decoder takes the backbone's decoded layers stacked along channels, `(B, L*D, h, w)`,
and returns logits on its own grid (a multiple of the patch grid), which `SegDINO` resizes
to the input with the decoder's `align_corners`. Each also says its options (`options()`,
recorded in checkpoints) and the prefix of its keys in the authors' state dicts
(`reference_prefix`). A new decoder is one module and one row here.

"ensemble" is not a row: it holds K of these decoders (option `members`, each a decoder's
name and options; see `segdino.models.decoders.ensemble`) and is made by combining trained
models, never trained as such.
"""

from __future__ import annotations

from torch import nn

from segdino.models.decoders.ensemble import NAME as ENSEMBLE
from segdino.models.decoders.ensemble import MemberHeads
from segdino.models.decoders.v1 import SegDINOHead
from segdino.models.decoders.v1_proj import SegDINOProjHead
from segdino.models.decoders.v2 import CHANNELS, TPASADDecoder

DEFAULT = "v1"
# name -> (class, default options)
DECODERS: dict[str, tuple[type[nn.Module], dict]] = {
    "v1": (SegDINOHead, {}),
    "v1-proj": (SegDINOProjHead, {}),
    "v2": (TPASADDecoder, {"channels": CHANNELS}),
}


def decoder_options(name: str, options: dict | None = None) -> dict:
    """`options` over the decoder's defaults; unknown names and options are a ValueError."""
    if name == ENSEMBLE:
        return {"members": _members(options)}
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r} (known: {', '.join(DECODERS)})")
    defaults = DECODERS[name][1]
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
        raise ValueError(f"decoder {name!r} takes no option {', '.join(unknown)} "
                         f"(its options: {', '.join(defaults) or 'none'})")
    return {**defaults, **(options or {})}


def build_decoder(name: str, in_channels: int, num_classes: int, **options: object) -> nn.Module:
    """The decoder called `name`, with `options` over its defaults."""
    if name == ENSEMBLE:
        members = _members(options)
        return MemberHeads([build_decoder(m["decoder"], in_channels, num_classes,
                                          **m["decoder_options"]) for m in members], members)
    return DECODERS[name][0](in_channels, num_classes, **decoder_options(name, options))


def _members(options: dict | None) -> list[dict]:
    """An ensemble's members, each `{"decoder": name, "decoder_options": {...}}`, checked
    and completed with their defaults."""
    members = (options or {}).get("members")
    if set(options or {}) != {"members"} or not isinstance(members, list) or not members:
        raise ValueError("decoder 'ensemble' takes one option, members: a non-empty list")
    checked = []
    for member in members:
        if not isinstance(member, dict) or member.get("decoder") not in DECODERS:
            raise ValueError(f"ensemble member {member!r}: expected a decoder of "
                             f"{', '.join(DECODERS)} and its options")
        checked.append({"decoder": member["decoder"], "decoder_options": decoder_options(
            member["decoder"], member.get("decoder_options"))})
    return checked
