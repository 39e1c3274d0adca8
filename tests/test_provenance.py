"""Provenance of runs and reports, and what `segdino train` prints where the output is no
terminal: each checked against an independent source (hashlib, importlib.metadata, git)."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES

import segdino.provenance as provenance
from segdino.checkpoints.load import load_segdino
from segdino.checkpoints.model_card import model_card
from segdino.commands import main
from segdino.data.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_environment(entry: dict) -> None:
    assert entry["segdino"] == importlib.metadata.version("segdino")
    assert entry["torch"] == torch.__version__
    assert entry["python"] == platform.python_version()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", entry["date"])


def test_train_records_each_invocation(tmp_path, capfd) -> None:
    make_synthetic_dataset(tmp_path / "data" / "synth", n_train=8, n_val=4, n_test=4,
                           size=(32, 32), seed=1)
    weights = tmp_path / "tiny_mlp.pth"
    shutil.copy(FIXTURES / "dinov3" / "tiny_mlp.pth", weights)
    run_dir = tmp_path / "runs" / "run"
    assert main(["train", "--data-dir", str(tmp_path / "data"), "--dataset", "synth",
                 "--backbone", str(weights), "--input-h", "32", "--input-w", "32",
                 "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
                 "--save-root", str(tmp_path / "runs"), "--name", "run"]) == 0
    assert main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 0
    out, err = capfd.readouterr()
    # Not a terminal: no redrawn bars, one line per epoch, each but the last with the run's ETA.
    assert "\r" not in out + err
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/1", "2/3", "3/3"]
    assert "eta " in lines[1] and "eta " not in lines[2]

    invocations = json.loads((run_dir / "provenance.json").read_text())["invocations"]
    assert [i["epochs_done_before"] for i in invocations] == [0, 1]
    assert [i["epochs"] for i in invocations] == [1, 3]
    for entry in invocations:
        check_environment(entry)
        assert entry["device"] == "cpu" and entry["precision"] == "fp32"
        assert entry["backbone"]["path"] == str(weights.absolute())
        assert entry["backbone"]["sha256"] == file_sha(weights)
    for name, record in invocations[-1]["checkpoints"].items():
        assert record == {"path": str((run_dir / name).absolute()),
                          "sha256": file_sha(run_dir / name)}
    assert set(invocations[-1]["checkpoints"]) == {"best.safetensors", "last.safetensors"}
    # steps.csv: every step of the three epochs, once (the resumed run appended its own), and
    # each epoch's mean step loss (equal batches) is the training loss metrics.csv reports.
    with (run_dir / "steps.csv").open() as f:
        steps = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["step"])) for r in steps] == [
        (e, s) for e in (1, 2, 3) for s in (1, 2)]
    assert {float(r["lr"]) for r in steps} == {1e-4}
    with (run_dir / "metrics.csv").open() as f:
        epochs = list(csv.DictReader(f))
    for row in epochs:
        losses = [float(r["loss"]) for r in steps if r["epoch"] == row["epoch"]]
        assert sum(losses) / len(losses) == pytest.approx(float(row["train_loss"]))
    # The resumed run's settings, and the command that reproduces it, are the final ones.
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    card = str(model_card(load_segdino(run_dir / "best.safetensors"), run_dir))
    assert "--epochs 3" in card

    report = tmp_path / "runs" / "report"
    assert main(["test", "--ckpt", str(run_dir / "best.safetensors"), "--data-dir",
                 str(tmp_path / "data"), "--dataset", "synth", "--save-root",
                 str(tmp_path / "runs"), "--name", "report", "--num-workers", "0",
                 "--device", "cpu"]) == 0
    test_record = json.loads((report / "summary.json").read_text())["provenance"]
    check_environment(test_record)
    assert test_record["checkpoint"]["sha256"] == file_sha(run_dir / "best.safetensors")
    assert test_record["backbone"]["sha256"] == file_sha(weights)


def test_git_commit_of_a_checkout() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    if head.returncode or not (REPO / ".git").exists():
        pytest.skip("not run from a git checkout")
    assert provenance.git_state()["git_commit"] == head.stdout.strip()


def test_no_git_commit_for_an_installed_copy(tmp_path, monkeypatch) -> None:
    (tmp_path / "__init__.py").write_text("")  # a copy of the package outside any checkout
    monkeypatch.setattr(provenance, "PACKAGE", tmp_path)
    assert provenance.git_state() == {}
    assert "git_commit" not in provenance.environment("cpu", "fp32")
