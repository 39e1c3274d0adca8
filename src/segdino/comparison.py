"""Two `segdino test` reports on the same images, compared metric by metric (`segdino
compare`).

The images are paired by name, so both reports must score the same images (the same split
of the same dataset); reports over different images are refused, as are reports with
different metric columns. For each column of `metrics.csv`: the mean of A and of B, the mean
paired difference A - B with a percentile-bootstrap 95% confidence interval (the images are
resampled, each keeping its pair: `segdino.statistics.bootstrap_ci` of the differences) and
the two-sided Wilcoxon signed-rank p-value of the differences.

A pair whose value is not finite in A or in B (HD95 undefined: both masks empty; infinite:
one empty) is left out of that metric, and counted (`left_out`): an infinite distance has no
difference to average or rank. The means of A and B are over the same pairs as their
difference, so for HD95 they can differ from each report's own mean.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from segdino.atomic import check_writable_file, write_text
from segdino.errors import UserError
from segdino.report import json_safe, read_images
from segdino.statistics import CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_ci, wilcoxon_p

FORMAT = "segdino-compare"  # compare.json's "format": what compare may replace


def compare_reports(report_a: Path, report_b: Path, resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> dict:
    """The comparison of two report folders (see the module's docstring), as compare.json
    holds it; a UserError for reports over different images or metrics."""
    columns_a, images_a = read_images(report_a)
    columns_b, images_b = read_images(report_b)
    only_a, only_b = images_a.keys() - images_b.keys(), images_b.keys() - images_a.keys()
    if only_a or only_b:
        raise UserError(f"{report_a} and {report_b} score different images ({len(only_a)} only "
                        f"in {report_a}, {len(only_b)} only in {report_b}): compare needs "
                        "reports on the same images")
    if columns_a != columns_b:
        raise UserError(f"{report_a} and {report_b} have different metrics "
                        f"({','.join(columns_a)} and {','.join(columns_b)}): compare needs "
                        "models with the same classes")
    names = list(images_a)
    values_a, values_b = (np.array([images[name] for name in names], dtype=np.float64)
                          .reshape(len(names), len(columns_a)) for images in (images_a, images_b))
    return {
        "format": FORMAT, "report_a": str(report_a), "report_b": str(report_b),
        "images": len(names),
        "bootstrap": {"method": "percentile", "confidence": CONFIDENCE, "resamples": resamples,
                      "seed": seed, "paired": True},
        "metrics": {column: compare_metric(values_a[:, k], values_b[:, k], resamples, seed)
                    for k, column in enumerate(columns_a)},
    }


def compare_metric(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> dict:
    """One metric's comparison over the pairs where both values are finite."""
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    differences = a - b

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else math.nan
    return {"images": int(both.sum()), "left_out": int((~both).sum()),
            "mean_a": mean(a), "mean_b": mean(b), "mean_difference": mean(differences),
            "ci95": list(bootstrap_ci(differences, resamples, seed)),
            "wilcoxon_p": wilcoxon_p(differences)}


def _is_ours(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
        return False


def check_output(path: Path) -> None:
    """A UserError unless compare may write `path`: writable, and new or a compare.json
    that compare wrote (never the user's own file)."""
    check_writable_file(path, "--out")
    if path.exists() and not _is_ours(path):
        raise UserError(f"--out {path}: exists and is not a segdino compare result (choose "
                        "another --out, or move it away)")


def write_comparison(result: dict, path: Path) -> None:
    """compare.json, atomically (nan and inf as null); only where `check_output` allows."""
    check_output(path)
    write_text(path, json.dumps(json_safe(result), indent=2) + "\n")


def _number(value: float, digits: int, sign: str = "") -> str:
    return f"{value:{sign}.{digits}f}" if math.isfinite(value) else "n/a"


def format_comparison(result: dict) -> str:
    """The comparison as a table: a row per metric, then a note per metric with pairs left
    out."""
    header = (f"{'metric':<14}{'images':>7}{'mean A':>10}{'mean B':>10}{'A - B':>10}"
              f"   {'95% CI of A - B':<22}{'Wilcoxon p':>10}")
    lines = [f"A: {result['report_a']}", f"B: {result['report_b']}", header]
    notes = []
    for name, m in result["metrics"].items():
        digits = 2 if name.startswith("hd95") else 4
        low, high = m["ci95"]
        ci = (f"[{_number(low, digits, '+')}, {_number(high, digits, '+')}]"
              if math.isfinite(low) else "n/a")
        p = f"{m['wilcoxon_p']:.4g}" if math.isfinite(m["wilcoxon_p"]) else "n/a"
        lines.append(f"{name:<14}{m['images']:>7}{_number(m['mean_a'], digits):>10}"
                     f"{_number(m['mean_b'], digits):>10}"
                     f"{_number(m['mean_difference'], digits, '+'):>10}   {ci:<22}{p:>10}")
        if m["left_out"]:
            notes.append(f"{name}: {m['left_out']} of {result['images']} images left out "
                         "(not finite in A or B: HD95 with an empty mask)")
    return "\n".join(lines + notes)
