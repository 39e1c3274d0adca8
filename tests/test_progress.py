"""Progress off a terminal: the Python API follows the command line's rule (bars only on a
terminal), so a notebook's or a log file's stderr gets no carriage-return redraws."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
from dataclasses import replace

from segdino.data.dataset import find_pairs
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.training.config import TrainConfig
from segdino.training.loop import train


def scored(tiny_run, out) -> None:
    predictor = Predictor.from_checkpoint(tiny_run["ckpt"], tiny_run["weights"], device="cpu",
                                          precision="fp32")
    evaluate(predictor, find_pairs(tiny_run["data"] / "synth" / "test"), out, worst=0,
             num_workers=0, progress=True)


def test_no_bars_off_a_terminal(tiny_run, tmp_path, capfd) -> None:
    cfg = TrainConfig(data_dir=str(tiny_run["data"]), dataset="synth",
                      dino_ckpt=str(tiny_run["weights"]), input_h=32, input_w=32, epochs=2,
                      batch_size=4, num_workers=0, seed=3, save_root=str(tmp_path),
                      name="run", device="cpu", cache_features=True)
    train(cfg, progress=True)  # the epoch bars and the feature cache's
    train(replace(cfg, cache_features=False, name="plain"), progress=True)
    scored(tiny_run, tmp_path / "test")
    out, err = capfd.readouterr()
    assert "\r" not in err and "\r" not in out
    assert "it/s" not in err and "caching train view" not in err
    assert out.count("epoch 2/2") == 2  # a line per epoch instead


def test_bars_on_a_terminal(tiny_run, tmp_path, monkeypatch) -> None:
    master, slave = pty.openpty()
    # 24 x 100 characters: a new terminal's size is 0 x 0, where tqdm draws empty bars
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    terminal = open(slave, "w")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        scored(tiny_run, tmp_path / "test")
        terminal.flush()
        drawn = b""
        while select.select([master], [], [], 0.2)[0]:
            drawn += os.read(master, 65536)
    finally:
        terminal.close()
        os.close(master)
    assert b"testing" in drawn and b"\r" in drawn
