"""Catalogue: outputs. Never destroy what the user made, and fail early, in one line.

Each bad case runs a command as a user would and checks that it is refused (exit 2, one
line naming the file or flag, no traceback) and that nothing changed on disk, the command's
own outputs included: every refusal comes before any work. The valid cases after the table
show what the rules allow: a rerun replaces predict's, export's and demo's own files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from catalogue import assert_refused, run_segdino, snapshot
from PIL import Image

from segdino.backbone import load_backbone
from segdino.checkpoints.format import save_segdino
from segdino.inference.predict_files import MANIFEST
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO

# Command lines and the names their error must hold, with {ckpt}, {run}, {data}, {weights}
# (the shared tiny run) and {t} (the case's own folder, laid out by `world`).
CASES: dict[str, tuple[str, list[str]]] = {
    # predict: files it did not write
    "predict into the masks of a split": (
        "predict {ckpt} {t}/split/image --out {t}/split/mask", ["{t}/split/mask/0000.png"]),
    "predict photo.jpg beside the user's photo.png": (
        "predict {ckpt} {t}/beside/photo.jpg --out {t}/beside", ["{t}/beside/photo.png"]),
    "predict --probabilities over the user's _prob.png": (
        "predict {ckpt} {t}/img/scan.png --out {t}/users --probabilities",
        ["{t}/users/scan_prob.png"]),
    "predict --color over the user's _color.png": (
        "predict {ckpt} {t}/img/scan.png --out {t}/users --color", ["{t}/users/scan_color.png"]),
    "predict --overlay where _overlay.jpg is a folder": (
        "predict {ckpt} {t}/img/scan.png --out {t}/users --overlay",
        ["{t}/users/scan_overlay.jpg"]),
    "predict --recursive over the user's file in a sub-folder": (
        "predict {ckpt} {t}/tree --recursive --out {t}/users", ["{t}/users/a/x.png"]),
    "predict --recursive where a sub-folder is a file": (
        "predict {ckpt} {t}/tree --recursive --out {t}/blocked", ["{t}/blocked/b"]),
    "predict into the input folder": (
        "predict {ckpt} {t}/img/scan.png --out {t}/img", ["{t}/img/scan.png"]),
    "predict into the input folder with --overwrite": (
        "predict {ckpt} {t}/img/scan.png --out {t}/img --overwrite", ["{t}/img/scan.png"]),
    "predict photo.jpg and photo.png": (
        "predict {ckpt} {t}/pair/photo.jpg {t}/pair/photo.png --out {t}/new",
        ["{t}/new/photo.png", "{t}/pair/photo.jpg", "{t}/pair/photo.png"]),
    "predict a folder with photo.jpg and photo.png": (
        "predict {ckpt} {t}/pair --out {t}/new --overwrite", ["{t}/new/photo.png"]),
    # predict: where it cannot write
    "predict --out an existing file": (
        "predict {ckpt} {t}/img --out {t}/file.txt", ["--out", "{t}/file.txt"]),
    "predict --out under a file": (
        "predict {ckpt} {t}/img --out {t}/file.txt/masks", ["--out", "{t}/file.txt"]),
    # predict: inputs
    "predict an unreadable image": (
        "predict {ckpt} {t}/bad --out {t}/new", ["{t}/bad/broken.png"]),
    "predict --skip-bad with no readable image": (
        "predict {ckpt} {t}/bad --skip-bad --out {t}/new", ["{t}/bad/broken.png"]),
    "predict a missing input": (
        "predict {ckpt} {t}/gone.png --out {t}/new", ["{t}/gone.png"]),
    # predict: flags
    "predict --threshold 0": ("predict {ckpt} {t}/img --out {t}/new --threshold 0",
                              ["--threshold"]),
    "predict --threshold 1": ("predict {ckpt} {t}/img --out {t}/new --threshold 1",
                              ["--threshold"]),
    "predict --threshold 1.5": ("predict {ckpt} {t}/img --out {t}/new --threshold 1.5",
                                ["--threshold"]),
    "predict --threshold -0.2": ("predict {ckpt} {t}/img --out {t}/new --threshold=-0.2",
                                 ["--threshold"]),
    "predict --threshold nan": ("predict {ckpt} {t}/img --out {t}/new --threshold nan",
                                ["--threshold"]),
    "predict --threshold half": ("predict {ckpt} {t}/img --out {t}/new --threshold half",
                                 ["--threshold"]),
    "predict --batch-size 0": ("predict {ckpt} {t}/img --out {t}/new --batch-size 0",
                               ["--batch-size"]),
    "predict --batch-size -3": ("predict {ckpt} {t}/img --out {t}/new --batch-size=-3",
                                ["--batch-size"]),
    # export
    "export over a foreign .onnx": (
        "export {ckpt} --out {t}/foreign.onnx", ["{t}/foreign.onnx"]),
    "export whose .json would replace the user's": (
        "export {ckpt} --out {t}/notes.onnx", ["{t}/notes.json"]),
    "export over a foreign .onnx beside our .json": (
        "export {ckpt} --out {t}/half.onnx", ["{t}/half.onnx"]),
    "export --out a folder": ("export {ckpt} --out {t}/dir.onnx", ["--out", "{t}/dir.onnx"]),
    "export --out under a file": (
        "export {ckpt} --out {t}/file.txt/m.onnx", ["--out", "{t}/file.txt"]),
    "export --out not .onnx": ("export {ckpt} --out {t}/m.pt", ["--out", "{t}/m.pt"]),
    "export --opset 16": ("export {ckpt} --out {t}/m.onnx --opset 16", ["--opset"]),
    "export --opset 99": ("export {ckpt} --out {t}/m.onnx --opset 99", ["--opset"]),
    "export --opset latest": ("export {ckpt} --out {t}/m.onnx --opset latest", ["--opset"]),
    # demo
    "demo into a non-empty folder not its own": ("demo --out {t}/used", ["--out", "{t}/used"]),
    "demo --out an existing file": ("demo --out {t}/file.txt", ["--out", "{t}/file.txt"]),
    "demo --out under a file": ("demo --out {t}/file.txt/demo", ["--out", "{t}/file.txt"]),
    "demo --force (removed)": ("demo --out {t}/used --force", ["--force"]),
    "demo --epochs 0": ("demo --out {t}/new --epochs 0", ["--epochs"]),
    "demo --images 0": ("demo --out {t}/new --images 0", ["--images"]),
    "demo --size 8": ("demo --out {t}/new --size 8", ["--size"]),
    # publish
    "publish into a file": ("publish {run} {t}/file.txt", ["OUT_DIR", "{t}/file.txt"]),
    "publish under a file": ("publish {run} {t}/file.txt/model", ["OUT_DIR", "{t}/file.txt"]),
    "publish into a used folder": ("publish {run} {t}/used", ["OUT_DIR", "{t}/used"]),
    "publish without OUT_DIR": ("publish {run}", ["OUT_DIR"]),
    "publish --push-only without --push": ("publish --push-only {t}/used", ["--push-only"]),
    "publish --push-only a folder that is no model's": (
        "publish --push-only {run} --push me/model", ["--push-only", "{run}"]),
    "publish --push-only with RUN_DIR": (
        "publish {run} --push-only {t}/used --push me/model", ["--push-only"]),
    # test
    "test --worst -1": ("test --ckpt {ckpt} --data-dir {data} --dataset synth --worst=-1",
                        ["--worst"]),
    "test --dice-thr 0": ("test --ckpt {ckpt} --data-dir {data} --dataset synth --dice-thr 0",
                          ["--dice-thr"]),
    "test --dice-thr 2": ("test --ckpt {ckpt} --data-dir {data} --dataset synth --dice-thr 2",
                          ["--dice-thr"]),
    "test --batch-size 0": ("test --ckpt {ckpt} --data-dir {data} --dataset synth "
                            "--batch-size 0", ["--batch-size"]),
    "test --num-workers -1": ("test --ckpt {ckpt} --data-dir {data} --dataset synth "
                              "--num-workers=-1", ["--num-workers"]),
    "test --save-root a file": ("test --ckpt {ckpt} --data-dir {data} --dataset synth "
                                "--save-root {t}/file.txt", ["--save-root", "{t}/file.txt"]),
    # train
    "train --batch-size 0": ("train --data-dir {data} --dataset synth --dino-ckpt {weights} "
                             "--batch-size 0", ["--batch-size"]),
    "train --num-workers -2": ("train --data-dir {data} --dataset synth --dino-ckpt {weights} "
                               "--num-workers=-2", ["--num-workers"]),
    "train --dice-thr 1": ("train --data-dir {data} --dataset synth --dino-ckpt {weights} "
                           "--dice-thr 1", ["--dice-thr"]),
    "train --save-root a file": ("train --data-dir {data} --dataset synth --dino-ckpt "
                                 "{weights} --input-h 32 --input-w 32 --save-root {t}/file.txt",
                                 ["--save-root", "{t}/file.txt"]),
    # bench
    "bench --batch-sizes 1 0": ("bench --batch-sizes 1 0", ["--batch-sizes"]),
    "bench --train-batch -1": ("bench --train-batch=-1", ["--train-batch"]),
    "bench --size 0": ("bench --size 0", ["--size"]),
    "bench --repeats 0": ("bench --repeats 0", ["--repeats"]),
}


def image(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def world(tmp_path: Path, tiny_run: dict[str, Path]) -> dict[str, Path]:
    """The files the cases work on, in `tmp_path`: the user's files, never to be lost."""
    t = tmp_path
    shutil.copytree(tiny_run["data"] / "synth" / "test", t / "split")
    image(t / "img" / "scan.png", 0)
    image(t / "beside" / "photo.jpg", 1)
    image(t / "beside" / "photo.png", 2)  # the user's own, not an input
    image(t / "pair" / "photo.jpg", 3)
    image(t / "pair" / "photo.png", 4)
    image(t / "tree" / "a" / "x.png", 5)
    image(t / "tree" / "b" / "y.jpg", 6)
    image(t / "tree" / "b" / "c" / "z.bmp", 7)
    image(t / "tree" / ".hidden" / "h.png", 8)
    (t / "bad").mkdir()
    (t / "bad" / "broken.png").write_bytes((t / "img" / "scan.png").read_bytes()[:80])
    (t / "users" / "a").mkdir(parents=True)
    for name in ("scan_prob.png", "scan_color.png", "a/x.png"):
        (t / "users" / name).write_bytes(b"the user's")
    (t / "users" / "scan_overlay.jpg").mkdir()
    (t / "blocked").mkdir()
    (t / "blocked" / "b").write_text("a file where predict would make a folder")
    (t / "file.txt").write_text("a file")
    (t / "used").mkdir()
    (t / "used" / "notes.txt").write_text("the user's")
    (t / "dir.onnx").mkdir()
    (t / "foreign.onnx").write_bytes(b"someone else's model")
    (t / "notes.json").write_text('{"mine": true}')
    (t / "half.json").write_text('{"format": "segdino-onnx"}')
    (t / "half.onnx").write_bytes(b"not ours")
    return {"t": t, "ckpt": tiny_run["ckpt"], "run": tiny_run["run"], "data": tiny_run["data"],
            "weights": tiny_run["weights"]}


