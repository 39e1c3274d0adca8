"""Metrics against independent truths: the SegDINO v1 and v2 test scripts' own values,
medpy's, MONAI, hand counts."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from segdino import metrics
from segdino.errors import UserError

CASES = (
    "identical",
    "shifted",
    "bigger",
    "two_parts_vs_one",
    "ring_with_hole",
    "both_empty",
    "pred_empty",
    "gt_empty",
    "noise",
    "single_pixel",
)
EMPTY_CASES = ("both_empty", "pred_empty", "gt_empty")
DEFINED_CASES = tuple(c for c in CASES if c not in EMPTY_CASES)


def _metrics_fixtures() -> Path:
    repo = Path(__file__).resolve().parents[1]
    # shared/ sits beside the checkout, or inside it on machines that get a copy.
    for shared in (repo / "shared", repo.parent / "shared"):
        if (shared / "fixtures" / "metrics").is_dir():
            return shared / "fixtures" / "metrics"
    pytest.fail(f"no shared/fixtures/metrics in {repo} or beside it")


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from safetensors.numpy import load_file

    tensors = load_file(_metrics_fixtures() / "mask_pairs.safetensors")
    return {c: (tensors[f"{c}.pred"] > 0, tensors[f"{c}.gt"] > 0) for c in CASES}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, float]]:
    text = (_metrics_fixtures() / "reference_v1_values.json").read_text()
    return json.loads(text)["cases"]  # json reads the file's `Infinity` as inf


@pytest.fixture(scope="module")
def v2_medpy() -> dict[str, dict[str, float | str]]:
    """SegDINO v2's and medpy's values; medpy's raised errors stay strings ("error: ...")."""
    cases = json.loads((_metrics_fixtures() / "reference_v2_medpy_values.json").read_text())
    return {
        case: {k: float(v) if v == "inf" else v for k, v in values.items()}
        for case, values in cases["cases"].items()
    }


def monai_hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]) -> float:
    pytest.importorskip("monai")
    import torch
    from monai.metrics import compute_hausdorff_distance

    def batch(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask[None, None].astype(np.float32))

    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal deprecated call
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            batch(pred), batch(truth), include_background=True, percentile=95, spacing=list(spacing)
        )
    return float(value[0, 0])


def assert_close_to_monai(ours: float, theirs: float) -> None:
    # MONAI takes the quantile with torch in float32, whose rank 0.95 * (n - 1) is rounded
    # to float32: that alone moves its result by up to ~1e-5 relative (9.5e-6 on `noise`).
    # We compute in float64, as np.percentile and medpy do.
    assert ours == pytest.approx(theirs, rel=2e-5, abs=1e-6)


def random_blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A union of one to three rotated ellipses, some with a hole, possibly cut by the border."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    while not mask.any():
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            ay, ax = rng.uniform(1.5, shape[0] / 2.5), rng.uniform(1.5, shape[1] / 2.5)
            c, s = np.cos(angle := rng.uniform(0, np.pi)), np.sin(angle)
            u = ((rows - cy) * c + (cols - cx) * s) / ay
            v = (-(rows - cy) * s + (cols - cx) * c) / ax
            ellipse = u * u + v * v <= 1
            if rng.random() < 0.3:
                ellipse &= u * u + v * v > 0.3
            mask |= ellipse
    return mask


