"""`segdino train --log tensorboard`: the event files hold the numbers of steps.csv and
metrics.csv (read back with TensorBoard's own reader), a resumed run appends without
repeating, and a missing tensorboard package is a one-line error naming the extra."""

from __future__ import annotations

import csv
import shutil
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segdino.commands import main
from segdino.training.config import TrainConfig
from segdino.training.loop import train

STEPS_PER_EPOCH = 2  # 7 training images (8 less a 10% hold-out of 1), batch 4


def config(tiny_run, save_root, **kw) -> TrainConfig:
    settings = dict(data_dir=str(tiny_run["data"]), dataset="synth",
                    dino_ckpt=str(tiny_run["weights"]), input_h=32, input_w=32, epochs=2,
                    batch_size=4, num_workers=0, seed=3, save_root=str(save_root), name="run",
                    device="cpu", log="tensorboard")
    return TrainConfig(**{**settings, **kw})


def csv_rows(path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def check_against_csv(run_dir) -> None:
    logged = scalars(run_dir)
    steps = csv_rows(run_dir / "steps.csv")
    at = [(int(r["epoch"]) - 1) * STEPS_PER_EPOCH + int(r["step"]) for r in steps]
    assert [s for s, _ in logged["step/loss"]] == at  # every step once, in order
    assert [v for _, v in logged["step/loss"]] == pytest.approx(
        [float(r["loss"]) for r in steps], rel=1e-6)
    assert [v for _, v in logged["step/lr"]] == pytest.approx(
        [float(r["lr"]) for r in steps], rel=1e-6)
    epochs = csv_rows(run_dir / "metrics.csv")
    columns = [c for c in epochs[0] if c != "epoch"]
    assert sorted(logged) == sorted(["step/loss", "step/lr", *(f"epoch/{c}" for c in columns)])
    for column in columns:
        assert logged[f"epoch/{column}"] == [
            (int(r["epoch"]) * STEPS_PER_EPOCH, pytest.approx(float(r[column]), rel=1e-6))
            for r in epochs], column


def test_events_match_the_csv_files_and_resume_appends(tiny_run, tmp_path) -> None:
    run_dir = train(config(tiny_run, tmp_path), progress=False)
    assert len(csv_rows(run_dir / "steps.csv")) == 2 * STEPS_PER_EPOCH
    check_against_csv(run_dir)
    after_two = tmp_path / "state-after-2.pt"
    shutil.copy(run_dir / "state.pt", after_two)

    train(config(tiny_run, tmp_path, epochs=3), resume=run_dir, progress=False)
    check_against_csv(run_dir)
    # As if that run had logged epoch 3 and been killed before its state.pt: the rerun of
    # epoch 3 replaces what was logged, in TensorBoard as in steps.csv.
    shutil.copy(after_two, run_dir / "state.pt")
    train(config(tiny_run, tmp_path, epochs=3), resume=run_dir, progress=False)
    assert len(list((run_dir / "tensorboard").iterdir())) == 3  # an event file per invocation
    assert len(csv_rows(run_dir / "metrics.csv")) == 3
    check_against_csv(run_dir)


def test_missing_tensorboard_is_one_line(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    code = main(["train", "--data-dir", str(tiny_run["data"]), "--dataset", "synth",
                 "--dino-ckpt", str(tiny_run["weights"]), "--input-h", "32", "--input-w", "32",
                 "--save-root", str(tmp_path), "--name", "run", "--log", "tensorboard"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "pip install segdino[tensorboard]" in err
    assert not (tmp_path / "run").exists()  # refused before any work
