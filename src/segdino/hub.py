"""The Hugging Face Hub as a source of files: repo ids, the Hub cache, and errors a user can act on.

A string such as `facebook/dinov3-vits16-pretrain-lvd1689m` (optionally `@revision`) that is
not an existing local path names a Hub repository. Its files are fetched with
`snapshot_download`, so they land in the Hub cache (`HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`) and later uses, `HF_HUB_OFFLINE=1` included, read them from there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from segdino.errors import UserError, first_line

# owner/name, then an optional @revision (a branch, tag or commit, as timm writes it)
_REPO_ID = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>.+))?$")
# a missing `dir/file.pth` is a mistyped path, not a repository to ask the Hub about
_FILE_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".json")
# What a weights repository must provide: transformers and timm both keep a config.json and
# the tensors in model.safetensors.
WEIGHT_FILES = ("config.json", "*.safetensors")
GATED_HINT = ("for DINOv3, timm's ungated copies load too, e.g. "
              "timm/vit_small_patch16_dinov3_qkvb.lvd1689m")


def parse_repo_id(source: str | Path) -> tuple[str, str | None] | None:
    """`(repo id, revision)` when `source` names a Hub repository rather than a local path.

    Only a string can: a `Path` is always local, and an existing local path wins over a
    repository of the same name.
    """
    if not isinstance(source, str) or Path(source).exists() or source.endswith(_FILE_SUFFIXES):
        return None
    match = _REPO_ID.match(source)
    return (match["repo"], match["revision"]) if match else None


def local_path(
    source: str | Path,
    allow_patterns: Sequence[str],
    revision: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """`source` as a local path: itself, or for a Hub repo id the snapshot folder in the Hub
    cache holding the files that match `allow_patterns` (downloaded when not there yet)."""
    parsed = parse_repo_id(source)
    if parsed is None:
        return Path(source)
    repo_id, pinned = parsed
    revision = revision or pinned
    try:
        return Path(snapshot_download(repo_id, revision=revision,
                                      allow_patterns=list(allow_patterns),
                                      local_files_only=local_files_only))
    except GatedRepoError:  # before RepositoryNotFoundError, its base class
        raise UserError(f"{repo_id}: this Hugging Face Hub repository is gated: accept its "
                        f"licence on https://huggingface.co/{repo_id} and log in "
                        f"(`hf auth login`); {GATED_HINT}") from None
    except RepositoryNotFoundError:
        raise UserError(f"{source}: no such file or folder, and no such repository on the "
                        "Hugging Face Hub (if it is private, log in with `hf auth login`)"
                        ) from None
    except RevisionNotFoundError:
        raise UserError(f"{repo_id}: the Hugging Face Hub has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        # Not in the cache, and the Hub was not asked (offline) or could not be reached.
        why = ("HF_HUB_OFFLINE is set" if constants.is_offline_mode() or local_files_only
               else "the Hub cannot be reached")
        raise UserError(f"{source}: no such file or folder, and not in the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}) while {why}: download it once online"
                        ) from None
    except HFValidationError as exc:
        raise UserError(f"{source}: no such file or folder, nor a valid Hub repo id ({exc})"
                        ) from None
    except HfHubHTTPError as exc:
        first = first_line(exc)
        raise UserError(f"{repo_id}: the Hugging Face Hub answered with an error ({first})"
                        ) from None


def cache_origin(path: str | Path) -> tuple[str, str] | None:
    """`(repo id, commit)` of a file or folder inside the Hub cache, read from the cache's
    layout `models--OWNER--NAME/snapshots/COMMIT/...`; None for any other path."""
    parts = Path(path).absolute().parts  # not resolve(): snapshot files link to nameless blobs
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i - 1].removeprefix("models--").replace("--", "/"), parts[i + 1]
    return None