def test_fixture_covers_every_case(reference, v2_medpy):
    assert set(reference) == set(CASES)
    assert set(v2_medpy) == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_dice_and_iou_match_the_reference(case, pairs, reference):
    pred, truth = pairs[case]
    assert metrics.dice(pred, truth) == pytest.approx(reference[case]["dice"], rel=1e-9, abs=1e-15)
    assert metrics.iou(pred, truth) == pytest.approx(reference[case]["iou"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_dice_and_iou_match_segdino_v2(case, pairs, v2_medpy):
    pred, truth = pairs[case]
    expected = v2_medpy[case]
    assert metrics.dice(pred, truth) == pytest.approx(expected["dice_v2"], rel=1e-9, abs=1e-15)
    assert metrics.iou(pred, truth) == pytest.approx(expected["iou_v2"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_hd95_v2_matches_segdino_v2_exactly(case, pairs, v2_medpy):
    assert metrics.hd95_v2(*pairs[case]) == v2_medpy[case]["hd95_v2"]


@pytest.mark.parametrize("case", DEFINED_CASES)
def test_hd95_medpy_matches_medpy_exactly(case, pairs, v2_medpy):
    assert metrics.hd95_medpy(*pairs[case]) == v2_medpy[case]["hd95_medpy"]


def test_hd95_medpy_where_medpy_raises(pairs, v2_medpy):
    # medpy has no value for an empty mask; we give the standard variant's nan and inf
    assert all(v2_medpy[c]["hd95_medpy"].startswith("error:") for c in EMPTY_CASES)
    assert math.isnan(metrics.hd95_medpy(*pairs["both_empty"]))
    assert metrics.hd95_medpy(*pairs["pred_empty"]) == math.inf
    assert metrics.hd95_medpy(*pairs["gt_empty"]) == math.inf


def test_pooled_hd95_by_hand():
    pred = np.zeros((8, 8), dtype=bool)
    truth = np.zeros((8, 8), dtype=bool)
    pred[0, 0] = truth[0, 0] = truth[0, 6] = True
    # directed distances: pred -> truth [0]; truth -> pred [0, 6]; pooled [0, 0, 6]
    assert metrics.hd95(pred, truth) == pytest.approx(0.95 * 6)
    assert metrics.hd95_medpy(pred, truth) == pytest.approx(0.9 * 6)
    assert metrics.hd95_v2(pred, truth) == pytest.approx(0.9 * 6)
    assert metrics.hd95_medpy(pred, truth, spacing=(1.0, 0.5)) == pytest.approx(0.9 * 3)


@pytest.mark.parametrize("case", CASES)
def test_hd95_reference_matches_the_reference(case, pairs, reference):
    pytest.importorskip("cv2")
    expected = reference[case]["hd95_reference_v1_opencv"]
    value = metrics.hd95_reference(*pairs[case])
    if math.isinf(expected):
        assert value == expected
    else:
        assert value == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3)])
@pytest.mark.parametrize("case", DEFINED_CASES)
def test_hd95_matches_monai_on_fixture_pairs(case, spacing, pairs):
    pred, truth = pairs[case]
    assert_close_to_monai(metrics.hd95(pred, truth, spacing), monai_hd95(pred, truth, spacing))


@pytest.mark.parametrize("seed", range(20))
def test_hd95_matches_monai_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(24, 97)), int(rng.integers(24, 97)))
    pred, truth = random_blobs(rng, shape), random_blobs(rng, shape)
    spacing = (1.0, 1.0) if seed % 2 else (rng.uniform(0.3, 2.5), rng.uniform(0.3, 2.5))
    assert_close_to_monai(metrics.hd95(pred, truth, spacing), monai_hd95(pred, truth, spacing))


