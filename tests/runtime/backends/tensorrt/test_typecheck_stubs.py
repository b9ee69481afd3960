"""scripts/typecheck_tensorrt.py repairs the published tensorrt-stubs so mypy can read them."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def typecheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rdvla_trt_typecheck", Path(__file__).resolve().parents[4] / "scripts" / "typecheck_tensorrt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repair_fixes_only_broken_lines() -> None:
    source = "\n".join(
        [
            "import typing",
            "bool: DataType  # value = <DataType.BOOL: 4>",
            "class P:",
            "    def get_workspace_size(self, in: list[int], out: list[int]) -> int:",
            "        ...",
            "    def add_scale_nd(self, input: int, shift: int = None, channel_axis: int) -> int:",
            "        ...",
            "    def fine(self, x: int) -> bool:",
            "        ...",
        ]
    )
    repaired = typecheck().repair(source)
    ast.parse(repaired)
    lines = repaired.split("\n")
    assert "    def get_workspace_size(self, *args: typing.Any, **kwargs: typing.Any) -> int:" in lines
    assert "    def add_scale_nd(self, *args: typing.Any, **kwargs: typing.Any) -> int:" in lines
    assert "    def fine(self, x: int) -> bool:" in lines
    assert not any(line.startswith("bool: ") for line in lines)


def test_installed_stubs_become_parsable(tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt_bindings") is None:
        pytest.skip("tensorrt-stubs is not installed")
    out = typecheck().write_stubs(tmp_path)
    for stub in out.rglob("*.pyi"):
        ast.parse(stub.read_text())
    assert (out / "tensorrt" / "__init__.pyi").is_file() and (out / "tensorrt_bindings" / "tensorrt.pyi").is_file()
