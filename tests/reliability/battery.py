"""The harness of the bad-input battery: a case is a command line made from a world of files, the exit
status it must end with, what the verdict line must say, and the files it may write.

Every case runs `rdvla.cli.main` in-process and is held to the same rules (issue 14):
* no exception escapes and no "Traceback" is printed, nor a library's advice to load a file unsafely;
* the exit status is the documented one: 2 for a usage or input error, 1 for a failed gate, 0 when the
  unusual input is a valid one;
* the verdict line (stderr's last line for an error; the gate's verdict for a failed gate; the bundle
  line for `rdvla doctor`) holds every string of `says`: the bad input's option or file, and the fix;
* every file under the case's folders is as it was, except the declared outputs, and nothing else
  appeared (no scratch folder, lock file or partial output is left behind).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import traceback
import zlib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

PROPRIO = "0,0,0,0,0,0,0.04,-0.04"


@dataclass
class World:
    """The files a case works on. `checkpoint`, `bundle` and `recordings` are shared by every case and must never
    change; a case damages private copies (`checkpoint_copy`, `bundle_copy`) under `tmp`."""

    tmp: Path
    checkpoint: Path
    bundle: Path
    recordings: tuple[Path, Path]

    def path(self, rel: str) -> Path:
        return self.tmp / rel

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def folder(self, rel: str) -> Path:
        path = self.tmp / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_copy(self, rel: str = "ckpt") -> Path:
        return Path(shutil.copytree(self.checkpoint, self.tmp / rel))

    def bundle_copy(self, rel: str = "bundle") -> Path:
        return Path(shutil.copytree(self.bundle, self.tmp / rel))

    def image(self, rel: str = "camera.png", mode: str = "RGB", size: tuple[int, int] = (64, 48), fmt: Optional[str] = None,
              array: Optional[np.ndarray] = None) -> Path:
        from PIL import Image

        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if array is None:
            rng = np.random.default_rng(len(rel))
            array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(array).convert(mode)
        else:
            img = Image.fromarray(array)
        img.save(path, format=fmt)
        return path

    def png_declaring(self, rel: str, width: int, height: int) -> Path:
        """A small valid PNG whose header claims `width` x `height` (a decompression bomb's shape)."""
        data = bytearray(self.image(rel).read_bytes())
        ihdr = data[12:29]  # chunk type + 13 bytes of IHDR data
        patched = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
        data[12:29] = patched
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(patched)) & 0xFFFFFFFF)
        path = self.tmp / rel
        path.write_bytes(bytes(data))
        return path

    def npy(self, rel: str, array: np.ndarray) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.save(f, array)
        return path

    def recording_copy(self, rel: str, which: int = 0) -> Path:
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.recordings[which], path)
        return path


# ----- bundles edited as a user's tools would: JSON rewritten, digest recomputed, nothing validated ---------


def manifest_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text())


def save_raw_manifest(root: Path, data: Any, text: Optional[bytes] = None) -> None:
    """Write manifest.json (any JSON, or raw bytes) and a matching manifest.sha256, without `Manifest`."""
    raw = text if text is not None else (json.dumps(data, indent=2) + "\n").encode()
    (root / "manifest.json").write_bytes(raw)
    (root / "manifest.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")


