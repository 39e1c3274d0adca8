"""`segdino compare` on two reports written by `segdino test`'s report writer: its numbers
against SciPy's paired `stats.bootstrap` and `stats.wilcoxon` on the values in the two
metrics.csv files, HD95 pairs that are not finite left out and counted, and its refusals
(different images, a file it did not write, a folder that is no report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from segdino.commands import main
from segdino.metrics import METRICS, ImageScores
from segdino.report import summarise_rows, write_report
from segdino.statistics import resample_batch

N = 30
INFINITE_IN_A, UNDEFINED_IN_B = (2, 5), (5, 9)  # HD95 not finite: images 2, 5 and 9 left out


def write(folder: Path, names: list[str], shift: float, seed: int,
          not_finite: tuple[int, ...], reverse: bool = False) -> None:
    """A report of `names` (written in reverse order if `reverse`): random scores around
    image i's own, raised by `shift` (model B beats A by about it)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).uniform(0.3, 0.8, (len(names), 5))  # shared: paired data
    rows = []
    for i, name in enumerate(names):
        values = np.clip(base[i, :4] + shift + rng.normal(0, 0.05, 4), 0, 1)
        hd95 = (math.inf if i in INFINITE_IN_A else math.nan) if i in not_finite else \
            float(30 * base[i, 4] - 20 * shift + rng.normal(0, 2))
        rows.append((name, ImageScores(*map(float, values), hd95)))
    rows = rows[::-1] if reverse else rows
    scores = [s for _, s in rows]
    write_report(rows, summarise_rows(scores, 1, resamples=100), folder)


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path]:
    names = [f"case{i:02d}.png" for i in range(N)]
    write(tmp_path / "a", names, 0.0, 1, INFINITE_IN_A)
    write(tmp_path / "b", names, 0.02, 2, UNDEFINED_IN_B, reverse=True)  # order: no matter
    a_rows, b_rows = read(tmp_path / "a"), read(tmp_path / "b")
    assert a_rows.keys() == b_rows.keys()
    return tmp_path / "a", tmp_path / "b"


def read(folder: Path) -> dict[str, dict[str, float]]:
    with open(folder / "metrics.csv", newline="") as f:
        return {row.pop("image"): {k: float(v) for k, v in row.items()}
                for row in csv.DictReader(f) if row["image"] not in ("MEAN", "SD", "MEDIAN")}


def test_compare_is_scipys_paired_bootstrap_and_wilcoxon(reports, tmp_path, capsys) -> None:
    a_dir, b_dir = reports
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a_dir), str(b_dir), "--out", str(out), "--bootstrap", "2000",
                 "--seed", "4"]) == 0
    result = json.loads(out.read_text())
    a_rows, b_rows = read(a_dir), read(b_dir)
    names = list(a_rows)
    assert result["images"] == N and list(result["metrics"]) == list(METRICS)
    for metric in METRICS:
        a = np.array([a_rows[n][metric] for n in names])
        b = np.array([b_rows[n][metric] for n in names])
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        ci = stats.bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                             paired=True, n_resamples=2000, batch=resample_batch(len(a)),
                             method="percentile",
                             rng=np.random.default_rng(4)).confidence_interval
        got = result["metrics"][metric]
        assert got["images"] == (N - 3 if metric == "hd95" else N), metric
        assert got["left_out"] == (3 if metric == "hd95" else 0), metric
        assert got["mean_a"] == pytest.approx(a.mean(), rel=1e-12)
        assert got["mean_b"] == pytest.approx(b.mean(), rel=1e-12)
        assert got["mean_difference"] == pytest.approx((a - b).mean(), rel=1e-12)
        assert got["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-12), metric
        assert got["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    assert result["metrics"]["dice"]["ci95"][1] < 0  # B is better by ~0.02: A - B < 0
    printed = capsys.readouterr().out
    dice = result["metrics"]["dice"]
    assert (f"{dice['mean_a']:.4f}" in printed and
            f"[{dice['ci95'][0]:+.4f}, {dice['ci95'][1]:+.4f}]" in printed)
    assert f"hd95: 3 of {N} images left out" in printed


def test_reports_on_different_images_are_refused(reports, tmp_path, capsys) -> None:
    a_dir, _ = reports
    names = [f"case{i:02d}.png" for i in range(N)]
    names[:2] = ["other1.png", "other2.png"]
    write(tmp_path / "c", names + ["extra.png"], 0.0, 3, ())
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a_dir), str(tmp_path / "c"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"{a_dir} and {tmp_path / 'c'} score different images (2 only in {a_dir}, 3 only "
            f"in {tmp_path / 'c'})") in err
    assert not out.exists()


def test_a_file_compare_did_not_write_is_kept(reports, tmp_path, capsys) -> None:
    a_dir, b_dir = reports
    out = tmp_path / "notes.json"
    out.write_text('{"mine": 1}\n')
    assert main(["compare", str(a_dir), str(b_dir), "--out", str(out)]) == 2
    assert "is not a segdino compare result" in capsys.readouterr().err
    assert out.read_text() == '{"mine": 1}\n'
    ours = tmp_path / "cmp.json"
    for seed in ("1", "2"):  # the second run replaces the first's file: compare wrote it
        assert main(["compare", str(a_dir), str(b_dir), "--out", str(ours), "--seed",
                     seed, "--bootstrap", "200"]) == 0
    assert json.loads(ours.read_text())["bootstrap"]["seed"] == 2


def test_a_folder_without_a_report_is_refused(reports, tmp_path, capsys) -> None:
    a_dir, _ = reports
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(a_dir), str(tmp_path / "empty"), "--out",
                 str(tmp_path / "cmp.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read metrics.csv" in err
