"""Build the `rdvla` package as static tools see it: `python scripts/namespace_view.py [DIR]`.

The design card's folders (export/, runtime/, ...) are imported as `rdvla.export`, `rdvla.runtime`,
... through setuptools' `package-dir` mapping, which installs and editable installs understand but
tools that walk the file system (import-linter's grimp, mypy) do not. This writes DIR/rdvla (default: one
folder per checkout under the temporary directory, so that no copy of the tree sits in the checkout for grep
to find) as a folder of links into the checkout laid out as the installed package is;
folders named in `copy` are copied instead, so a test can change them without touching the checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Collection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path(tempfile.gettempdir()) / f"rdvla-namespace-{os.getuid()}-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"


def _setuptools(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Package name -> folder, from pyproject.toml's [tool.setuptools.package-dir]."""
    return {name: root / folder for name, folder in _setuptools(root)["package-dir"].items()}


def declared_packages(root: Path = ROOT) -> set[str]:
    """The packages pyproject.toml's [tool.setuptools] installs."""
    return set(_setuptools(root)["packages"])


def build_view(target: Path = DEFAULT_DIR, copy: Collection[str] = (), root: Path = ROOT) -> Path:
    """Write target/rdvla; returns `target` (the folder to put on PYTHONPATH)."""
    package = target / "rdvla"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    mapped = package_dirs(root)
    top = mapped.pop("rdvla")
    for entry in top.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapped.items():
        place = package / name.split(".", 1)[1]
        if place.name in copy:
            shutil.copytree(folder, place, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            place.symlink_to(folder)
    return target


if __name__ == "__main__":
    print(build_view(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