def uncropped_hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]) -> float:
    """HD95 with the distance transforms over the whole image (what metrics.hd95 did before
    it looked at the masks' bounding box only)."""
    from scipy import ndimage

    def surface(mask: np.ndarray) -> np.ndarray:
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    ps, ts = surface(pred), surface(truth)
    to_truth = ndimage.distance_transform_edt(~ts, sampling=spacing)[ps]
    to_pred = ndimage.distance_transform_edt(~ps, sampling=spacing)[ts]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def small_blobs(rng: np.random.Generator, shape: tuple[int, int], corner: str) -> np.ndarray:
    """`random_blobs` in a patch of a larger image: at a random place, or against the image's
    `corner` ("top-left" or "bottom-right"), so that the masks touch its border."""
    h, w = int(rng.integers(4, shape[0] // 2)), int(rng.integers(4, shape[1] // 2))
    top = {"top-left": 0, "bottom-right": shape[0] - h}.get(corner, rng.integers(0, shape[0] - h))
    left = {"top-left": 0, "bottom-right": shape[1] - w}.get(corner, rng.integers(0, shape[1] - w))
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + h, left:left + w] = random_blobs(rng, (h, w))
    return mask


@pytest.mark.parametrize("seed", range(24))
def test_hd95_on_the_bounding_box_is_exact(seed):
    """Masks of a few pixels to half the image, apart, overlapping or touching its border:
    the same value, to the last bit, as the transforms over the whole image; and MONAI's."""
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(40, 160)), int(rng.integers(40, 160)))
    corners = ("top-left", "bottom-right", "anywhere")
    pred = small_blobs(rng, shape, corners[seed % 3])
    truth = small_blobs(rng, shape, corners[(seed // 3) % 3])
    spacing = (1.0, 1.0) if seed % 2 else (rng.uniform(0.3, 2.5), rng.uniform(0.3, 2.5))
    ours = metrics.hd95(pred, truth, spacing)
    assert ours == uncropped_hd95(pred, truth, spacing)
    assert_close_to_monai(ours, monai_hd95(pred, truth, spacing))
    empty = np.zeros(shape, dtype=bool)
    assert metrics.hd95(pred, empty, spacing) == metrics.hd95(empty, truth, spacing) == math.inf
    assert math.isnan(metrics.hd95(empty, empty, spacing))


def test_hd95_of_masks_filling_the_image():
    full, corner = np.ones((30, 40), dtype=bool), np.zeros((30, 40), dtype=bool)
    corner[:10, :10] = True
    assert metrics.hd95(full, corner) == uncropped_hd95(full, corner, (1.0, 1.0))
    assert metrics.hd95(full, full) == 0.0


def test_hd95_by_hand():
    pred = np.zeros((8, 8), dtype=bool)
    truth = np.zeros((8, 8), dtype=bool)
    pred[1, 1] = truth[4, 5] = True  # 3 rows and 4 columns apart
    assert metrics.hd95(pred, truth) == pytest.approx(5.0)
    assert metrics.hd95(pred, truth, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))


def test_hd95_empty_masks(pairs):
    assert math.isnan(metrics.hd95(*pairs["both_empty"]))
    assert metrics.hd95(*pairs["pred_empty"]) == math.inf
    assert metrics.hd95(*pairs["gt_empty"]) == math.inf


def test_ring_against_disc_standard_sees_the_hole_reference_does_not(pairs):
    pytest.importorskip("cv2")
    ring, disc = pairs["ring_with_hole"]
    assert (disc & ~ring).any()  # the hole really is there
    assert metrics.hd95(ring, disc) > 5.0
    assert metrics.hd95_reference(ring, disc) == 0.0


def test_precision_and_recall_by_hand():
    pred = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
    truth = np.array([[1, 0, 0], [1, 1, 1]], dtype=bool)
    # 2 true positives, 3 predicted, 4 true
    assert metrics.precision(pred, truth) == pytest.approx(2 / 3, abs=1e-6)
    assert metrics.recall(pred, truth) == pytest.approx(2 / 4, abs=1e-6)
    assert metrics.dice(pred, truth) == pytest.approx(2 * 2 / 7, abs=1e-6)
    assert metrics.iou(pred, truth) == pytest.approx(2 / 5, abs=1e-6)


def test_precision_and_recall_on_empty_masks():
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    assert metrics.precision(empty, empty) == metrics.recall(empty, empty) == 1.0
    # nothing predicted: no false positive, everything missed
    assert metrics.precision(empty, full) == 1.0
    assert metrics.recall(empty, full) == pytest.approx(0.0, abs=1e-6)
    # nothing to find: nothing missed, everything a false positive
    assert metrics.recall(full, empty) == 1.0
    assert metrics.precision(full, empty) == pytest.approx(0.0, abs=1e-6)


def test_score_and_summarise_count_undefined_and_infinite(pairs):
    scores = [metrics.score(*pairs[c]) for c in CASES]
    summary = metrics.summarise(scores)
    assert summary["images"] == len(CASES)
    assert summary["hd95_undefined"] == 1  # both_empty
    assert summary["hd95_infinite"] == 2  # pred_empty, gt_empty
    finite = [metrics.hd95(*pairs[c]) for c in DEFINED_CASES]
    assert summary["hd95"] == pytest.approx(np.mean(finite))
    for name in ("dice", "iou", "precision", "recall"):
        expected = np.mean([getattr(metrics, name)(*pairs[c]) for c in CASES])
        assert summary[name] == pytest.approx(expected)


def test_summarise_with_the_reference_variant(pairs, reference):
    pytest.importorskip("cv2")
    summary = metrics.summarise([metrics.score(*pairs[c], hd95="reference") for c in CASES])
    # the reference scores both-empty as 0, so only the one-empty cases fall out of the mean
    assert summary["hd95_undefined"] == 0
    assert summary["hd95_infinite"] == 2
    finite = [v["hd95_reference_v1_opencv"] for v in reference.values()]
    assert summary["hd95"] == pytest.approx(np.mean([v for v in finite if math.isfinite(v)]))


def test_summarise_with_the_pooled_variants(pairs, v2_medpy):
    v2 = metrics.summarise([metrics.score(*pairs[c], hd95="v2") for c in CASES])
    # v2 scores both-empty as 0 (in the mean) and drops the infinite ones, as its script does
    assert (v2["hd95_undefined"], v2["hd95_infinite"]) == (0, 2)
    finite = [v["hd95_v2"] for v in v2_medpy.values() if math.isfinite(v["hd95_v2"])]
    assert v2["hd95"] == pytest.approx(np.mean(finite))
    medpy = metrics.summarise([metrics.score(*pairs[c], hd95="medpy") for c in CASES])
    # where medpy raises, the images are counted as the standard variant counts them
    assert (medpy["hd95_undefined"], medpy["hd95_infinite"]) == (1, 2)
    finite = [v2_medpy[c]["hd95_medpy"] for c in DEFINED_CASES]
    assert medpy["hd95"] == pytest.approx(np.mean(finite))


def test_summarise_of_nothing():
    summary = metrics.summarise([])
    assert summary["images"] == summary["hd95_undefined"] == summary["hd95_infinite"] == 0
    assert math.isnan(summary["dice"]) and math.isnan(summary["hd95"])


def test_hd95_reference_without_opencv_says_what_to_install(monkeypatch, pairs):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(UserError, match="pip install opencv-python-headless"):
        metrics.hd95_reference(*pairs["shifted"])


def test_bad_options_are_user_errors(pairs):
    pred, truth = pairs["shifted"]
    with pytest.raises(UserError, match="--hd95"):
        metrics.score(pred, truth, hd95="monai")
    for variant in ("reference", "v2"):
        with pytest.raises(UserError, match=f"--spacing cannot be used with --hd95 {variant}"):
            metrics.score(pred, truth, hd95=variant, spacing=(0.5, 0.5))
    with pytest.raises(UserError, match="--spacing"):
        metrics.hd95(pred, truth, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="one size"):
        metrics.dice(pred, truth[:-1])
