"""`segdino bench`: what it runs and reports (never how fast: speed is not asserted)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from catalogue import run_segdino

from segdino.benchmark import PeakMemory, parse_engine
from segdino.commands import main
from segdino.errors import UserError
from segdino.runtime import pick_device


def test_engine_names() -> None:
    assert parse_engine("fp32") == ("torch", "fp32")
    assert parse_engine("bf16") == ("torch", "bf16")
    assert parse_engine("compile") == ("compile", "auto")
    assert parse_engine("compile-bf16") == ("compile", "bf16")
    assert parse_engine("onnx") == ("onnx", "auto")
    for bad in ("tensorrt", "compile-fp16", "fp16"):
        with pytest.raises(UserError, match=f"--engines {bad}:"):
            parse_engine(bad)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_memory_sees_an_allocation() -> None:
    memory = PeakMemory(pick_device("cpu"))
    memory.reset()
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    assert block.sum() > 0
    del block
    assert memory.peak() >= 60


def test_bench_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "32", "48", "--batch-sizes", "1", "2", "--engines", "bf16",
                 "--repeats", "1", "--warmup", "1", "--train-batch", "2", "--json", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["arch"] == "vits16" and report["size"] == [32, 48]
    rows = {(r["engine"], r["batch"]): r for r in report["inference"]}
    assert list(rows) == [("torch-fp32", 1), ("torch-fp32", 2), ("torch-bf16", 1),
                          ("torch-bf16", 2)]  # eager fp32 first, always
    for batch in (1, 2):
        fp32, bf16 = rows["torch-fp32", batch], rows["torch-bf16", batch]
        assert fp32["ratio_to_fp32"] == 1 and fp32["max_logit_diff"] == 0
        assert 0 < bf16["max_logit_diff"] < 1  # bf16 ran on the same input
        assert bf16["timed_runs"] == 1 and bf16["images_per_second"] > 0
    assert [t["mode"] for t in report["training"]] == ["uncached", "cached"]
    assert all(t["batch"] == 2 and t["images_per_second"] > 0 for t in report["training"])
    printed = capsys.readouterr().out
    assert "segdino bench: vits16, 32 x 48, cpu" in printed
    assert "torch-bf16" in printed and "uncached" in printed and "cached" in printed


def test_bench_another_decoder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--decoder", "v2", "--size", "32", "--batch-sizes", "1", "--engines",
                 "fp32", "--repeats", "1", "--warmup", "1", "--train-batch", "0", "--json",
                 str(out), "--quiet", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert [r["decoder"] for r in report["inference"]] == ["v2"]
    assert [r["decoder"] for r in report["decoders"]] == ["v2"]
    assert report["ensembles"] == [] and report["cross_validation"] is None  # not asked for
    assert "decoders (" not in capsys.readouterr().out  # nothing to compare


# The paper's and the authors' counts for ViT-S with one class (docs: reference, 2b)
PARAMETERS = {"v1": 2_213_793, "v1-proj": 2_475_937, "v2": 3_299_593}


def test_bench_every_decoder_in_one_run(tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--decoder", "all", "--size", "32", "--batch-sizes", "1", "2",
                 "--engines", "fp32", "--repeats", "1", "--warmup", "1", "--train-batch", "1",
                 "--json", str(out), "--quiet", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert [(r["decoder"], r["batch"]) for r in report["inference"]] == [
        (d, b) for d in PARAMETERS for b in (1, 2)]
    assert [(t["decoder"], t["mode"]) for t in report["training"]] == [
        (d, m) for d in PARAMETERS for m in ("uncached", "cached")]
    compared = {r["decoder"]: r for r in report["decoders"]}
    assert list(compared) == list(PARAMETERS)
    speed = {r["decoder"]: r["images_per_second"] for r in report["inference"] if r["batch"] == 2}
    cached = {t["decoder"]: t["images_per_second"] for t in report["training"]
              if t["mode"] == "cached"}
    for name, row in compared.items():
        assert row["parameters"] == PARAMETERS[name]
        assert row["batch"] == 2 and row["images_per_second"] == speed[name]  # the largest batch
        assert row["inference_ratio"] == pytest.approx(speed[name] / speed["v1"], abs=0.01)
        assert row["cached_step_images_per_second"] == cached[name]
        assert row["cached_step_ratio"] == pytest.approx(cached[name] / cached["v1"], abs=0.01)
    printed = capsys.readouterr().out
    assert "decoders v1, v1-proj, v2" in printed
    assert "3,299,593" in printed  # v2's row in the side-by-side table


def test_bench_decoders_in_the_order_given(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--decoder", "v2", "v1", "v2", "--size", "32", "--batch-sizes", "1",
                 "--engines", "fp32", "--repeats", "1", "--warmup", "1", "--train-batch", "0",
                 "--json", str(out), "--quiet", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    # named twice, timed once; ratios to the first named; no training: no step figures
    assert [r["decoder"] for r in report["decoders"]] == ["v2", "v1"]
    assert report["decoders"][0]["inference_ratio"] == 1
    assert report["decoders"][1]["cached_step_ratio"] is None


@pytest.mark.parametrize(("flags", "message"), [
    (["--engines", "fp32", "tensorrt"], "--engines tensorrt: expected"),
    (["--batch-sizes", "0"], "argument --batch-sizes: '0': expected an integer >= 1"),
    (["--size", "1", "2", "3"], "--size 1 2 3: expected one or two numbers"),
    (["--arch", "vitq"], "unknown backbone architecture 'vitq'"),
    (["--decoder", "v3"], "argument --decoder: invalid choice: 'v3'"),
    (["--folds", "1"], "--folds 1: expected 0 (not run) or 2 folds or more"),
    (["--folds", "41"], "argument --folds: '41': expected an integer from 0 to 40"),
    (["--ensemble", "-1"], "argument --ensemble: '-1': expected an integer >= 0"),
])
def test_bench_errors(flags: list[str], message: str) -> None:
    outcome = run_segdino("bench", *flags)
    assert outcome.code == 2 and message in outcome.stderr


def test_kvasir_like_dataset_spans_kvasir_sizes(tmp_path: Path) -> None:
    from PIL import Image

    from segdino.benchmark_end_to_end import LARGEST, SMALLEST, kvasir_like_dataset

    split = kvasir_like_dataset(tmp_path / "d", 3, seed=1)
    sizes = []
    for image in sorted((split / "image").iterdir()):
        with Image.open(image) as im, Image.open(split / "mask" / f"{image.stem}.png") as mask:
            assert im.format == "JPEG" and mask.size == im.size
            assert set(np.unique(np.asarray(mask))) == {0, 255}
            sizes.append((im.height, im.width))
    middle = tuple(round((a + b) / 2) for a, b in zip(SMALLEST, LARGEST, strict=True))
    assert sorted(sizes) == [SMALLEST, middle, LARGEST]


def test_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "32", "--batch-sizes", "2", "--engines", "fp32",
                 "--repeats", "1", "--warmup", "1", "--train-batch", "0", "--end-to-end", "2",
                 "--end-to-end-rounds", "1",
                 "--json", str(out), "--quiet", "--device", "cpu"]) == 0
    rows = json.loads(out.read_text())["end_to_end"]
    assert [r["pipeline"] for r in rows] == ["model only", "test", "model only",
                                             "predict --overlay", "predict"]
    assert [r["precision"] for r in rows[:2]] == ["fp32", "fp32"]
    model_s = {r["precision"]: r["seconds"] for r in rows if r["pipeline"] == "model only"}
    for r in rows:
        assert r["images"] == 2
        assert r["fraction_of_model"] == pytest.approx(model_s[r["precision"]] / r["seconds"],
                                                       abs=0.02)
    # each pipeline's ceiling: the model's time over the model's plus its stages' CPU work
    # spread over the cores, by hand from the report's own numbers
    report = json.loads(out.read_text())
    stages = report["end_to_end_stage_ms"]
    assert set(stages) == {"decode", "input", "truth", "score", "mask", "overlay"}
    assert all(ms > 0 for ms in stages.values())
    paid = {"test": ("decode", "input", "truth", "score"),
            "predict --overlay": ("decode", "input", "mask", "overlay"),
            "predict": ("decode", "input", "mask")}
    cores = len(os.sched_getaffinity(0))
    for r in rows:
        if r["pipeline"] == "model only":
            assert r["ceiling"] is None
            continue
        model_ms = 1000 * model_s[r["precision"]] / 2
        work = sum(stages[s] for s in paid[r["pipeline"]]) / cores
        assert r["ceiling"] == pytest.approx(model_ms / (model_ms + work), abs=0.01)
    printed = capsys.readouterr().out
    assert "end to end: 2 JPEGs" in printed and "predict --overlay" in printed
    assert "CPU work per image outside the model" in printed


def test_bench_ensembles_and_cross_validation(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--decoder", "v1", "v2", "--size", "32", "--batch-sizes", "1", "2",
                 "--engines", "fp32", "--repeats", "1", "--warmup", "1", "--train-batch", "0",
                 "--ensemble", "3", "--folds", "2", "--json", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    rows = report["ensembles"]
    assert [(r["decoder"], r["batch"]) for r in rows] == [("v1", 1), ("v1", 2), ("v2", 1),
                                                          ("v2", 2)]
    for r in rows:
        assert r["members"] == 3 and r["timed_runs"] == 1  # the model timed had 3 decoders
        assert r["single_images_per_second"] > 0 and r["ensemble_images_per_second"] > 0
        assert r["time_ratio"] == pytest.approx(
            r["single_images_per_second"] / r["ensemble_images_per_second"], abs=0.02)
    cv = report["cross_validation"]
    assert (cv["decoder"], cv["folds"], cv["images"], cv["epochs"]) == ("v1", 2, 40, 3)
    assert cv["single_run_s"] > 0 and cv["cross_validation_s"] > 0
    assert cv["ratio"] == pytest.approx(cv["cross_validation_s"] / cv["single_run_s"], abs=0.01)
    printed = capsys.readouterr().out
    assert "ensembles against one model" in printed and "2-fold cross-validation" in printed
    assert "fold 1/2" not in printed  # the runs' own printing held back

