"""SOURCE as the user downloaded it: a folder, a zip, or a folder of zips.

Datasets ask for a folder by what it holds, wherever it sits: mirrors and unzip tools nest
a folder inside a folder of the same name. The folder itself is searched first; zips are
extracted (into OUT's scratch folder, kept until the run completes) only when the folder
does not have what is asked for, so an extracted copy beside its zip is used as it is.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from segdino.errors import UserError

# Folders never searched: hidden ones (our scratch folder among them) and macOS zip debris.
_SKIPPED_DIRS = ("__MACOSX",)


class Source:
    """The dataset download at `path`; `scratch` is where its zips are extracted."""

    def __init__(self, path: Path, scratch: Path, exclude: Path) -> None:
        self.path = path
        self._scratch = scratch
        self._exclude = exclude.resolve()
        if zipfile.is_zipfile(path):
            self._roots: list[tuple[Path, str]] = []
            self._zips = [path]
        elif path.is_dir():
            self._roots = [(path, "")]
            self._zips = sorted(p for p in path.iterdir() if p.suffix.lower() == ".zip")
        else:
            raise UserError(f"{path}: no such folder or zip (expected the dataset download)")

    def find_dir(self, match: Callable[[Path], bool], what: str) -> Path | None:
        """The shallowest folder for which `match` is true, from the first place holding one."""
        for root, _ in self._each_root():
            found = _shallowest(root, match, self._exclude)
            if len(found) > 1:
                names = ", ".join(self.describe(p) for p in found)
                raise UserError(f"{self.path}: {what} found more than once ({names}); keep one")
            if found:
                return found[0]
        return None

    def find_file(self, name: str) -> Path | None:
        """The shallowest file called `name`, from the first place holding one."""
        for root, _ in self._each_root():
            found = _shallowest(root, lambda d: (d / name).is_file(), self._exclude)
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
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in tqdm(zf.infolist(), desc=f"extracting {archive.name}", disable=None):
                    zf.extract(member, partial)  # zipfile drops absolute and ".." parts
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{archive}: cannot extract ({exc})") from exc
        partial.rename(target)
        return target


def _shallowest(root: Path, match: Callable[[Path], bool], exclude: Path) -> list[Path]:
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
            if child.is_dir()
            and not child.name.startswith(".")
            and child.name not in _SKIPPED_DIRS
            and child.resolve() != exclude
        ]
    return []
