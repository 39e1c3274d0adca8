"""The bad-input catalogue of `segdino train`: every case is refused with exit 2 and one line
naming the flag, setting or file, and changes nothing outside the command's own outputs.
Then the changes a resumed run may make, a second `train` into a locked run, and Ctrl-C."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from catalogue import assert_refused, run_segdino, run_segdino_process, snapshot
from conftest import FIXTURES

from segdino.training.run_folder import LOCK_FILE


@dataclass
class World:
    """What a case runs against, each test's own copy: `data` (dataset `synth`), `weights`,
    `run` (a finished one-epoch run to resume) and `new` (the save root of new runs)."""

    root: Path
    data: Path
    weights: Path
    run: Path
    new: Path

    def format(self, text: str) -> str:
        return text.format(root=self.root, data=self.data, weights=self.weights, run=self.run,
                           new=self.new)


@pytest.fixture
def world(tmp_path, tiny_run) -> World:
    shutil.copytree(tiny_run["data"], tmp_path / "data")
    shutil.copytree(tiny_run["run"], tmp_path / "runs" / "run")
    shutil.copy(tiny_run["weights"], tmp_path / "tiny_mlp.pth")
    # the run as if trained on this copy of the weights, so that --resume finds them
    config = tmp_path / "runs" / "run" / "config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "data_dir": str(tmp_path / "data"),
                                  "dino_ckpt": str(tmp_path / "tiny_mlp.pth")}))
    return World(tmp_path, tmp_path / "data", tmp_path / "tiny_mlp.pth", tmp_path / "runs" / "run",
                 tmp_path / "new")


EMPTIED, REMOVED = "<emptied>", "<removed>"  # setups that are no file's text
NEW = ("train --data-dir {data} --dataset synth --dino-ckpt {weights} --input-h 32 "
       "--input-w 32 --epochs 1 --batch-size 4 --num-workers 0 --device cpu --save-root {new} "
       "--name x --no-progress")
RESUME = "train --resume {run} --no-progress"


def config(text: str) -> dict[str, str]:
    """A setup that writes `text` as {root}/config.json."""
    return {"config.json": text}


def other_weights(world: World) -> Path:
    """The tiny backbone with one weight changed: same architecture, another SHA-256."""
    weights = torch.load(world.weights, weights_only=True)
    first = next(iter(weights))
    weights[first] = weights[first] + 1
    path = world.root / "other.pth"
    torch.save(weights, path)
    return path


# (id, command line, setup files under {root}, what the error line names)
CASES = [
    # flags, checked as they are parsed
    ("lr-zero", NEW + " --lr 0", {}, ["--lr"]),
    ("lr-negative", NEW + " --lr -1", {}, ["--lr"]),
    ("lr-nan", NEW + " --lr nan", {}, ["--lr"]),
    ("lr-inf", NEW + " --lr inf", {}, ["--lr"]),
    ("lr-text", NEW + " --lr fast", {}, ["--lr"]),
    ("weight-decay-negative", NEW + " --weight-decay -0.1", {}, ["--weight-decay"]),
    ("workers-negative", NEW + " --num-workers -1", {}, ["--num-workers"]),
    ("cache-views-zero", NEW + " --cache-views 0", {}, ["--cache-views"]),
    ("epochs-zero", NEW + " --epochs 0", {}, ["--epochs"]),
    ("batch-zero", NEW + " --batch-size 0", {}, ["--batch-size"]),
    ("height-not-patches", NEW + " --input-h 30", {}, ["--input-h"]),
    ("width-zero", NEW + " --input-w 0", {}, ["--input-w"]),
    ("val-fraction-one", NEW + " --val-fraction 1", {}, ["--val-fraction"]),
    ("val-fraction-negative", NEW + " --val-fraction -0.1", {}, ["--val-fraction"]),
    ("dice-thr-above-one", NEW + " --dice-thr 1.5", {}, ["--dice-thr"]),
    ("classes-zero", NEW + " --num-classes 0", {}, ["--num-classes"]),
    ("loss-unknown", NEW + " --loss dice", {}, ["--loss"]),
    ("amp-unknown", NEW + " --amp fp16", {}, ["--amp"]),
    ("cache-dtype-unknown", NEW + " --cache-dtype int8", {}, ["--cache-dtype"]),
    ("seed-text", NEW + " --seed x", {}, ["--seed"]),
    # --config files: the file and the setting named
    ("config-not-json", NEW + " --config {root}/config.json", config("{epochs: 1"),
     ["--config", "{root}/config.json"]),
    ("config-a-list", NEW + " --config {root}/config.json", config("[1, 2]"),
     ["{root}/config.json"]),
    ("config-missing", NEW + " --config {root}/absent.json", {}, ["{root}/absent.json"]),
    ("config-unknown-key", NEW + " --config {root}/config.json", config('{"colour": "red"}'),
     ["{root}/config.json", "colour"]),
    ("config-epochs-text", NEW + " --config {root}/config.json", config('{"epochs": "3"}'),
     ["{root}/config.json", "epochs"]),
    ("config-lr-negative", NEW + " --config {root}/config.json", config('{"lr": -1}'),
     ["{root}/config.json", "lr"]),
    ("config-augment-text", NEW + " --config {root}/config.json", config('{"augment": "yes"}'),
     ["{root}/config.json", "augment"]),
    ("config-names-not-list", NEW + " --config {root}/config.json",
     config('{"class_names": "bg"}'), ["{root}/config.json", "class_names"]),
    ("config-amp-unknown", NEW + " --config {root}/config.json", config('{"amp": "fp16"}'),
     ["{root}/config.json", "amp"]),
    ("config-size-not-patches", NEW + " --config {root}/config.json",
     config('{"input_h": 30}'), ["{root}/config.json", "input_h"]),
    ("config-workers-float", NEW + " --config {root}/config.json",
     config('{"num_workers": 1.5}'), ["{root}/config.json", "num_workers"]),
    # settings that only make sense together, and what they name
    ("nothing-given", "train", {}, ["--data-dir", "--dataset", "--dino-ckpt"]),
    ("weights-missing", NEW + " --dino-ckpt {root}/nope.pth", {}, ["{root}/nope.pth"]),
    ("dataset-missing", NEW + " --dataset absent", {}, ["{data}/absent/train"]),
    ("loss-for-classes", NEW + " --loss ce", {}, ["--loss"]),
    ("names-for-classes", NEW + " --class-names bg fg", {}, ["--class-names"]),
    # the run folder
    ("save-root-a-file", NEW.replace("{new}", "{root}/file"), {"file": "x"}, ["{root}/file"]),
    ("save-root-under-a-file", NEW.replace("{new}", "{root}/file/runs"), {"file": "x"},
     ["{root}/file"]),
    ("run-folder-a-file", NEW, {"new/x": "x"}, ["{new}/x"]),
    ("run-exists", NEW.replace("{new}", "{run}/..").replace("--name x", "--name run"), {},
     ["--resume"]),
    ("folder-holds-no-run", NEW, {"new/x/notes.txt": "mine"}, ["{new}/x"]),
    # --resume: what would change the run
    ("resume-lr", RESUME + " --lr 0.01", {}, ["--lr 0.01", "0.0001"]),
    ("resume-data-and-size", RESUME + " --dataset other --input-h 64", {},
     ["--dataset other", "--input-h 64"]),
    ("resume-classes", RESUME + " --num-classes 3", {}, ["--num-classes"]),
    ("resume-augment", RESUME + " --augment", {}, ["--augment"]),
    ("resume-config", RESUME + " --config {run}/config.json", {}, ["--config"]),
    ("resume-no-run", "train --resume {root}/nothing", {}, ["{root}/nothing"]),
    ("resume-other-arch", RESUME + f" --dino-ckpt {FIXTURES}/dinov3/tiny_swiglu.pth "
     "--allow-other-backbone", {}, ["--dino-ckpt"]),
    # the data
    ("train-folder-empty", NEW, {"data/synth/train/image": EMPTIED},
     ["{data}/synth/train/image"]),
    ("image-without-mask", NEW, {"data/synth/train/mask/0003.png": REMOVED},
     ["{data}/synth/train/image/0003.png", "no mask"]),
]


def setup(world: World, files: dict[str, str]) -> None:
    """Write each file, or remove it, or empty the folder."""
    for name, text in files.items():
        path = world.root / world.format(name)
        if text == REMOVED:
            path.unlink()
        elif text == EMPTIED:
            shutil.rmtree(path)
            path.mkdir()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


@pytest.mark.parametrize(("argv", "files", "names"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused(world, tiny_run, argv, files, names) -> None:
    setup(world, files)
    before = snapshot(world.root, tiny_run["data"].parent)
    outcome = run_segdino(*world.format(argv).split())
    assert_refused(outcome, [world.format(n) for n in names])
    assert snapshot(world.root, tiny_run["data"].parent) == before


def test_refused_other_backbone(world) -> None:
    other = other_weights(world)
    before = snapshot(world.root)
    outcome = run_segdino(*RESUME.format(run=world.run).split(), "--dino-ckpt", other)
    assert_refused(outcome, [other, "--allow-other-backbone"])
    assert snapshot(world.root) == before


def test_refused_unwritable_save_root(world) -> None:
    if not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys, which nobody may write to")
    outcome = run_segdino(*world.format(NEW).replace(str(world.new), "/sys/segdino").split())
    assert_refused(outcome, "/sys")
    assert not Path("/sys/segdino").exists()


def test_divergence_stops_before_saving(world) -> None:
    before = snapshot(world.root)
    outcome = run_segdino(*world.format(NEW).split(), "--lr", "1e30")
    error = assert_refused(outcome, ["--lr", "epoch 1"], progress_ok=True)
    assert "diverged" in error
    made = world.new / "x"
    assert not list(made.glob("*.safetensors")) and not (made / "state.pt").exists()
    assert {k: v for k, v in snapshot(world.root).items() if not k.startswith(str(made))
            } == before


def test_a_locked_run_is_refused(world) -> None:
    before = snapshot(world.root)
    with (world.run / LOCK_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a `segdino train` running in it does
        outcome = run_segdino_process(*world.format(RESUME).split())
    assert_refused(outcome, [world.run, LOCK_FILE])
    assert snapshot(world.root) == before


def test_resume_may_move_weights_and_change_workers(world) -> None:
    moved = world.root / "moved" / "tiny_mlp.pth"
    moved.parent.mkdir()
    world.weights.rename(moved)
    outcome = run_segdino(*world.format(RESUME).split(), "--dino-ckpt", moved,
                          "--num-workers", "1", "--device", "cpu")
    assert outcome.code == 0, outcome.stderr
    assert json.loads((world.run / "config.json").read_text())["dino_ckpt"] == str(moved)


def test_resume_on_other_weights_when_allowed(world) -> None:
    other = other_weights(world)
    outcome = run_segdino(*world.format(RESUME).split(), "--dino-ckpt", other,
                          "--allow-other-backbone")
    assert outcome.code == 0, outcome.stderr
    assert "used anyway (--allow-other-backbone)" in outcome.stdout


def test_ctrl_c_is_one_line(world) -> None:
    """Ctrl-C reaches the whole process group, DataLoader workers included."""
    argv = world.format(NEW).replace("--epochs 1", "--epochs 200").replace(
        "--num-workers 0", "--num-workers 2").split()
    proc = subprocess.Popen([sys.executable, "-m", "segdino", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("training on")
        time.sleep(0.5)  # into the epochs, workers running
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "segdino train: interrupted"
