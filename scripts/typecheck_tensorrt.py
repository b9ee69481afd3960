"""Type-check the TensorRT modules against tensorrt-stubs: `.venv/bin/python scripts/typecheck_tensorrt.py`.

Every published tensorrt-stubs release (10.8 to 10.13) ships its .pyi files without a py.typed
marker, holds a few `def` lines that are not valid Python (a parameter named `in`; a parameter
without default after defaulted ones), and declares a module-level `bool` (the DataType) that turns
every `-> bool` of the module into an invalid type. This script writes a copy of the installed stubs
into .mypy_cache/tensorrt-stubs (git-ignored; `mypy_path` in pyproject.toml) with the broken `def`
lines widened to `*args, **kwargs` and the `bool` declaration dropped, then runs mypy on every
module of the TensorRT package (runtime/backends/tensorrt/, new modules included) and the backend
helpers it shares, with the strict settings of pyproject.toml's override for them. rdvla uses none
of the repaired methods (plugin interfaces, add_scale_nd) nor trt.bool.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / ".mypy_cache" / "tensorrt-stubs"
PACKAGES = ("tensorrt", "tensorrt_bindings")
# Inside the namespace view: every module of the TensorRT package, and the backend helpers it shares.
PACKAGE = "rdvla/runtime/backends/tensorrt"
SHARED = ("rdvla/runtime/backends/capture.py", "rdvla/runtime/backends/pingpong.py")

_DEF = re.compile(r"^(?P<head>\s*def \w+)\((?P<params>.*)\)(?P<tail>\s*(->.*)?:\s*)$")


def repair(source: str) -> str:
    """`source` with each unparsable one-line `def` given a `(self, *args, **kwargs)` signature and no `bool` variable."""
    lines = [line for line in source.split("\n") if not line.startswith("bool: ")]
    for i, line in enumerate(lines):
        match = _DEF.match(line)
        if match is None:
            continue
        try:
            ast.parse(line.strip() + "\n    ...")
        except SyntaxError:
            lines[i] = f"{match['head']}(self, *args: typing.Any, **kwargs: typing.Any){match['tail']}"
    repaired = "\n".join(lines)
    ast.parse(repaired)  # anything still broken must fail here, not inside mypy
    return repaired


def write_stubs(target: Path = STUBS) -> Path:
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise SystemExit(f"{package} stubs not found: pip install --no-deps 'tensorrt-stubs>=10.0,<11'")
        source_dir = Path(locations[0])
        for stub in source_dir.glob("*.pyi"):
            out = target / package / stub.name
            out.parent.mkdir(parents=True, exist_ok=True)
            text = stub.read_text()
            if "import typing" not in text:
                text = "import typing\n" + text
            out.write_text(repair(text))
    return target


def main() -> int:
    write_stubs()
    # mypy does not follow setuptools' package-dir mapping: it checks the modules where the installed package has them.
    sys.path.insert(0, str(ROOT / "scripts"))
    from namespace_view import build_view

    view = build_view()
    return subprocess.run([sys.executable, "-m", "mypy", *(str(p) for p in checked(view))], cwd=ROOT).returncode


def checked(view: Path) -> list[Path]:
    """The files mypy checks: every module of the package (new ones included) and the shared helpers."""
    return sorted((view / PACKAGE).glob("*.py")) + [view / s for s in SHARED]


if __name__ == "__main__":
    sys.exit(main())
