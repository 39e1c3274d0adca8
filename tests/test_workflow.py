"""End to end on generated data: the reference's own commands, resume after a kill,
determinism, validation choice, and every bad input a clear one-line error."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image
from safetensors.torch import load_file

from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.model_card import model_card
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.data.files import read_mask
from segdino.data.holdout import holdout
from segdino.data.synthetic import make_synthetic_dataset
from segdino.inference.predictor import Predictor
from segdino.metrics import HD95_VARIANTS
from segdino.training.config import TrainConfig
from segdino.training.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = FIXTURES / "dinov3" / "tiny_mlp.pth"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """DATA_DIR with one dataset `synth` in the reference layout (train/val/test)."""
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth", n_train=12, n_val=4, n_test=4, size=(40, 48), seed=1)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The tiny backbone in Meta's format, under the name a user's file would have."""
    path = tmp_path_factory.mktemp("weights") / "tiny_mlp.pth"
    shutil.copy(TINY, path)
    return path


def tiny_config(data: Path, weights: Path, save_root: Path, **kw) -> TrainConfig:
    settings = dict(data_dir=str(data), dataset="synth", dino_ckpt=str(weights), input_h=32,
                    input_w=32, epochs=2, batch_size=4, num_workers=0, seed=3,
                    save_root=str(save_root), name="run", device="cpu")
    return TrainConfig(**{**settings, **kw})


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def python(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_reference_commands_work_as_written(tmp_path, data, weights) -> None:
    train_cmd = ["train_segdino.py", "--data_dir", str(data), "--dataset", "synth",
                 "--input_h", "32", "--input_w", "32", "--dino_size", "s", "--dino_ckpt",
                 str(weights), "--repo_dir", "./dinov3", "--img_dir_name", "image",
                 "--label_dir_name", "mask", "--img_ext", ".png", "--mask_ext", ".png",
                 "--epochs", "1", "--batch_size", "4", "--lr", "1e-4", "--weight_decay", "1e-4",
                 "--num_workers", "0", "--seed", "42", "--num_classes", "1", "--dice_thr", "0.5",
                 "--save_root", str(tmp_path / "runs")]
    result = python(*train_cmd)
    assert result.returncode == 0, result.stderr
    assert "--repo-dir is not needed" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    for name in ("config.json", "metrics.csv", "curves.png", "val_overlays.jpg",
                 "best.safetensors", "last.safetensors", "state.pt"):
        assert (run_dir / name).is_file(), name
    assert len(read_csv(run_dir / "metrics.csv")) == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["input_h"] == 32 and config["lr"] == 1e-4 and config["epochs"] == 1

    test_cmd = ["test_segdino.py", "--data_dir", str(data), "--dataset", "synth",
                "--dino_size", "s", "--dino_ckpt", str(weights), "--repo_dir", "./dinov3",
                "--ckpt", str(run_dir / "best.safetensors"), "--num_workers", "0",
                "--batch_size", "4", "--dice_thr", "0.5", "--save_root", str(tmp_path / "test")]
    result = python(*test_cmd)
    assert result.returncode == 0, result.stderr
    (report,) = (tmp_path / "test").iterdir()
    rows = read_csv(report / "metrics.csv")
    assert [r["image"] for r in rows] == ["0000.png", "0001.png", "0002.png", "0003.png",
                                          "MEAN", "SD", "MEDIAN"]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["input_size"] == [32, 32]  # the checkpoint's own training size
    assert summary["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows[:-1]]),
                                            abs=1e-6)
    assert len(list((report / "worst").glob("*.jpg"))) == 4


@pytest.mark.parametrize("hd95", ["standard", "medpy", "v2"])
def test_test_scores_match_an_independent_recount(tmp_path, data, hd95) -> None:
    """Native-size scoring: the reference checkpoint's masks, scored pixel by pixel here (HD95
    by the variant `--hd95` names, whose values tests/test_metrics.py checks)."""
    ckpt = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
    code = main(["test", "--ckpt", str(ckpt), "--data-dir", str(data), "--dataset", "synth",
                 "--input-h", "48", "--input-w", "64", "--num-workers", "0", "--hd95", hd95,
                 "--save-root", str(tmp_path), "--name", "t", "--no-progress"])
    assert code == 0
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["hd95_variant"] == hd95
    rows = read_csv(tmp_path / "t" / "metrics.csv")
    predictor = Predictor.from_checkpoint(ckpt, precision="fp32")  # as test scores
    predictor.model.preprocessing.input_size = (48, 64)
    for (image, mask), row in zip(find_pairs(data / "synth" / "test"), rows, strict=False):
        pred, truth = predictor(image), read_mask(mask)
        assert pred.shape == truth.shape  # scored at the image's own size
        overlap = np.logical_and(pred, truth).sum()
        expected = (2 * overlap + 1e-6) / (pred.sum() + truth.sum() + 1e-6)
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
        assert float(row["hd95"]) == pytest.approx(
            HD95_VARIANTS[hd95](pred, truth, (1.0, 1.0)), abs=1e-6, nan_ok=True)


def test_eval_size_input_and_reference_hd95(tmp_path, data) -> None:
    ckpt = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
    args = ["test", "--ckpt", str(ckpt), "--dataset", "synth", "--input-h", "32",
            "--input-w", "32", "--num-workers", "0", "--no-progress", "--save-root", str(tmp_path)]
    assert main([*args, "--data-dir", str(data), "--name", "ref", "--eval-size", "input",
                 "--hd95", "reference"]) == 0
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["eval_size"] == "input" and summary["hd95_variant"] == "reference"
    # an image whose truth is empty: its HD95 is counted, not dropped
    odd = tmp_path / "odd_data" / "synth" / "test"
    shutil.copytree(data / "synth" / "test", odd)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(odd / "mask" / "0000.png")
    Image.new("RGB", (48, 40)).save(odd / "image" / "0000.png")
    assert main([*args, "--data-dir", str(tmp_path / "odd_data"), "--name", "odd"]) == 0
    summary = json.loads((tmp_path / "odd" / "summary.json").read_text())
    assert summary["hd95_undefined"] + summary["hd95_infinite"] == 1


def test_training_is_deterministic(tmp_path, data, weights) -> None:
    first = train(tiny_config(data, weights, tmp_path / "a", augment=True), progress=False)
    second = train(tiny_config(data, weights, tmp_path / "b", augment=True), progress=False)
    losses = [[r["train_loss"] for r in read_csv(d / "metrics.csv")] for d in (first, second)]
    assert losses[0] == losses[1]
    a, b = (load_file(d / "last.safetensors") for d in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_file_reruns_the_run(tmp_path, data, weights) -> None:
    run_dir = train(tiny_config(data, weights, tmp_path, epochs=1), progress=False)
    assert main(["train", "--config", str(run_dir / "config.json"), "--name", "again",
                 "--no-progress"]) == 0
    a, b = (load_file(d / "last.safetensors") for d in (run_dir, tmp_path / "again"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_kill_gives_the_same_weights(tmp_path, data, weights) -> None:
    epochs = 12
    reference = train(tiny_config(data, weights, tmp_path / "whole", epochs=epochs),
                      progress=False)
    cfg = tiny_config(data, weights, tmp_path / "killed", epochs=epochs)
    args = ["-m", "segdino", "train", "--no-progress"]
    for key, value in vars(cfg).items():
        if value is not None and not isinstance(value, bool):
            args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    metrics_csv = tmp_path / "killed" / "run" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics_csv.is_file()
                                          and len(read_csv(metrics_csv)) >= 2):
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_csv(metrics_csv))
    assert 2 <= done < epochs
    assert main(["train", "--resume", str(tmp_path / "killed" / "run"), "--no-progress"]) == 0
    assert len(read_csv(metrics_csv)) == epochs
    a = load_file(reference / "last.safetensors")
    b = load_file(tmp_path / "killed" / "run" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_interrupted_before_its_first_state_starts_again(tmp_path, data, weights,
                                                              capsys) -> None:
    """What a run leaves before its first epoch ends (config.json, val_list.txt, train.lock;
    here by diverging) does not stop it from being started again, under --resume or not."""
    reference = train(tiny_config(data, weights, tmp_path / "whole"), progress=False)
    args = ["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt", str(weights),
            "--input-h", "32", "--input-w", "32", "--epochs", "2", "--batch-size", "4",
            "--num-workers", "0", "--seed", "3", "--device", "cpu", "--save-root",
            str(tmp_path / "cut"), "--name", "run", "--no-progress"]
    assert main([*args, "--lr", "1e30"]) == 2
    run_dir = tmp_path / "cut" / "run"
    assert (run_dir / "config.json").is_file() and not (run_dir / "state.pt").exists()
    assert main(args) == 0
    assert f"restarting {run_dir}" in capsys.readouterr().out
    a, b = (load_file(d / "last.safetensors") for d in (reference, run_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)
    (run_dir / "state.pt").unlink()  # as if cut short again: --resume restarts it too
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert f"restarting {run_dir}" in capsys.readouterr().out


def test_resume_extends_epochs_and_records_them(tmp_path, data, weights) -> None:
    reference = train(tiny_config(data, weights, tmp_path / "whole", epochs=3), progress=False)
    run_dir = train(tiny_config(data, weights, tmp_path / "short", epochs=1), progress=False)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    assert len(read_csv(run_dir / "metrics.csv")) == 3
    a, b = (load_file(d / "last.safetensors") for d in (reference, run_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_val_fraction_zero_trains_on_all_of_train(tmp_path, data, weights, capsys) -> None:
    """The reference's protocol: no validation, the last epoch's model kept."""
    no_val = tmp_path / "noval"
    shutil.copytree(data / "synth" / "train", no_val / "synth" / "train")
    assert main(["train", "--data-dir", str(no_val), "--dataset", "synth", "--dino-ckpt",
                 str(weights), "--input-h", "32", "--input-w", "32", "--epochs", "2",
                 "--num-workers", "0", "--val-fraction", "0", "--save-root", str(tmp_path),
                 "--name", "all", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 train and 0 val images" in out and "no validation (--val-fraction 0)" in out
    run_dir = tmp_path / "all"
    assert not (run_dir / "val_list.txt").exists()
    rows = read_csv(run_dir / "metrics.csv")
    assert len(rows) == 2 and not any(key.startswith("val_") for key in rows[0])
    a, b = (load_file(run_dir / f"{name}.safetensors") for name in ("best", "last"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = str(model_card(load_segdino(run_dir / "best.safetensors"), run_dir))
    assert "none (`--val-fraction 0`)" in card and "### Validation" not in card


def test_validation_is_held_out_of_train_when_there_is_no_val(tmp_path, data, weights) -> None:
    no_val = tmp_path / "noval"
    shutil.copytree(data / "synth" / "train", no_val / "synth" / "train")
    run_dir = train(tiny_config(no_val, weights, tmp_path, epochs=1), progress=False)
    listed = (run_dir / "val_list.txt").read_text().split()
    _, val = holdout(find_pairs(no_val / "synth" / "train"), 0.1, seed=3)
    assert listed == [image.name for image, _ in val] and len(listed) == 1


def error_of(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path, data, weights, capsys) -> None:
    base = ["train", "--data-dir", str(data), "--dataset", "synth", "--dino-ckpt", str(weights),
            "--input-h", "32", "--input-w", "32", "--epochs", "1", "--num-workers", "0",
            "--save-root", str(tmp_path), "--no-progress"]
    err = error_of(capsys, ["train", "--dataset", "synth"])
    assert "missing --data-dir, --dino-ckpt" in err
    err = error_of(capsys, [*base, "--dino-ckpt", str(tmp_path / "nope.pth")])
    assert "--dino-ckpt" in err and "nope.pth" in err and "\n" not in err
    err = error_of(capsys, [*base, "--dataset", "absent"])
    assert "absent/train: no such folder" in err
    err = error_of(capsys, [*base, "--dino-size", "s+"])
    assert "not the vits16plus that was asked for" in err and "\n" not in err
    err = error_of(capsys, [*base, "--dino-size", "xl"])
    assert "unknown backbone architecture 'xl'" in err
    (tmp_path / "bad.json").write_text('{"epochs": 1, "colour": "red"}')
    err = error_of(capsys, [*base, "--config", str(tmp_path / "bad.json")])
    assert "unknown settings ['colour']" in err
    assert main([*base, "--name", "taken"]) == 0
    err = error_of(capsys, [*base, "--name", "taken"])
    assert "exists and is not empty" in err and "--resume" in err
    err = error_of(capsys, ["train", "--resume", str(tmp_path / "nothing")])
    assert "no config.json or state.pt" in err


def test_broken_dataset_lists_every_problem(tmp_path, weights, capsys) -> None:
    root = tmp_path / "d"
    make_synthetic_dataset(root / "synth", n_train=6, n_val=2, n_test=2, size=(40, 48), seed=2)
    train_dir = root / "synth" / "train"
    (train_dir / "mask" / "0001.png").unlink()  # a missing mask
    (train_dir / "image" / "0002.png").write_bytes(b"not a png")  # an unreadable image
    Image.new("L", (10, 10)).save(train_dir / "mask" / "0003.png")  # a size mismatch
    err = error_of(capsys, ["train", "--data-dir", str(root), "--dataset", "synth",
                            "--dino-ckpt", str(weights), "--save-root", str(tmp_path)])
    assert "3 problem(s)" in err
    assert "0001.png: no mask" in err and "0002.png: unreadable" in err and "0003.png" in err


def test_test_command_errors(tmp_path, data, capsys) -> None:
    ckpt = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
    base = ["test", "--data-dir", str(data), "--dataset", "synth", "--save-root", str(tmp_path),
            "--num-workers", "0", "--no-progress"]
    err = error_of(capsys, [*base, "--ckpt", str(tmp_path / "missing.pth")])
    assert "missing.pth: no such checkpoint" in err
    err = error_of(capsys, [*base, "--ckpt", str(ckpt), "--dino-size", "s+"])
    assert "--dino-size" in err and "not the vits16plus" in err
    err = error_of(capsys, [*base, "--ckpt", str(ckpt), "--split", "holdout"])
    assert "holdout/image: no such folder" in err


def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--images", "8", "--size", "64",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Real results need the DINOv3 weights" in printed
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in printed
    assert (out / "run" / "best.safetensors").is_file()
    assert (out / "test" / "summary.json").is_file()
    assert len(list((out / "predictions").glob("*_overlay.jpg"))) == 2
    # A rerun replaces the earlier demo's folder (marked as the demo's), so `make demo` reruns.
    (out / "predictions" / "stale.png").write_bytes(b"from the first run")
    assert main(["demo", "--out", str(out), "--epochs", "1", "--images", "4", "--size", "32",
                 "--no-progress", "--decoder", "v2"]) == 0
    assert not (out / "predictions" / "stale.png").exists()
    assert (out / "run" / "best.safetensors").is_file()
    config = json.loads((out / "run" / "config.json").read_text())
    assert (config["decoder"], config["resize"]) == ("v2", "bilinear")  # with v2's recipe


def test_version_is_the_installed_package(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"segdino {importlib.metadata.version('segdino')}"