def disk(*roots: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's content, and every path (so a new empty folder shows too)."""
    return snapshot(*roots), sorted(str(p) for root in roots for p in root.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case: str, world: dict[str, Path], tiny_run: dict[str, Path]) -> None:
    argv, names = CASES[case]
    roots = (world["t"], tiny_run["data"].parent)
    before = disk(*roots)
    outcome = run_segdino(*argv.format(**world).split())
    assert_refused(outcome, [name.format(**world) for name in names])
    assert disk(*roots) == before


# /sys: a folder nobody may write into, root included (the probe is a real write)
@pytest.mark.parametrize("argv", ["predict {ckpt} {t}/img --out /sys/segdino",
                                  "export {ckpt} --out /sys/segdino/m.onnx",
                                  "demo --out /sys/segdino", "publish {run} /sys/segdino/model"])
def test_unwritable_folder_refused(argv: str, world: dict[str, Path]) -> None:
    before = disk(world["t"])
    assert_refused(run_segdino(*argv.format(**world).split()), ["/sys"])
    assert disk(world["t"]) == before
    assert not Path("/sys/segdino").exists()


# ---- what the rules allow ----------------------------------------------------------------

def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p))
            for p in sorted(folder.rglob("*.png"))}


def test_rerun_replaces_its_own_files(world: dict[str, Path]) -> None:
    t, ckpt = world["t"], world["ckpt"]
    out = t / "new"
    assert run_segdino("predict", ckpt, t / "split" / "image", "--out", out, "--threshold",
                       "0.001", "--device", "cpu").code == 0
    first = masks(out)
    assert all(m.all() for m in first.values())  # every pixel above 0.001
    assert run_segdino("predict", ckpt, t / "split" / "image", "--out", out, "--threshold",
                       "0.999", "--device", "cpu").code == 0
    assert masks(out).keys() == first.keys()
    assert not any(m.any() for m in masks(out).values())
    assert json.loads((out / MANIFEST).read_text())["files"] == sorted(first)


