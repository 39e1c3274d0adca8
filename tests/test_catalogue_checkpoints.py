"""The bad-input catalogue of checkpoints and backbone weights, across `segdino test`,
`predict`, `export` and `publish`: each bad input is refused with exit code 2 and one line
naming the file or flag, and nothing outside the command's outputs changes. Then the valid
cases the refusals sit beside: a reference checkpoint's own backbone, --allow-other-backbone,
test's report folders and their provenance, and test's Dice against the reference's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from catalogue import assert_refused, run_segdino, snapshot
from conftest import FIXTURES
from PIL import Image
from safetensors.torch import load_file, save_file

from segdino import evaluation as evaluate
from segdino.checkpoints.format import read_metadata, save_segdino
from segdino.checkpoints.load import load_segdino

REFERENCE = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
TINY = FIXTURES / "dinov3" / "tiny_mlp.pth"
COMMANDS = ("test", "predict", "export", "publish")


def perturbed(sd: dict, scale: float = 0.05, seed: int = 0) -> dict:
    """The same architecture with other weights (another download, a fine-tuned copy)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in sd.items()}


def with_value(sd: dict, key: str, value: float) -> dict:
    bad = dict(sd)
    bad[key] = bad[key].clone()
    bad[key].view(-1)[0] = value
    return bad


def without(sd: dict, key: str) -> dict:
    return {k: v for k, v in sd.items() if k != key}


# ---- the bad files ------------------------------------------------------------------------


class Maker:
    """Writes the catalogue's files under `root`: ours as `<case>/best.safetensors` (so that
    publish, which takes a run folder, can read it too), the reference's as `<case>.pth`."""

    def __init__(self, root: Path, tiny_run: dict[str, Path]) -> None:
        self.root, self.ckpt = root, tiny_run["ckpt"]
        self.meta = read_metadata(self.ckpt)
        self.head = load_file(self.ckpt)
        self.reference = torch.load(REFERENCE, weights_only=True)
        self.backbone = torch.load(TINY, weights_only=True)
        (root / "weights").mkdir()

    def ours_path(self, case: str) -> Path:
        folder = self.root / case
        folder.mkdir(parents=True)
        return folder / "best.safetensors"

    def ours(self, case: str, head: dict | None = None, meta: str | None = None) -> Path:
        path = self.ours_path(case)
        text = json.dumps(self.meta) if meta is None else meta
        save_file(self.head if head is None else head, path, metadata={"segdino": text})
        return path

    def ours_meta(self, case: str, **changes) -> Path:
        return self.ours(case, meta=json.dumps({**self.meta, **changes}))

    def ours_bytes(self, case: str, data: bytes) -> Path:
        path = self.ours_path(case)
        path.write_bytes(data)
        return path

    def ours_recording(self, case: str, backbone_file: Path) -> Path:
        """A checkpoint of ours that records `backbone_file` as its backbone."""
        path = self.ours_path(case)
        save_segdino(load_segdino(self.ckpt), path, backbone_file)
        return path

    def reference_file(self, case: str, sd: object) -> Path:
        path = self.root / f"{case}.pth"
        torch.save(sd, path)
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def weights(self, name: str, sd: dict) -> Path:
        path = self.root / "weights" / name
        path.parent.mkdir(exist_ok=True)
        torch.save(sd, path)
        return path


def _broken_header() -> bytes:
    header = b'{"classifier.weight": {"dtype": "F32", "shape": [1, '  # cut off
    return struct.pack("<Q", len(header)) + header + bytes(64)


def _beside(m: Maker) -> Path:
    """A checkpoint whose recorded backbone is gone, and other weights of that name beside
    it (`wrong_beside/tiny_beside.pth`)."""
    away = m.weights("tiny_beside.pth", m.backbone)
    path = m.ours_recording("wrong_beside", away)
    away.unlink()
    torch.save(perturbed(m.backbone), path.parent / "tiny_beside.pth")
    return path


