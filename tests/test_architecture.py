"""The architecture contract (pyproject.toml [tool.importlinter]) holds, fails on violations, the
namespace is the only thing the project installs, and tests/ mirrors the source folders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from namespace_view import build_view, declared_packages, package_dirs  # noqa: E402

pytestmark = pytest.mark.timeout(120)

CONTRACTS = ("no-cycles", "rooms", "runtime-layers", "robot-light")
WORKSTATION = ("torch", "transformers", "timm", "onnx", "onnxscript")


def lint_imports(view: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=view,
                          env={"PYTHONPATH": str(view), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=100)


def test_the_contracts_hold(tmp_path: Path) -> None:
    result = lint_imports(build_view(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("halting.py", "import torch", "The robot side (runtime, devices) imports no workstation library"),
        ("halting.py", "import onnx", "The robot side (runtime, devices) imports no workstation library"),
        ("halting.py", "import rdvla.runtime.policy", "No import cycles between the modules of any package"),
        ("bundle.py", "import rdvla.runtime.policy", "Runtime: control > verify, profile > policy"),
        ("policy.py", "import rdvla.cli.run", "Rooms in the order the data flows"),
    ],
)
def test_a_violation_breaks_the_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    view = build_view(tmp_path, copy=("runtime",))
    target = view / "rdvla" / "runtime" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint_imports(view)
    assert result.returncode == 1, result.stdout
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in report, result.stdout


def test_the_package_list_names_every_package_of_the_tree() -> None:
    found = set()
    for name, folder in package_dirs().items():
        found |= {".".join([name, *init.parent.relative_to(folder).parts]) for init in folder.rglob("__init__.py")
                  if "__pycache__" not in init.parts}
    assert declared_packages() == found


def test_only_the_namespace_is_importable_outside_the_checkout(tmp_path: Path) -> None:
    for generic in ("runtime", "export", "devices", "calibration"):
        result = subprocess.run([sys.executable, "-c", f"import {generic}"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode != 0 and f"No module named '{generic}'" in result.stderr
    result = subprocess.run([sys.executable, "-c", "import rdvla.runtime.policy, rdvla.devices.cameras, rdvla.cli"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_robot_modules_import_with_the_workstation_libraries_absent(tmp_path: Path) -> None:
    """Every module of runtime/, devices/ and the CLI imports where torch, onnx, ... cannot (the torch backend aside)."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {WORKSTATION!r}: sys.modules[name] = None\n"
        "import rdvla.runtime, rdvla.devices, rdvla.cli\n"
        "names = []\n"
        "for package in (rdvla.runtime, rdvla.devices, rdvla.cli):\n"
        "    names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.')]\n"
        "names = [n for n in names if n != 'rdvla.runtime.backends.torch_split']\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 30


def test_the_readme_layout_table_matches_the_tree() -> None:
    """Every top-level folder of the checkout has a row, and every path a row names exists."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = {path.strip().strip("`") for row in rows for path in row.split(",") if path.strip().startswith("`")}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {f.split("/")[0] for f in tracked if "/" in f and not f.startswith(".")}
    assert folders <= {name.split("/")[0] for name in named}, "folders without a README row"
    assert all((ROOT / name).exists() for name in named), [name for name in named if not (ROOT / name).exists()]


# Folders of tests/ that mirror no source folder: the tiers that cut across every room, and test data.
CROSS_CUTTING = {
    "reliability": "the bad-input battery, gates, interrupts and outputs across every command",
    "robot_install": "the robot-install tier: a venv without the workstation libraries",
    "fixtures": "test data",
}
# Folders of C++ source, which the `rdvla` namespace holds as one module.
NATIVE = {"native": "rdvla._native"}
# Test modules that reach their package other than by naming it.
INDIRECT = {
    "runtime/backends/tensorrt/test_typecheck_stubs.py": "scripts/typecheck_tensorrt.py, which type-checks the package",
    "calibration/test_calibrated_graphs.py": "the `calibrated` fixture: a bundle `rdvla calibrate` wrote",
    "calibration/test_fp16_strict_types.py": "the `calibrated` fixture: a bundle `rdvla calibrate` wrote",
}


def mirrored_module(folder: tuple[str, ...], packages: set[str]) -> str | None:
    """The module tests/<folder> mirrors: `rdvla.<folder, dotted>` where that is a package, native/ as
    `rdvla._native`; None where it mirrors nothing."""
    if folder[:1] and folder[0] in NATIVE:
        return NATIVE[folder[0]] if len(folder) == 1 else None
    name = ".".join(("rdvla", *folder))
    return name if name in packages else None


def mirror_faults(tests: Path, packages: set[str]) -> list[str]:
    """What breaks the mirror in the test tree `tests`, given the packages the project installs."""
    faults = []
    for path in sorted(tests.rglob("*")):
        rel = path.relative_to(tests)
        if "__pycache__" in rel.parts or rel.parts[0] in CROSS_CUTTING:
            continue
        if path.is_dir():
            if mirrored_module(rel.parts, packages) is None:
                faults.append(f"tests/{rel.as_posix()}/ mirrors no source folder")
        elif path.suffix == ".py" and len(rel.parts) == 1:
            if rel.name not in ("conftest.py", "test_architecture.py"):
                faults.append(f"tests/{rel.as_posix()} sits at the top: move it to the folder of the code it tests")
        elif path.name.startswith("test_") and path.suffix == ".py" and rel.as_posix() not in INDIRECT:
            module = mirrored_module(rel.parts[:-1], packages)
            if module is not None and not re.search(rf"\b{re.escape(module)}\b", path.read_text()):
                faults.append(f"tests/{rel.as_posix()} never names {module}, the package its folder mirrors")
    return faults


def test_the_tests_mirror_the_source_folders() -> None:
    """tests/<path>/ holds the tests of the package `rdvla.<path>` (tests/cli/ -> rdvla/cli/,
    tests/runtime/control/ -> runtime/control/, tests/native/ -> native/), and every test module in it names
    that package (INDIRECT: those that reach it otherwise); only conftest.py and this file sit at the top, and
    only the cross-cutting tiers and the fixtures (CROSS_CUTTING) mirror no source folder."""
    assert mirror_faults(ROOT / "tests", declared_packages()) == []


def test_the_mirror_check_finds_a_folder_without_source_and_a_test_in_the_wrong_room(tmp_path: Path) -> None:
    for folder in ("foo", "runtime/control", "native/src", "reliability"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "runtime" / "control" / "test_loop.py").write_text("from rdvla.runtime.control.loop import ControlLoop\n")
    (tmp_path / "runtime" / "control" / "test_robot.py").write_text("from rdvla.devices.robots.sim import SimRobot\n")
    (tmp_path / "reliability" / "test_anything.py").write_text("from rdvla.cli import main\n")
    (tmp_path / "test_stray.py").write_text("from rdvla.runtime.halting import AdjacentMSE\n")
    assert mirror_faults(tmp_path, declared_packages()) == [
        "tests/foo/ mirrors no source folder",
        "tests/native/src/ mirrors no source folder",
        "tests/runtime/control/test_robot.py never names rdvla.runtime.control, the package its folder mirrors",
        "tests/test_stray.py sits at the top: move it to the folder of the code it tests",
    ]
