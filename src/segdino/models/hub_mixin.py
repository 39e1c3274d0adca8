"""The Hugging Face Hub for `SegDINO`: `save_pretrained`, `push_to_hub`, `from_pretrained`.

A mixin in its own module (as segmentation_models_pytorch's hub_mixin): the model class
imports it, and it never imports the model class. It builds a model through `cls(...)` and
works through the checkpoint format's functions, which read and write state dicts and
metadata (`segdino.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelHubMixin

from segdino.checkpoints.model_card import model_card
from segdino.checkpoints.pretrained import load_pretrained, write_pretrained

if TYPE_CHECKING:
    from segdino.backbone import DinoVisionTransformer
    from segdino.models.segdino import SegDINO


class SegDINOHubMixin(ModelHubMixin):
    """`save_pretrained` writes the decoder, its metadata and the model card; the backbone
    is recorded (file name, SHA-256, Hub repo and commit), not copied."""

    def _save_pretrained(self, save_directory: Path) -> None:
        """`save_pretrained`'s files but the card: the decoder and its metadata."""
        write_pretrained(self, save_directory)

    def generate_model_card(self, run_dir: str | Path | None = None,
                            test_summary: str | Path | None = None,
                            repo_id: str | None = None) -> ModelCard:
        """The README.md `save_pretrained` writes; describe the training run with
        `model_card_kwargs={"run_dir": ..., "test_summary": ..., "repo_id": ...}`."""
        return model_card(self, run_dir, test_summary, repo_id)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        backbone: str | Path | DinoVisionTransformer | None = None,
        revision: str | None = None,
        allow_other_backbone: bool = False,
    ) -> SegDINO:
        """A model from a `save_pretrained` folder or a Hub repo id (`OWNER/NAME[@REVISION]`,
        through the Hub cache, so offline after the first time). The backbone comes from
        `backbone` when given (checked against the recorded SHA-256 unless
        `allow_other_backbone`), else from where the model's metadata says, its Hub repo
        included."""
        return load_pretrained(cls, pretrained_model_name_or_path, backbone, revision,
                               allow_other_backbone)