def _nan_backbone(m: Maker) -> Path:
    """A checkpoint recording backbone weights (`weights/tiny_nan.pth`, by their true
    SHA-256) that hold a NaN."""
    weights = m.weights("tiny_nan.pth", with_value(m.backbone, "norm.weight", float("nan")))
    return m.ours_recording("nan_backbone", weights)


def _unfindable(m: Maker) -> Path:
    weights = m.weights("tiny_gone.pth", m.backbone)
    path = m.ours_recording("unfindable", weights)
    weights.unlink()
    return path


def _folder(m: Maker, name: str = "folder.pth") -> Path:
    path = m.root / name
    path.mkdir()
    return path


# Each maker returns the file it made (for ours, `<key>/best.safetensors`).
FILES: dict[str, Callable[[Maker], Path]] = {
    # checkpoints of ours (.safetensors)
    "empty_st": lambda m: m.ours_bytes("empty_st", b""),
    "random_st": lambda m: m.ours_bytes("random_st", np.random.default_rng(0).bytes(4096)),
    "broken_header": lambda m: m.ours_bytes("broken_header", _broken_header()),
    "truncated_st": lambda m: m.ours_bytes("truncated_st", m.ckpt.read_bytes()[:-1000]),
    "meta_corrupt": lambda m: m.ours("meta_corrupt", meta=json.dumps(m.meta)[:40]),
    "meta_empty": lambda m: m.ours("meta_empty", meta=""),
    "meta_list": lambda m: m.ours("meta_list", meta="[]"),
    "meta_no_classes": lambda m: m.ours(
        "meta_no_classes", meta=json.dumps(without(m.meta, "num_classes"))),
    "meta_bad_sha": lambda m: m.ours_meta("meta_bad_sha",
                                          backbone={**m.meta["backbone"], "sha256": "abc"}),
    "meta_newer": lambda m: m.ours_meta("meta_newer", version=99),
    "meta_layers": lambda m: m.ours_meta("meta_layers", layers=[1, 2]),
    "meta_preprocessing": lambda m: m.ours_meta("meta_preprocessing", preprocessing={}),
    "nan_head": lambda m: m.ours("nan_head", head=with_value(m.head, "classifier.weight",
                                                             float("nan"))),
    "inf_head": lambda m: m.ours("inf_head", head=with_value(m.head, "projections.0.bias",
                                                             float("inf"))),
    "missing_head_key": lambda m: m.ours("missing_head_key",
                                         head=without(m.head, "classifier.bias")),
    "nan_backbone": _nan_backbone,
    "wrong_beside": _beside,
    "unfindable": _unfindable,
    # the reference's layout (.pth)
    "empty_pth": lambda m: m.raw("empty.pth", b""),
    "truncated_pth": lambda m: m.raw("truncated.pth", REFERENCE.read_bytes()[:5000]),
    "random_pth": lambda m: m.raw("random.pth", np.random.default_rng(1).bytes(4096)),
    "text_pth": lambda m: m.raw("text.pth", b"not a checkpoint\n"),
    "list_pth": lambda m: m.reference_file("list", [1, 2, 3]),
    "code_pth": lambda m: m.reference_file("code", {"when": datetime.date(2020, 1, 1)}),
    "inf_reference": lambda m: m.reference_file(
        "inf_reference", with_value(m.reference, "backbone.norm.weight", float("inf"))),
    "nan_reference_head": lambda m: m.reference_file(
        "nan_reference_head",
        with_value(m.reference, "head.scratch.output_conv.weight", float("nan"))),
    "missing_reference_head_key": lambda m: m.reference_file(
        "missing_reference_head_key", without(m.reference, "head.scratch.layer2_rn.weight")),
    "missing_reference_backbone_key": lambda m: m.reference_file(
        "missing_reference_backbone_key", without(m.reference, "backbone.norm.weight")),
    "head_only_reference": lambda m: m.reference_file(
        "head_only", {k: v for k, v in m.reference.items() if k.startswith("head.")}),
    "folder": _folder,
    "missing": lambda m: m.root / "missing.pth",
    # backbone weights given explicitly
    "other_weights": lambda m: m.weights("other.pth", perturbed(m.backbone)),
    "swiglu_weights": lambda m: m.weights(
        "swiglu.pth", torch.load(FIXTURES / "dinov3" / "tiny_swiglu.pth", weights_only=True)),
    "nan_weights": lambda m: m.weights("nan.pth", with_value(m.backbone, "cls_token",
                                                             float("nan"))),
    "random_weights": lambda m: m.raw("weights/random.pth", np.random.default_rng(2).bytes(999)),
    "missing_weights": lambda m: m.root / "weights" / "absent.pth",
    "weights_folder": lambda m: _folder(m, "weights/not_a_model"),
    # test's outputs
    "a_file": lambda m: m.raw("a_file", b"in the way\n"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_run) -> dict[str, Path]:
    maker = Maker(tmp_path_factory.mktemp("catalogue"), tiny_run)
    return {key: make(maker) for key, make in FILES.items()}


# ---- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad input. `ckpt` and `backbone` are keys of FILES, or "ours" (the tiny run's
    checkpoint) and "reference" (the reference fixture); `names` what the error must name
    (default: the checkpoint): flags, keys as those, or paths in the catalogue's folder."""

    ckpt: str
    commands: tuple[str, ...]
    backbone: str | None = None
    extra: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


