"""The bad-input catalogue of `segdino prepare` and `segdino bench`, and Ctrl-C anywhere.

Each refused case runs the command as a user would and checks, through the harness, exit
code 2 and one stderr line naming the file or flag, and that nothing under the test's folder
changed: no file written over, no OUT or extraction left behind.
"""

from __future__ import annotations

import fcntl
import json
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from catalogue import Outcome, assert_refused, run_segdino, run_segdino_process, snapshot
from test_prepare import TRAIN_IDS, make_folder, make_kvasir, zip_folder

from segdino.data.prepare.output import LOCK, RECORD, SCRATCH

Argv = list[str | Path]
# tmp -> (argv, what the error line names: files, flags, and words of the reason)
Case = Callable[[Path], tuple[Argv, list[str | Path]]]


# --- building bad downloads ---------------------------------------------------------------


def zip_of(tmp: Path, entries: dict[str, bytes], name: str = "dl.zip",
           method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip of `entries` (name -> bytes)."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    with zipfile.ZipFile(path, "w", method) as zf:
        for entry, data in entries.items():
            zf.writestr(entry, data)
    return path


def patch_central(path: Path, **fields: int) -> Path:
    """Overwrite fields of every central directory record (what zipfile's infolist reads):
    `flags`, `method`, `compressed`, `expanded` (the sizes an entry declares)."""
    offsets = {"flags": (8, "<H"), "method": (10, "<H"), "compressed": (20, "<I"),
               "expanded": (24, "<I")}
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        for field, value in fields.items():
            offset, fmt = offsets[field]
            struct.pack_into(fmt, data, at + offset, value)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def kvasir_zip(tmp: Path) -> Path:
    make_kvasir(tmp / "stage", TRAIN_IDS[:2])
    return zip_folder(tmp / "stage" / "Kvasir-SEG", tmp / "dl.zip")


def truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def crc_broken(tmp: Path) -> Path:
    """A stored entry whose bytes no longer match its CRC."""
    path = zip_of(tmp, {"Kvasir-SEG/images/a.jpg": b"A" * 1000}, method=zipfile.ZIP_STORED)
    path.write_bytes(path.read_bytes().replace(b"A" * 1000, b"B" + b"A" * 999))
    return path


def folder_holding(tmp: Path, files: dict[str, bytes]) -> Path:
    (tmp / "dl").mkdir()
    for name, data in files.items():
        (tmp / "dl" / name).write_bytes(data)
    return tmp / "dl"


def user_file(tmp: Path, name: str = "mine.json") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text('{"results": "the user\'s own"}\n')
    return tmp / name


def prep(tmp: Path, source: Path, *flags: str | Path, dataset: str = "kvasir-seg",
         out: Path | None = None) -> Argv:
    return ["prepare", dataset, source, out or tmp / "out", *flags]


def kvasir(tmp: Path) -> Path:
    return make_kvasir(tmp / "dl", TRAIN_IDS[:2]).parent


# --- refused: exit 2, one line naming the file or flag, nothing changed ---------------------

REFUSED: dict[str, Case] = {
    # zips, refused before anything is extracted
    "zip-bomb-ratio": lambda t: (
        prep(t, z := zip_of(t, {"Kvasir-SEG/images/a.jpg": bytes(17 * 2**20)})),
        [z, "100-fold limit"]),
    "zip-bomb-declared-size": lambda t: (
        prep(t, z := patch_central(zip_of(t, {f"Kvasir-SEG/{i}.jpg": b"x" for i in range(9)}),
                                   compressed=2**32 - 2, expanded=2**32 - 2)),
        [z, "GiB limit"]),
    "zip-slip-dotdot": lambda t: (prep(t, z := zip_of(t, {"../evil.jpg": b"x"})),
                                  [z, "'../evil.jpg'"]),
    "zip-slip-nested-dotdot": lambda t: (prep(t, z := zip_of(t, {"a/../../evil.jpg": b"x"})),
                                         [z, "evil.jpg", "outside"]),
    "zip-slip-absolute": lambda t: (prep(t, z := zip_of(t, {"/tmp/evil.jpg": b"x"})),
                                    [z, "'/tmp/evil.jpg'"]),
    "zip-slip-drive": lambda t: (prep(t, z := zip_of(t, {"C:\\evil.jpg": b"x"})),
                                 [z, "evil.jpg", "outside"]),
    "zip-slip-backslash": lambda t: (prep(t, z := zip_of(t, {"..\\evil.jpg": b"x"})),
                                     [z, "evil.jpg", "outside"]),
    "zip-encrypted": lambda t: (  # the flag bit: nothing to decrypt, the flag is checked
        prep(t, z := patch_central(zip_of(t, {"Kvasir-SEG/a.jpg": b"x"}), flags=0x1)),
        [z, "encrypted"]),
    "zip-unknown-method": lambda t: (
        prep(t, z := patch_central(zip_of(t, {"Kvasir-SEG/a.jpg": b"x"}), method=9)),
        [z, "compression method 9"]),
    "zip-truncated": lambda t: (prep(t, z := truncated(kvasir_zip(t))), [z, "truncated"]),
    "zip-bad-crc": lambda t: (prep(t, z := crc_broken(t)), [z, "corrupt"]),
    "zip-not-a-zip": lambda t: (prep(t, z := user_file(t, "dl.zip")), [z, "not a readable zip"]),
    "zip-empty": lambda t: (prep(t, z := zip_of(t, {})), [z, "empty zip"]),
    "zip-only-folders": lambda t: (prep(t, z := zip_of(t, {"Kvasir-SEG/": b""})),
                                   [z, "empty zip"]),
    "zip-truncated-in-folder": lambda t: (
        prep(t, folder_holding(t, {"kvasir.zip": b"PK\x03\x04 cut short"})),
        [t / "dl" / "kvasir.zip", "truncated"]),
    # SOURCE
    "source-empty-folder": lambda t: (prep(t, s := folder_holding(t, {})), [s, "empty folder"]),
    "source-missing": lambda t: (prep(t, t / "nowhere"), [t / "nowhere", "no such"]),
    # OUT
    "out-is-a-file": lambda t: (prep(t, kvasir(t), out=user_file(t)),
                                [t / "mine.json", "not a folder"]),
    "out-below-a-file": lambda t: (prep(t, kvasir(t), out=user_file(t) / "out"),
                                   [t / "mine.json" / "out", "cannot write"]),
    "out-inside-source": lambda t: (prep(t, s := kvasir(t), out=s / "out"),
                                    [s / "out", "inside"]),
    "source-inside-out": lambda t: (prep(t, s := kvasir(t), out=t), [s, "inside OUT"]),
    "out-inside-masks": lambda t: (
        prep(t, (f := make_folder(t, 3))[0], "--masks", f[1], dataset="folder",
             out=f[1] / "out"),
        [f[1] / "out", "inside"]),
    "out-holds-user-files": lambda t: (prep(t, kvasir(t), out=user_file(t / "o").parent),
                                       [t / "o", "not empty"]),
    # flags, refused while parsing
    "fold-out-of-range": lambda t: (prep(t, t, "--fold", "7", dataset="tn3k"), ["--fold", "7"]),
    "fold-not-a-number": lambda t: (prep(t, t, "--fold", "x", dataset="tn3k"), ["--fold"]),
    "val-fraction-one": lambda t: (prep(t, t, "--val-fraction", "1"), ["--val-fraction"]),
    "val-fraction-nan": lambda t: (prep(t, t, "--val-fraction", "nan"), ["--val-fraction"]),
    "test-fraction-negative": lambda t: (
        prep(t, t, "--test-fraction", "-0.5", dataset="folder"), ["--test-fraction"]),
    "fractions-leave-no-train": lambda t: (
        prep(t, make_folder(t, 3)[0], "--masks", t / "masks", "--val-fraction", "0.5",
             "--test-fraction", "0.5", dataset="folder"),
        ["--val-fraction", "--test-fraction"]),
    "workers-zero": lambda t: (prep(t, t, "--workers", "0"), ["--workers"]),
    "seed-not-an-integer": lambda t: (prep(t, t, "--seed", "1.5"), ["--seed"]),
    "masks-missing": lambda t: (prep(t, t, "--masks", t / "nowhere", dataset="folder"),
                                ["--masks", t / "nowhere"]),
    "flag-of-another-dataset": lambda t: (prep(t, t, "--fold", "1"), ["--fold", "kvasir-seg"]),
    "unknown-dataset": lambda t: (prep(t, t, dataset="coco"), ["coco"]),
    # bench: never writes over a user's file; flags refused while parsing
    "bench-json-user-file": lambda t: (["bench", "--json", f := user_file(t)], ["--json", f]),
    "bench-json-folder": lambda t: (["bench", "--json", t], ["--json", t]),
    "bench-batch-zero": lambda t: (["bench", "--batch-sizes", "1", "0"], ["--batch-sizes"]),
    "bench-warmup-zero": lambda t: (["bench", "--warmup", "0"], ["--warmup"]),
    "bench-repeats-zero": lambda t: (["bench", "--repeats", "0"], ["--repeats"]),
    "bench-budget-zero": lambda t: (["bench", "--budget", "0"], ["--budget"]),
    "bench-train-batch-negative": lambda t: (["bench", "--train-batch", "-1"], ["--train-batch"]),
    "bench-unknown-engine": lambda t: (["bench", "--engines", "tensorrt"], ["--engines"]),
    "bench-unknown-arch": lambda t: (["bench", "--arch", "vitq"], ["vitq"]),
    "bench-unknown-device": lambda t: (["bench", "--device", "tpu"], ["--device"]),
    "bench-three-sizes": lambda t: (["bench", "--size", "1", "2", "3"], ["--size"]),
}


def tree(root: Path) -> set[Path]:
    """Every path under `root`, folders included (snapshot() sees files only)."""
    return set(root.rglob("*"))


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_refused(case: Case, tmp_path: Path) -> None:
    argv, names = case(tmp_path)
    files, paths = snapshot(tmp_path), tree(tmp_path)

    error = assert_refused(run_segdino(*argv), names)

    bare = error.replace(str(tmp_path), "")  # the folder's name holds the case's name
    assert all(name in bare for name in names if isinstance(name, str)), error
    assert snapshot(tmp_path) == files and tree(tmp_path) == paths


def test_second_prepare_into_a_locked_out_is_refused(tmp_path: Path) -> None:
    source, out = kvasir(tmp_path), tmp_path / "out"
    out.mkdir()
    with (out / LOCK).open("w") as held:  # what a running prepare holds
        fcntl.flock(held, fcntl.LOCK_EX)
        files, paths = snapshot(tmp_path), tree(tmp_path)

        outcome = run_segdino_process("prepare", "kvasir-seg", source, out)

        assert_refused(outcome, [out, "another segdino prepare"])
        assert snapshot(tmp_path) == files and tree(tmp_path) == paths


# --- Ctrl-C at any moment: "interrupted", exit 130, never a traceback ------------------------


def assert_interrupted(outcome: Outcome, prog: str) -> None:
    """Exit 130 and the one line; `prog` is "segdino" when Ctrl-C came before the command
    line could tell which command it was."""
    assert outcome.code == 130, f"exit {outcome.code}, stderr:\n{outcome.stderr}"
    assert outcome.stderr_lines in ([f"{prog}: interrupted"], ["segdino: interrupted"]), \
        outcome.stderr


def test_ctrl_c_while_torch_is_imported() -> None:
    # `import torch` alone takes seconds: at 1 s the command is still starting.
    outcome = run_segdino_process("bench", "--device", "cpu", "--quiet", interrupt_after=1.0)
    assert_interrupted(outcome, "segdino bench")


def test_ctrl_c_during_prepare(tmp_path: Path) -> None:
    images, masks = make_folder(tmp_path, 40)
    argv = ("prepare", "folder", images, tmp_path / "out", "--masks", masks)
    # The first delay that lands before the run ends: a Ctrl-C once the result is printed,
    # as the interpreter exits, is a plain death by SIGINT (exit -2, what a shell shows as 130).
    for delay in (0.6, 0.3, 0.1):
        outcome = run_segdino_process(*argv, interrupt_after=delay)
        if "ids in" not in outcome.stdout:
            break
        (tmp_path / "out").rename(tmp_path / f"done-{delay}")
    assert_interrupted(outcome, "segdino prepare")


@pytest.mark.parametrize("where", ["import", "parse"])
def test_ctrl_c_while_the_command_starts(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    if where == "import":
        monkeypatch.setattr("segdino.commands.importlib.import_module", interrupt)
    else:
        monkeypatch.setattr("segdino.commands.prepare.configure", interrupt)
    assert_interrupted(run_segdino("prepare", "--help"), "segdino prepare")


def test_ctrl_c_during_extraction_leaves_nothing(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    archive = kvasir_zip(tmp_path)
    files, paths = snapshot(tmp_path), tree(tmp_path)
    real_extract, calls = zipfile.ZipFile.extract, []

    def dies_on_third(self: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> str:
        calls.append(member)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_extract(self, member, path)

    monkeypatch.setattr(zipfile.ZipFile, "extract", dies_on_third)
    assert_interrupted(run_segdino("prepare", "kvasir-seg", archive, tmp_path / "out"),
                       "segdino prepare")
    assert len(calls) == 3
    assert snapshot(tmp_path) == files and tree(tmp_path) == paths


# --- what still works ----------------------------------------------------------------------


def test_valid_zip_with_folders_and_a_compressible_file(tmp_path: Path) -> None:
    make_kvasir(tmp_path / "stage", TRAIN_IDS[:3])
    (tmp_path / "stage" / "Kvasir-SEG" / "notes.txt").write_bytes(bytes(2**20))  # 1000-fold,
    archive = zip_folder(tmp_path / "stage" / "Kvasir-SEG", tmp_path / "dl.zip")  # but small
    out = tmp_path / "data" / "kvasir"  # its parent made too

    outcome = run_segdino("prepare", "kvasir-seg", archive, out)

    assert outcome.code == 0, outcome.stderr
    assert json.loads((out / RECORD).read_text())["complete"]
    assert not (out / LOCK).exists() and not (out / SCRATCH).exists()


def test_failed_zip_then_good_zip_into_the_same_out(tmp_path: Path) -> None:
    good = kvasir_zip(tmp_path)
    bad = crc_broken(tmp_path / "bad")
    out = tmp_path / "out"
    assert_refused(run_segdino("prepare", "kvasir-seg", bad, out), bad)
    assert not out.exists()
    assert run_segdino("prepare", "kvasir-seg", good, out).code == 0


def test_import_and_help_need_no_torch() -> None:
    code = ("import sys, segdino; from segdino.commands import main\n"
            "try:\n    main(['prepare', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert segdino.UserError.__name__ == 'UserError'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_public_names_resolve_on_first_use() -> None:
    import segdino

    assert sorted(segdino.__all__) == sorted(segdino._PUBLIC)
    assert set(segdino.__all__) <= set(dir(segdino))
    for name in segdino.__all__:
        assert getattr(segdino, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        segdino.nothing  # noqa: B018


def test_bench_json_may_replace_its_own_report(tmp_path: Path) -> None:
    from segdino.benchmark import FORMAT
    from segdino.commands.bench import report_path

    earlier = tmp_path / "bench.json"
    earlier.write_text(json.dumps({"format": FORMAT, "inference": []}))
    assert report_path(str(earlier)) == earlier
    assert report_path(str(tmp_path / "new.json")) == tmp_path / "new.json"


def test_bench_skips_an_engine_whose_extra_is_missing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    report = tmp_path / "bench.json"

    outcome = run_segdino("bench", "--size", "16", "--batch-sizes", "1", "--engines", "onnx",
                          "--repeats", "1", "--warmup", "1", "--train-batch", "0", "--quiet",
                          "--device", "cpu", "--json", report)

    assert outcome.code == 0, outcome.stderr
    note = "onnx-fp32: skipped, the onnx engine needs ONNX Runtime: pip install segdino[onnx]"
    assert note in outcome.stdout
    written = json.loads(report.read_text())
    assert written["skipped"] == [note]
    assert [row["engine"] for row in written["inference"]] == ["torch-fp32"]