def edit_raw(root: Path, change: Callable[[dict[str, Any]], Any], rehash: Sequence[str] = ()) -> Path:
    """Apply `change` to the manifest's JSON in place, list the new SHA-256 of the files `rehash`, and save it
    with a recomputed digest."""
    data = manifest_of(root)
    change(data)
    for rel in rehash:
        data["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    save_raw_manifest(root, data)
    return root


def nan_initializers(path: Path) -> None:
    """Every floating-point weight of the ONNX graph at `path` set to NaN (the graph stays valid)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), init.name))
    onnx.save(model, str(path))


# ----- cases ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[World], Sequence[str]]
    code: int = 2
    says: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # tmp-relative glob patterns of what the command may create or change
    verdict: str = "stderr"  # stderr | stdout (a gate's verdict) | doctor (the bundle finding)


# What torch and numpy suggest when they refuse a file: each would let the file run code. Never passed on.
UNSAFE_ADVICE = ("weights_only", "allow_pickle", "add_safe_globals", "pickle.load", "trust the source")


@dataclass
class Outcome:
    code: Optional[int]
    out: str
    err: str
    escaped: str = ""  # the traceback of an exception that left `main`


def run_main(argv: Sequence[str], capsys: Any) -> Outcome:
    from rdvla.cli import main

    escaped = ""
    try:
        code: Optional[int] = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException:  # noqa: BLE001 - the battery reports it as the failure it is
        code, escaped = None, traceback.format_exc()
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, escaped)


def snapshot(roots: Sequence[Path], content: bool = True) -> dict[str, str]:
    """path -> content hash (files; size, mtime and inode without `content`), 'dir' (folders), 'link:target'
    (symlinks), for everything under `roots`."""
    seen: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    seen[str(path)] = f"link:{os.readlink(path)}"
                elif path.is_dir():
                    seen[str(path)] = "dir"
                elif content:
                    seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    stat = path.stat()
                    seen[str(path)] = f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    return seen


def shared_roots(world: World) -> list[Path]:
    """The fixtures every case reads and none may change (hashed once per module by the tests, stat'ed per case)."""
    return [world.checkpoint, world.bundle, world.recordings[0].parent]


def changed_files(before: dict[str, str], after: dict[str, str], tmp: Path, outputs: Sequence[str]) -> list[str]:
    """What differs between two snapshots and is not a declared output (or a folder holding one)."""

    def declared(path: str) -> bool:  # an output, a file inside an output folder, or a folder made to hold one
        rel = os.path.relpath(path, tmp)
        return any(fnmatch(rel, pattern) or rel.startswith(pattern + "/") or pattern.startswith(rel + "/")
                   for pattern in outputs)

    problems = []
    for path, digest in before.items():
        if declared(path):
            continue
        if path not in after:
            problems.append(f"lost {path}")
        elif after[path] != digest:
            problems.append(f"changed {path}")
    problems += [f"left behind {path}" for path in after if path not in before and not declared(path)]
    return problems


def verdict_line(case: Case, outcome: Outcome) -> str:
    if case.verdict == "doctor":
        return next((line for line in outcome.out.splitlines() if line.split()[1:2] == ["bundle"]), "")
    stream = outcome.out if case.verdict == "stdout" else outcome.err
    lines = [line for line in stream.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check(case: Case, world: World, capsys: Any) -> None:
    argv = [str(a) for a in case.argv(world)]
    before, shared = snapshot([world.tmp]), snapshot(shared_roots(world), content=False)
    outcome = run_main(argv, capsys)
    after = snapshot([world.tmp])
    context = f"rdvla {' '.join(argv)}\n--- stdout\n{outcome.out[-2000:]}\n--- stderr\n{outcome.err[-2000:]}"
    assert not outcome.escaped, f"an exception escaped:\n{outcome.escaped}\n{context}"
    assert "Traceback" not in outcome.err, context
    advice = [a for a in UNSAFE_ADVICE if a in outcome.err + outcome.out]
    assert not advice, f"a library's advice to load files unsafely reached the user: {advice}\n{context}"
    assert outcome.code == case.code, f"exit status {outcome.code}, expected {case.code}\n{context}"
    line = verdict_line(case, outcome)
    if case.code == 2 and case.verdict == "stderr":
        assert line.startswith("error:") or line.startswith("rdvla"), f"the last line is not an error: {line!r}\n{context}"
    missing = [s for s in case.says if s not in line] if case.code != 0 else []
    assert not missing, f"the verdict line {line!r} lacks {missing}\n{context}"
    problems = changed_files(before, after, world.tmp, case.outputs)
    problems += changed_files(shared, snapshot(shared_roots(world), content=False), world.tmp, ())
    assert not problems, "user files touched: " + "; ".join(problems) + f"\n{context}"


CaseTable = list[Case]


def cases(*groups: CaseTable) -> list[Any]:
    """pytest parameters, one per case, named by its id (ids must be unique)."""
    import pytest

    table = [c for group in groups for c in group]
    ids = [c.id for c in table]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return [pytest.param(c, id=c.id) for c in table]


__all__ = ["Case", "Outcome", "World", "PROPRIO", "cases", "check", "edit_raw", "manifest_of", "save_raw_manifest",
           "shared_roots", "snapshot"]