CASES: dict[str, Bad] = {
    # damaged checkpoints of ours
    "empty safetensors": Bad("empty_st", COMMANDS),
    "random bytes .safetensors": Bad("random_st", ("test", "predict")),
    "safetensors header cut off": Bad("broken_header", ("test", "export")),
    "safetensors data cut off": Bad("truncated_st", ("predict", "publish")),
    "metadata JSON corrupt": Bad("meta_corrupt", COMMANDS),
    "metadata empty": Bad("meta_empty", ("test", "publish")),
    "metadata not an object": Bad("meta_list", ("predict",)),
    "metadata without num_classes": Bad("meta_no_classes", ("test", "export")),
    "metadata SHA-256 not one": Bad("meta_bad_sha", ("predict",)),
    "metadata from a newer segdino": Bad("meta_newer", ("test",)),
    "metadata with two layers": Bad("meta_layers", ("publish",)),
    "metadata without preprocessing": Bad("meta_preprocessing", ("test",)),
    "NaN decoder weights": Bad("nan_head", COMMANDS),
    "infinite decoder bias": Bad("inf_head", ("test",)),
    "decoder key missing": Bad("missing_head_key", ("test", "predict")),
    "recorded backbone holds NaN": Bad("nan_backbone", ("test", "export"),
                                       names=("weights/tiny_nan.pth",)),
    "backbone beside it has another SHA": Bad("wrong_beside", ("test", "publish"),
                                              names=("wrong_beside/tiny_beside.pth",)),
    "recorded backbone nowhere": Bad("unfindable", ("test", "predict")),
    # damaged reference checkpoints
    "empty .pth": Bad("empty_pth", ("test", "predict", "export")),
    "truncated .pth": Bad("truncated_pth", ("test", "predict", "export")),
    "random bytes .pth": Bad("random_pth", ("test",)),
    "text file .pth": Bad("text_pth", ("predict",)),
    "pickle of a list": Bad("list_pth", ("test",)),
    "pickle that needs code": Bad("code_pth", ("export",)),
    "infinite backbone weight in .pth": Bad("inf_reference", ("test", "predict")),
    "NaN head weight in .pth": Bad("nan_reference_head", ("export",)),
    "head key missing in .pth": Bad("missing_reference_head_key", ("test",)),
    "backbone key missing in .pth": Bad("missing_reference_backbone_key", ("predict",)),
    "no backbone.* keys and none given": Bad("head_only_reference", ("test",)),
    "a folder for the checkpoint": Bad("folder", ("test", "predict", "export")),
    "no such checkpoint": Bad("missing", ("test", "export")),
    "backbone weights as the checkpoint": Bad("other_weights", ("test", "predict")),
    # backbone weights given explicitly
    "backbone of another SHA-256": Bad("ours", COMMANDS, "other_weights",
                                       names=("other_weights", "--allow-other-backbone")),
    "backbone of another architecture": Bad("ours", ("test",), "swiglu_weights",
                                            names=("swiglu_weights",)),
    "another architecture, allowed": Bad("ours", ("predict",), "swiglu_weights",
                                         ("--allow-other-backbone",), names=("ours",)),
    "backbone of random bytes": Bad("ours", ("test",), "random_weights",
                                    names=("random_weights",)),
    "random bytes, allowed": Bad("ours", ("export",), "random_weights",
                                 ("--allow-other-backbone",), names=("random_weights",)),
    "NaN backbone, allowed": Bad("ours", ("test", "publish"), "nan_weights",
                                 ("--allow-other-backbone",), names=("nan_weights",)),
    "no such backbone file": Bad("ours", ("test", "predict"), "missing_weights",
                                 names=("missing_weights",)),
    "backbone folder without weights": Bad("ours", ("publish",), "weights_folder",
                                           names=("weights_folder",)),
    "reference with a missing backbone": Bad("reference", ("test",), "missing_weights",
                                             names=("missing_weights",)),
    "reference with an unreadable backbone": Bad("reference", ("predict",), "random_weights",
                                                 names=("random_weights",)),
    # test's report folder, checked before the model loads
    "--save-root is a file": Bad("ours", ("test",), extra=("--save-root", "{a_file}"),
                                 names=("a_file",)),
    "--save-root inside a file": Bad("ours", ("test",), extra=("--save-root", "{a_file}/x"),
                                     names=("a_file",)),
}