def test_rerun_into_the_input_folder_skips_its_own_masks(world: dict[str, Path]) -> None:
    folder = world["t"] / "jpgs"
    image(folder / "one.jpg", 1)
    image(folder / "two.jpg", 2)
    for _ in range(2):  # the second run does not take one.png for an image
        outcome = run_segdino("predict", world["ckpt"], folder, "--out", folder,
                              "--device", "cpu")
        assert outcome.code == 0, outcome.stderr
        assert outcome.stdout.strip().endswith(f"2 mask(s) written to {folder}")
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "one.jpg", "one.png",
                                                        "two.jpg", "two.png"]


def test_overwrite_replaces_the_users_files_but_no_input(world: dict[str, Path]) -> None:
    split = world["t"] / "split"
    images = snapshot(split / "image")
    outcome = run_segdino("predict", world["ckpt"], split / "image", "--out", split / "mask",
                          "--overwrite", "--device", "cpu")
    assert outcome.code == 0, outcome.stderr
    predicted = Predictor.from_checkpoint(world["ckpt"], device="cpu")
    for name, mask in masks(split / "mask").items():
        assert np.array_equal(mask == 255, predicted(split / "image" / name))
    assert snapshot(split / "image") == images


def test_recursive_mirrors_the_folders(world: dict[str, Path]) -> None:
    out = world["t"] / "new"
    outcome = run_segdino("predict", world["ckpt"], world["t"] / "tree", "--recursive",
                          "--out", out, "--device", "cpu")
    assert outcome.code == 0, outcome.stderr
    assert sorted(masks(out)) == ["a/x.png", "b/c/z.png", "b/y.png"]  # .hidden/ left out
    # without --recursive only the folder itself is searched: here, no images
    assert_refused(run_segdino("predict", world["ckpt"], world["t"] / "tree", "--out", out),
                   str(world["t"] / "tree"))


