"""SOURCE as the user downloaded it: a folder, a zip, or a folder of zips.

Datasets ask for a folder by what it holds, wherever it sits: mirrors and unzip tools nest
a folder inside a folder of the same name. The folder itself is searched first; zips are
extracted (into OUT's scratch folder, kept until the run completes) only when the folder
does not have what is asked for, so an extracted copy beside its zip is used as it is.

A zip is checked before anything is extracted (see `check_zip`), and is extracted into a
temporary folder renamed at the end, so a failed extraction leaves nothing behind.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PureWindowsPath

from segdino.errors import UserError, first_line
from segdino.progress import progress_bar

# Folders never searched: hidden ones (our scratch folder among them) and macOS zip debris.
_SKIPPED_DIRS = ("__MACOSX",)

# Zip bombs: a zip may expand to at most MAX_EXPANDED bytes (the largest download, ISIC
# 2017's training images, is about 6 GB), and, once it expands to over RATIO_FROM bytes, to
# at most MAX_RATIO times its own size (images are compressed already: a dataset zip expands
# about 1:1, a bomb 1000:1 and more). The sizes checked are those the zip declares; zipfile
# never writes more than an entry declares.
MAX_EXPANDED = 32 * 2**30
MAX_RATIO = 100
RATIO_FROM = 16 * 2**20
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_ENCRYPTED = 0x1  # general purpose flag bit 0


class Source:
    """The dataset download at `path`; `scratch` is where its zips are extracted."""

    def __init__(self, path: Path, scratch: Path) -> None:
        self.path = path
        self._scratch = scratch
        if path.is_dir():
            if not any(path.iterdir()):
                raise UserError(f"{path}: empty folder (expected the dataset download)")
            self._roots: list[tuple[Path, str]] = [(path, "")]
            self._zips = sorted(
                p for p in path.iterdir() if p.suffix.lower() == ".zip" and p.is_file()
            )
        elif path.is_file():
            self._roots, self._zips = [], [path]
        else:
            raise UserError(f"{path}: no such folder or zip (expected the dataset download)")

    def find_dir(self, match: Callable[[Path], bool], what: str) -> Path | None:
        """The shallowest folder for which `match` is true, from the first place holding one."""
        for root, _ in self._each_root():
            found = _shallowest(root, match)
            if len(found) > 1:
                names = ", ".join(self.describe(p) for p in found)
                raise UserError(f"{self.path}: {what} found more than once ({names}); keep one")
            if found:
                return found[0]
        return None

    def find_file(self, name: str) -> Path | None:
        """The shallowest file called `name`, from the first place holding one."""
        for root, _ in self._each_root():
            found = _shallowest(root, lambda d: (d / name).is_file())
            if found:
                return found[0] / name
        return None

    def describe(self, path: Path) -> str:
        """`path` as a user finds it in SOURCE: relative, through the zip that held it."""
        for root, label in self._roots:
            if path.is_relative_to(root):
                return (Path(label) / path.relative_to(root)).as_posix()
        return str(path)

    def _each_root(self) -> Iterator[tuple[Path, str]]:
        """The folder, then each zip, extracted only once the places before it are searched."""
        i = 0
        while i < len(self._roots) or self._zips:
            if i == len(self._roots):
                archive = self._zips.pop(0)
                self._roots.append((self._extract(archive), archive.name))
            yield self._roots[i]
            i += 1

    def _extract(self, archive: Path) -> Path:
        target = self._scratch / archive.name
        if target.is_dir():  # extracted by an earlier run that did not complete
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a killed run's
        try:
            with zipfile.ZipFile(archive) as zf:
                members = check_zip(archive, zf)
                for member in progress_bar(members, desc=f"extracting {archive.name}"):
                    zf.extract(member, partial)
            partial.rename(target)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UserError(
                f"{archive}: not a readable zip: corrupt or truncated ({first_line(exc)}); "
                "download it again"
            ) from None
        except OSError as exc:
            raise UserError(f"{archive}: cannot extract ({first_line(exc)})") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target


def check_zip(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """`zf`'s entries, once nothing in them is refused: a zip that holds no file, an entry
    that is encrypted, compressed by a method zipfile lacks, or named to land outside the
    extraction folder ("zip slip": absolute, a drive, ".."), or a zip bomb."""
    members = zf.infolist()
    if not any(not m.is_dir() for m in members):
        raise UserError(f"{archive}: empty zip (no files in it)")
    for m in members:
        if m.flag_bits & _ENCRYPTED:
            problem = "is encrypted (extract the zip yourself and give the folder)"
        elif m.compress_type not in _METHODS:
            problem = f"uses compression method {m.compress_type}, which Python cannot read"
        elif _escapes(m.filename):
            problem = "would land outside the extraction folder (absolute or '..')"
        else:
            continue
        raise UserError(f"{archive}: entry {m.filename!r} {problem}: refusing the zip")
    expanded = sum(m.file_size for m in members)
    if expanded > MAX_EXPANDED:
        raise UserError(
            f"{archive}: would expand to {_human(expanded)}, over the {_human(MAX_EXPANDED)} "
            "limit (a zip bomb?): refusing the zip"
        )
    size = archive.stat().st_size
    if expanded > RATIO_FROM and expanded > MAX_RATIO * size:
        raise UserError(
            f"{archive}: would expand {expanded / max(size, 1):.0f}-fold "
            f"({_human(expanded)} from {_human(size)}), over the "
            f"{MAX_RATIO}-fold limit (a zip bomb?): refusing the zip"
        )
    return members


def _human(size: float) -> str:
    """A byte count in the largest binary unit that keeps it at least 1."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.0f} GiB"


def _escapes(name: str) -> bool:
    """Whether a zip entry's name leaves the folder it is extracted into, read both ways
    (zip tools on Windows take backslashes as separators)."""
    path = PureWindowsPath(name)  # also splits at "/"
    return bool(path.drive or path.root) or ".." in path.parts


def _shallowest(root: Path, match: Callable[[Path], bool]) -> list[Path]:
    """Every folder under `root` (itself included) that matches, at the smallest depth."""
    level = [root]
    while level:
        found = [d for d in level if match(d)]
        if found:
            return found
        level = [
            child
            for d in level
            for child in sorted(d.iterdir())
            if child.is_dir() and not child.name.startswith(".") and child.name not in _SKIPPED_DIRS
        ]
    return []