TABLE = [pytest.param(case, command, id=f"{command}: {case}")
         for case, bad in CASES.items() for command in bad.commands]


def command_line(command: str, ckpt: Path, backbone: Path | None, out: Path,
                 tiny_run: dict[str, Path]) -> list[str | Path]:
    """`segdino COMMAND` on `ckpt`, its outputs under `out`, the backbone given if any."""
    flag = "--dino-ckpt" if command == "test" else "--backbone"
    given = [flag, backbone] if backbone is not None else []
    if command == "test":
        return ["test", "--ckpt", ckpt, "--data-dir", tiny_run["data"], "--dataset", "synth",
                "--save-root", out, "--num-workers", "0", "--no-progress", *given]
    if command == "predict":
        image = next((tiny_run["data"] / "synth" / "test" / "image").iterdir())
        return ["predict", ckpt, image, "--out", out / "masks", *given]
    if command == "export":
        return ["export", ckpt, "--out", out / "model.onnx", *given]
    return ["publish", ckpt.parent, out / "folder", *given]


def resolve(key: str, files: dict[str, Path], tiny_run: dict[str, Path]) -> Path:
    known = {"ours": tiny_run["ckpt"], "reference": REFERENCE, **files}
    return known.get(key) or files["a_file"].parent / key


@pytest.mark.parametrize(("case", "command"), TABLE)
def test_refused(case: str, command: str, files, tiny_run, tmp_path) -> None:
    bad = CASES[case]
    ckpt = resolve(bad.ckpt, files, tiny_run)
    backbone = resolve(bad.backbone, files, tiny_run) if bad.backbone else None
    out = tmp_path / "out"
    argv = command_line(command, ckpt, backbone, out, tiny_run)
    argv += [arg.format(**files) for arg in bad.extra]
    names = [name if name.startswith("--") else resolve(name, files, tiny_run)
             for name in bad.names or (bad.ckpt,)]
    roots = [files["a_file"].parent, tiny_run["data"], tiny_run["weights"].parent,
             tiny_run["run"], REFERENCE, TINY]
    before = snapshot(*roots)
    assert_refused(run_segdino(*argv), names)
    assert snapshot(*roots) == before
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_the_catalogue_is_large_enough() -> None:
    assert len(TABLE) >= 45


