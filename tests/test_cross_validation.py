"""Cross-validation: folds cover every image exactly once (seeded, and TN3K's official rule);
a 2-fold run writes its fold run folders, summary and ensemble, whose numbers agree with the
fold models run one by one; a resumed run skips finished folds and retrains a missing one to
the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from segdino.backbone.formats import read_tensors
from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.data.synthetic import make_synthetic_dataset
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO
from segdino.training.folds import assign_folds, fold_pairs


def fake_pairs(root: Path, names: list[str]) -> list[tuple[Path, Path]]:
    return [(root / "train" / "image" / n, root / "train" / "mask" / n) for n in names]


@pytest.mark.parametrize(("n", "k"), [(11, 2), (13, 5), (4, 5)])
def test_folds_cover_every_image_once(tmp_path: Path, n: int, k: int) -> None:
    pairs = fake_pairs(tmp_path, [f"case{i:03d}.png" for i in range(n)])
    # the same name in val/ is another image
    pairs += [(tmp_path / "val" / "image" / "case000.png", tmp_path / "val" / "mask" / "x")]
    folds = assign_folds(pairs, k, seed=7, dataset_root=tmp_path)
    held = [name for fold in folds["folds"] for name in fold]
    assert sorted(held) == sorted(str(p[0].relative_to(tmp_path)) for p in pairs)  # once each
    assert max(map(len, folds["folds"])) - min(map(len, folds["folds"])) <= 1
    for i in range(k):
        train, val = fold_pairs(pairs, folds, i, tmp_path)
        assert sorted(train + val) == sorted(pairs) and not set(train) & set(val)
    assert assign_folds(pairs, k, seed=8, dataset_root=tmp_path) != folds


def test_tn3k_official_folds(tmp_path: Path) -> None:
    (tmp_path / "split.json").write_text(json.dumps({"dataset": "tn3k"}))
    numbers = [3, 10, 1, 7, 2, 8, 4, 9, 5, 6, 0, 11]
    pairs = fake_pairs(tmp_path, [f"{n:04d}.jpg" for n in numbers])
    folds = assign_folds(pairs, 5, seed=1, dataset_root=tmp_path)
    # position i of the images sorted by number is in fold i % 5 (the fold files' rule)
    assert folds["folds"][0] == [f"train/image/{n:04d}.jpg" for n in (0, 5, 10)]
    assert folds["folds"][4] == [f"train/image/{n:04d}.jpg" for n in (4, 9)]
    assert "official" in assign_folds(pairs, 5, 1, tmp_path)["rule"]
    assert "seeded" in assign_folds(pairs, 4, 1, tmp_path)["rule"]  # other K: seeded


def cv(root: Path, *extra: str) -> int:
    return main(["train", "--data-dir", str(root / "data"), "--dataset", "synth",
                 "--dino-ckpt", str(root / "tiny_mlp.pth"), "--input-h", "32", "--input-w",
                 "32", "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "--device",
                 "cpu", "--no-progress", "--seed", "3", "--save-root", str(root / "runs"),
                 *extra])


def test_two_fold_run_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_synthetic_dataset(tmp_path / "data" / "synth", n_train=8, n_val=4, n_test=2,
                           size=(40, 48), seed=1)
    shutil.copy(FIXTURES / "dinov3" / "tiny_mlp.pth", tmp_path / "tiny_mlp.pth")
    assert cv(tmp_path, "--folds", "13", "--name", "cv") == 2  # 12 images
    assert "--folds 13: more folds than the 12 images" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "cv").exists()
    assert cv(tmp_path, "--folds", "2", "--name", "cv") == 0
    out = capsys.readouterr().out
    assert out.count("caching cv features: 1 view(s) of 12 images") == 1  # once, all folds
    run = tmp_path / "runs" / "cv"
    folds = json.loads((run / "folds.json").read_text())
    summary = json.loads((run / "cv_summary.json").read_text())
    assert [r["images"] for r in summary["folds"]] == [6, 6]
    for k in (1, 2):
        fold = run / f"fold{k}"
        assert {"best.safetensors", "last.safetensors", "metrics.csv", "config.json"} <= {
            p.name for p in fold.iterdir()}
        assert not (fold / "curves.png").exists()  # drawn once, for all folds: cv_curves.png
        assert sorted((fold / "val_list.txt").read_text().split()) == sorted(
            Path(i).name for i in folds["folds"][k - 1])
        held = json.loads((fold / "heldout" / "summary.json").read_text())
        assert summary["folds"][k - 1]["dice"] == held["dice"]
        # scored from the cached (float16) features: as segdino test scores the fold's model
        names = set((fold / "val_list.txt").read_text().split())
        pairs = [p for split in ("train", "val")
                 for p in find_pairs(tmp_path / "data" / "synth" / split) if p[0].name in names]
        predictor = Predictor(load_segdino(fold / "best.safetensors"), "cpu", 4, "fp32")
        tested = evaluate(predictor, pairs, tmp_path / f"tested{k}", worst=0, num_workers=0,
                          progress=False)
        for m in ("dice", "iou"):
            assert held[m] == pytest.approx(tested[m], abs=2e-3)
    for m in ("dice", "iou"):
        values = [r[m] for r in summary["folds"]]
        assert summary["mean"][m] == pytest.approx(sum(values) / 2)
        assert summary["sd"][m] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert set(summary["uncertainty"]) == {"score", "spearman", "auroc_dice_below_median"}
    with Image.open(run / "cv_curves.png") as im:
        assert im.format == "PNG" and im.size == (1000, 400)
    calibration = summary["calibration"]
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-9
    ensemble = load_segdino(run / "ensemble.safetensors")
    assert len(ensemble.head) == 2
    assert ensemble.preprocessing.temperature == pytest.approx(calibration["temperature"])
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = calibration["temperature"]
    with torch.no_grad():
        members = [torch.sigmoid(load_segdino(run / f"fold{k}" / "best.safetensors")(x) / t)
                   for k in (1, 2)]
        torch.testing.assert_close(torch.sigmoid(ensemble(x)), (members[0] + members[1]) / 2,
                                   rtol=0, atol=1e-6)

    # published as any run: the ensemble, its card from the summary
    assert main(["publish", str(run), str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "cross-validation" in card and "--folds 2" in card
    assert f"{calibration['temperature']:.3f}" in card
    published = SegDINO.from_pretrained(tmp_path / "model", backbone=tmp_path / "tiny_mlp.pth")
    with torch.no_grad():
        torch.testing.assert_close(published(x), ensemble(x), rtol=0, atol=0)

    # resume: fold 1 finished (left alone), fold 2 gone (retrained to the same weights)
    fold1 = {p.name: p.stat().st_mtime_ns for p in (run / "fold1").iterdir() if p.is_file()}
    before = read_tensors(run / "fold2" / "best.safetensors")
    shutil.rmtree(run / "fold2")
    assert cv(tmp_path, "--resume", str(run)) == 0
    out = capsys.readouterr().out
    assert "fold 1/2: finished already, skipped" in out
    assert {p.name: p.stat().st_mtime_ns for p in (run / "fold1").iterdir()
            if p.is_file() and p.name in fold1} == fold1
    after = read_tensors(run / "fold2" / "best.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
