"""Build of the optional native extension ``rdvla._native`` (C++, CMake, nanobind).

Everything else about the package is declared in pyproject.toml; this file only adds the
extension and the ``build_ext`` command that builds it through the top-level
CMakeLists.txt.  Both ``pip install .`` and ``pip install -e .`` run it; the module lands
where setuptools expects it (the ``rdvla/`` folder for editable and in-place builds).
setuptools' build folder (``build/lib.*``, a second copy of every module, and the CMake tree)
and its ``rdvla.egg-info`` are kept out of the checkout, in one folder per checkout under the temporary directory
(``$TMPDIR``), so that a rebuild reuses it; ``--build-base`` on the command line still wins.

The extension is optional: without a C++17 compiler, CMake >= 3.18, the libjpeg-turbo
headers (Debian ``libjpeg62-turbo-dev``, Ubuntu/JetPack ``libjpeg-turbo8-dev``), the
Python headers or nanobind, the install still succeeds, prints a warning, and rdvla uses
its numpy preprocessing.  Set ``RDVLA_REQUIRE_NATIVE=1`` (as CI should) to make a failed
native build fail the install instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = Path(__file__).resolve().parent
REQUIREMENTS = (
    "a C++17 compiler, CMake >= 3.18, libjpeg-turbo headers (libjpeg62-turbo-dev on Debian, "
    "libjpeg-turbo8-dev on Ubuntu/JetPack), the Python headers and nanobind"
)


def build_base() -> str:
    """This checkout's build folder for this user, outside the checkout (made here: egg_info requires it)."""
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"rdvla-build-{os.getuid()}-{checkout}"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


class CMakeExtension(Extension):
    """An extension whose sources and flags live in CMakeLists.txt."""

    def __init__(self, name: str) -> None:
        required = os.environ.get("RDVLA_REQUIRE_NATIVE", "") not in ("", "0")
        super().__init__(name, sources=[], optional=not required)


def build_error(reason: str) -> CompileError:
    """A failed native build: setuptools' build_ext reports it as a warning and carries on for
    an optional extension, and fails the install for a required one."""
    return CompileError(
        f"{reason}; rdvla._native needs {REQUIREMENTS} (without it rdvla preprocesses in numpy)"
    )


class CMakeBuild(build_ext):
    """Configures and builds the CMake target ``_native`` and copies the module into place."""

    def build_extension(self, ext: Extension) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise build_error("cmake was not found on PATH")
        try:
            import nanobind
        except ImportError as err:
            raise build_error("nanobind is not installed in the build environment") from err
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        module_dir = build_dir / "module"
        jobs = str(self.parallel or os.cpu_count() or 1)
        steps = [
            (
                "configure",
                [
                    cmake,
                    "-S",
                    str(ROOT),
                    "-B",
                    str(build_dir),
                    "-DCMAKE_BUILD_TYPE=Release",
                    f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dnanobind_DIR={nanobind.cmake_dir()}",
                    f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={module_dir}",
                ],
            ),
            ("build", [cmake, "--build", str(build_dir), "--target", "_native", "--parallel", jobs]),
        ]
        for step, command in steps:
            try:
                subprocess.run(command, check=True)
            except subprocess.CalledProcessError as err:
                raise build_error(
                    f"the CMake {step} step exited with status {err.returncode} (its output is above)"
                ) from err
        built = sorted(module_dir.glob("_native.*"))
        if len(built) != 1:
            raise build_error(f"expected one built module in {module_dir}, found {built}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    ext_modules=[CMakeExtension("rdvla._native")],
    cmdclass={"build_ext": CMakeBuild},
    package_data={"rdvla": ["_native.pyi"]},
    options={"build": {"build_base": build_base()}, "egg_info": {"egg_base": build_base()}},
)