def test_test_refuses_a_name_that_holds_a_report(tiny_run, tmp_path) -> None:
    taken = tmp_path / "reports" / "mine"
    taken.mkdir(parents=True)
    (taken / "summary.json").write_text("{}\n")
    before = snapshot(tmp_path)
    outcome = run_segdino("test", "--ckpt", tiny_run["ckpt"], "--data-dir", tiny_run["data"],
                          "--dataset", "synth", "--save-root", tmp_path / "reports",
                          "--name", "mine", "--num-workers", "0", "--no-progress")
    assert_refused(outcome, ["--name mine", taken])
    assert snapshot(tmp_path) == before


# ---- valid cases --------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def segdino_test(tiny_run: dict[str, Path], ckpt: Path, save_root: Path, *extra: str | Path
                 ) -> tuple[Path, str]:
    """`segdino test` on the tiny run's data; (the report folder, stdout)."""
    outcome = run_segdino("test", "--ckpt", ckpt, "--data-dir", tiny_run["data"], "--dataset",
                          "synth", "--save-root", save_root, "--num-workers", "0",
                          "--no-progress", "--worst", "0", *extra)
    assert outcome.code == 0, outcome.stderr
    report = next(line for line in outcome.stdout.splitlines() if line.startswith("report: "))
    return Path(report.removeprefix("report: ").split(",")[0]).parent, outcome.stdout


def per_image_dice(report: Path) -> list[float]:
    lines = (report / "metrics.csv").read_text().splitlines()[1:-3]  # header; MEAN, SD, MEDIAN
    return [float(line.split(",")[1]) for line in lines]


def test_a_second_test_keeps_the_first_report(tiny_run, tmp_path) -> None:
    first, _ = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path)
    kept = snapshot(first)
    second, _ = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path)
    third, _ = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path)
    assert [first.name, second.name, third.name] == [
        "test_synth_test", "test_synth_test-2", "test_synth_test-3"]
    assert snapshot(first) == kept
    assert per_image_dice(first) == per_image_dice(third)


def test_provenance_records_what_produced_the_report(tiny_run, tmp_path) -> None:
    report, printed = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path, "--name", "p")
    assert "scoring in fp32 on cpu" in printed  # float32 by default, whatever the CPU
    record = json.loads((report / "summary.json").read_text())["provenance"]
    assert record["checkpoint"] == {"path": str(tiny_run["ckpt"].absolute()),
                                    "sha256": sha256_of(tiny_run["ckpt"])}
    assert record["backbone"]["path"] == str(tiny_run["weights"].absolute())
    assert record["backbone"]["sha256"] == sha256_of(tiny_run["weights"])
    assert record["precision"] == "fp32" and record["device"] == "cpu"
    assert record["torch"] == torch.__version__ and record["segdino"]
    assert record["python"].count(".") == 2 and record["command"]
    assert datetime.datetime.fromisoformat(record["date"]).tzinfo is not None
    report, printed = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path, "--precision", "bf16")
    assert "scoring in bf16" in printed
    assert json.loads((report / "summary.json").read_text())["provenance"]["precision"] == "bf16"


def test_allow_other_backbone_uses_the_weights_given(tiny_run, files, tmp_path) -> None:
    other = files["other_weights"]
    report, printed = segdino_test(tiny_run, tiny_run["ckpt"], tmp_path, "--dino-ckpt", other,
                                   "--allow-other-backbone")
    assert f"note: {other}: not the backbone" in printed
    record = json.loads((report / "summary.json").read_text())["provenance"]
    assert record["backbone"]["sha256"] == sha256_of(other)
    # the right weights named explicitly pass the check without the flag
    same = tmp_path / "same.pth"
    shutil.copy(tiny_run["weights"], same)
    outcome = run_segdino("predict", tiny_run["ckpt"], tiny_run["data"] / "synth" / "test" /
                          "image", "--out", tmp_path / "masks", "--backbone", same)
    assert outcome.code == 0, outcome.stderr
    assert len(list((tmp_path / "masks").glob("*.png"))) == 4


# ---- a reference checkpoint: its own backbone, and the reference's Dice ---------------------