def test_threshold_decides_the_mask(world: dict[str, Path]) -> None:
    scan = world["t"] / "img" / "scan.png"
    _, prob = Predictor.from_checkpoint(world["ckpt"], device="cpu")(
        scan, return_probabilities=True)
    threshold = float(np.quantile(prob, 0.3))
    assert (prob > threshold).sum() != (prob > 0.5).sum()  # the threshold matters here
    out = world["t"] / "new"
    assert run_segdino("predict", world["ckpt"], scan, "--out", out, "--threshold",
                       str(threshold), "--device", "cpu").code == 0
    assert np.array_equal(masks(out)["scan.png"] == 255, prob > threshold)


def test_skip_bad_warns_and_goes_on(world: dict[str, Path]) -> None:
    folder = world["t"] / "bad"
    image(folder / "good.png", 3)
    out = world["t"] / "new"
    outcome = run_segdino("predict", world["ckpt"], folder, "--skip-bad", "--out", out,
                          "--device", "cpu")
    assert outcome.code == 0, outcome.stderr
    (warning,) = outcome.stderr_lines
    assert "warning" in warning and str(folder / "broken.png") in warning
    assert sorted(masks(out)) == ["good.png"]


def test_export_replaces_its_own_export(world: dict[str, Path]) -> None:
    out = world["t"] / "model.onnx"
    for _ in range(2):
        outcome = run_segdino("export", world["ckpt"], "--out", out)
        assert outcome.code == 0, outcome.stderr
    assert sorted(p.name for p in world["t"].glob("model.*")) == ["model.json", "model.onnx"]


def test_push_only_uploads_a_published_folder(world: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, at import
    folder = world["t"] / "model"
    assert run_segdino("publish", world["run"], folder).code == 0
    before = disk(folder)
    # offline the upload fails: one line, and the folder as it was
    outcome = run_segdino("publish", "--push-only", folder, "--push", "me/model")
    assert_refused(outcome, ["--push me/model: the upload failed", str(folder)])
    assert disk(folder) == before


def test_threshold_refused_for_a_k_class_model(world: dict[str, Path],
                                               tiny_run: dict[str, Path]) -> None:
    k3 = world["t"] / "k3.safetensors"
    save_segdino(SegDINO(load_backbone(tiny_run["weights"]), num_classes=3), k3,
                 tiny_run["weights"])
    before = disk(world["t"])
    outcome = run_segdino("predict", k3, world["t"] / "img", "--out", world["t"] / "new",
                          "--threshold", "0.3", "--device", "cpu")
    assert_refused(outcome, ["--threshold", str(k3)])
    assert disk(world["t"]) == before
