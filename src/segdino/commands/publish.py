"""`segdino publish`: a training run as a Hugging Face model folder with its model card
(`SegDINO.save_pretrained`); `--push` uploads it to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from segdino.atomic import check_writable_folder
from segdino.checkpoints.format import read_metadata
from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.pretrained import WEIGHTS
from segdino.commands.flags import add_allow_other_backbone, add_backbone
from segdino.cross_validation import ENSEMBLE
from segdino.errors import UserError, first_line

# ---- segdino publish ------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", help="a run folder of `segdino train` (its "
                        "best.safetensors is published; a cross-validation's "
                        "ensemble.safetensors)")
    parser.add_argument("out_dir", nargs="?", help="the model folder to write (new or empty): "
                        "model.safetensors, config.json, README.md")
    parser.add_argument("--test-summary", metavar="SUMMARY_JSON", help="the summary.json of "
                        "`segdino test` on this run, for the model card's test scores")
    add_backbone(parser, "the backbone weights, when not where the run recorded them")
    add_allow_other_backbone(parser)
    parser.add_argument("--push", metavar="REPO_ID", help="also upload to this Hugging Face "
                        "Hub repository, created if needed (log in first: `hf auth login`)")
    parser.add_argument("--push-only", metavar="MODEL_DIR", help="upload a model folder that "
                        "publish wrote before (with --push; instead of RUN_DIR OUT_DIR)")
    parser.add_argument("--private", action="store_true", help="with --push: create the "
                        "repository private")


def _upload(folder: Path, repo_id: str, private: bool) -> str:
    """Upload a model folder as it is to `repo_id` (created if needed); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private or None, exist_ok=True)
    return str(api.upload_folder(repo_id=repo_id, folder_path=folder,
                                 commit_message="segdino publish"))


def _run_model(run_dir: Path) -> Path | None:
    """The model a run folder publishes: its best.safetensors, or a cross-validation's
    ensemble of its folds."""
    return next((run_dir / name for name in ("best.safetensors", ENSEMBLE)
                 if (run_dir / name).is_file()), None)


def _check_args(args: argparse.Namespace) -> None:
    """One line for flags that do not go together or name the wrong thing, before any
    work."""
    if args.private and not args.push:
        raise UserError("--private: only with --push REPO_ID")
    if args.push_only:
        if not args.push:
            raise UserError("--push-only: needs --push REPO_ID, the repository to upload to")
        if args.run_dir or args.test_summary or args.dino_ckpt:
            raise UserError("--push-only: uploads a model folder as it is; leave out RUN_DIR, "
                            "OUT_DIR, --test-summary and --dino-ckpt")
        folder = Path(args.push_only)
        if not (folder / WEIGHTS).is_file() or read_metadata(folder / WEIGHTS) is None:
            raise UserError(f"--push-only {folder}: not a model folder of segdino publish "
                            f"(expected its {WEIGHTS})")
        return
    if not args.out_dir:
        raise UserError("RUN_DIR OUT_DIR: both needed (or --push-only MODEL_DIR --push "
                        "REPO_ID)")
    if _run_model(Path(args.run_dir)) is None:
        raise UserError(f"{args.run_dir}: no best.safetensors (or a cross-validation's "
                        f"{ENSEMBLE}) there (expected a run folder of `segdino train`)")
    out = Path(args.out_dir)
    check_writable_folder(out, "OUT_DIR")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"OUT_DIR {out}: exists and is not an empty folder (choose a new "
                        "OUT_DIR)")
    if args.test_summary and not Path(args.test_summary).is_file():
        raise UserError(f"--test-summary {args.test_summary}: no such file (expected the "
                        "summary.json of `segdino test`)")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    folder = Path(args.push_only or args.out_dir)
    if not args.push_only:
        run_dir = Path(args.run_dir)
        model = load_segdino(_run_model(run_dir), backbone=args.dino_ckpt,
                             allow_other_backbone=args.allow_other_backbone)
        card = {"run_dir": run_dir, "test_summary": args.test_summary, "repo_id": args.push}
        model.save_pretrained(folder, model_card_kwargs=card)
        print(f"model folder: {folder}  (model.safetensors, config.json, README.md)")
    if args.push:
        try:
            url = _upload(folder, args.push, args.private)
        except (HfHubHTTPError, OSError) as exc:  # refused, not logged in, offline
            raise UserError(f"--push {args.push}: the upload failed ({first_line(exc)}); the "
                            f"model folder {folder} is complete (upload it later with `segdino "
                            f"publish --push-only {folder} --push {args.push}`)") from None
        print(f"pushed: {url}")
    return 0