@pytest.fixture(scope="module")
def reference_case(tmp_path_factory) -> dict:
    """Two images with truth masks, and the reference's per-image Dice on them.

    The reference fixture's inputs are normalised tensors, not image files: `image_to_tensor`
    is replaced (see `feed_fixture_inputs`) to hand them to `segdino test` for the two images,
    a black one and a white one, so that its per-image Dice can be set against the Dice of
    the reference's own logits (`logits.x_64x80_b2`), thresholded as the reference does."""
    root = tmp_path_factory.mktemp("reference_case")
    io = load_file(FIXTURES / "segdino" / "segdino_tiny_mlp_io.safetensors")
    folder = root / "data" / "ref" / "test"
    (folder / "image").mkdir(parents=True)
    (folder / "mask").mkdir()
    rows, cols = np.mgrid[:64, :80]
    truths = [(rows - 30) ** 2 + (cols - 40) ** 2 < 26 ** 2, cols < 60]
    dice = []
    for i, (truth, logits) in enumerate(zip(truths, io["logits.x_64x80_b2"], strict=True)):
        Image.new("RGB", (80, 64), (255 * i,) * 3).save(folder / "image" / f"{i}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(folder / "mask" / f"{i}.png")
        pred = (torch.sigmoid(logits[0]) > 0.5).numpy()
        overlap = np.logical_and(pred, truth).sum()
        dice.append((2 * overlap + 1e-6) / (pred.sum() + truth.sum() + 1e-6))
    other = root / "other.pth"
    torch.save(perturbed(torch.load(TINY, weights_only=True), scale=0.2), other)
    return {"data": root / "data", "inputs": io["input.x_64x80_b2"], "dice": dice,
            "other": other}


@pytest.fixture
def feed_fixture_inputs(reference_case, monkeypatch) -> None:
    inputs = reference_case["inputs"]
    monkeypatch.setattr(evaluate, "image_to_tensor",
                        lambda image, *_: inputs[int(image.getpixel((0, 0))[0] > 0)])


def reference_test(reference_case, report: Path, *extra: str | Path) -> tuple[dict, str]:
    """`segdino test` of the reference checkpoint at the fixture's size, scored there."""
    outcome = run_segdino(
        "test", "--ckpt", REFERENCE, "--data-dir", reference_case["data"], "--dataset", "ref",
        "--input-h", "64", "--input-w", "80", "--eval-size", "input", "--save-root",
        report.parent, "--name", report.name, "--num-workers", "0", "--no-progress",
        "--worst", "0", *extra)
    assert outcome.code == 0, outcome.stderr
    return {"dice": per_image_dice(report),
            "provenance": json.loads((report / "summary.json").read_text())["provenance"]
            }, outcome.stdout


def test_reference_checkpoint_scores_as_the_reference(reference_case, feed_fixture_inputs,
                                                      tmp_path) -> None:
    """Per-image Dice equal to the reference's (within 1e-6), in float32 whatever the CPU,
    and with its own trained backbone even when --dino-ckpt names other weights."""
    plain, _ = reference_test(reference_case, tmp_path / "plain")
    assert plain["dice"] == pytest.approx(reference_case["dice"], abs=1e-6)
    other = reference_case["other"]
    given, printed = reference_test(reference_case, tmp_path / "given", "--dino-ckpt", other)
    assert given["dice"] == pytest.approx(reference_case["dice"], abs=1e-6)
    assert f"note: {REFERENCE} carries its own trained backbone weights" in printed
    record = given["provenance"]
    assert record["checkpoint"]["sha256"] == sha256_of(REFERENCE)
    assert record["backbone"]["sha256"] == sha256_of(REFERENCE)  # its own backbone.* weights
    # the other weights, on purpose: other masks (so the comparison above could tell)
    forced, _ = reference_test(reference_case, tmp_path / "forced", "--dino-ckpt", other,
                               "--allow-other-backbone")
    assert forced["dice"] != pytest.approx(reference_case["dice"], abs=1e-6)
    assert forced["provenance"]["backbone"]["sha256"] == sha256_of(other)
