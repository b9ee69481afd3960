"""Native (rdvla._native) against numpy (runtime/preprocess/) preprocessing, for BENCHMARKS.md.

    python scripts/bench_preprocess.py [--repeats 50] [--numpy-repeats 7] [--content fixture]

For two camera frames of 256x256, 640x480 and 848x480 (width x height) it measures, in the
same run, one whole query: camera frames -> pixel_values (1, 12, 224, 224) float32 --
``to_pixel_values`` into a preallocated buffer, as ``Policy`` calls it, with each
implementation -- and prints a markdown table.

Wall time: the median (and the minimum) over ``--repeats`` (native) and ``--numpy-repeats``
(numpy) calls, interleaved so that both see the same load, after one warm-up call each
(which fills the resize-weight caches and the per-thread buffers).  Native processes the
two frames on two threads; numpy runs on one.  On a shared machine the wall times move
with the load; the load average is printed with them, the minimum shows the cost without
contention, and the CPU time (of the whole process, all threads, median) is what the call
consumed: native's wall time on an idle machine is about its CPU time divided by the
number of frames (one thread per frame).

Instructions: counted with ``valgrind --tool=callgrind``, which is repeatable where wall time
is not.  For every (implementation, size) this script runs a small driver of itself
(``--driver``) twice under callgrind: once making 1 call and once making 1 + K calls, each
run importing the module and building the inputs first.  The per-call count is the
difference divided by K, so the imports, input building and the warm-up call cancel out
exactly and the figure is the steady-state cost of one query, all threads included.
OpenBLAS and OpenMP are held to one thread in the drivers so that idle spinning threads do
not add noise.

``--content`` picks the frames: ``fixture`` (default) is the committed TensorFlow fixture of
that size (tests/fixtures/preprocess: gradient, texture, edges and noise quadrants) and its
mirror image; ``smooth`` is two smooth synthetic frames.  The JPEG entropy coding inside
libjpeg-turbo costs more on busy images, so native figures depend on content; numpy's do not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "preprocess"
SIZES = {(256, 256): "libero_256x256", (640, 480): "realsense_640x480", (848, 480): "realsense_848x480"}
EXTRA_CALLS = 2  # K: calls counted beyond the warm-up in the callgrind runs


def make_frames(width: int, height: int, content: str) -> list[np.ndarray]:
    """Two C-contiguous uint8 (height, width, 3) frames."""
    if content == "fixture":
        with np.load(FIXTURES / f"{SIZES[(width, height)]}.npz") as data:
            first = data["image"]
        return [np.ascontiguousarray(first), np.ascontiguousarray(first[:, ::-1])]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for phase in (0.0, 1.0):
        rgb = np.stack(
            [
                255.0 * x / (width - 1),
                255.0 * y / (height - 1),
                127.5 + 100.0 * np.sin(x / 40.0 + phase) * np.cos(y / 30.0),
            ],
            axis=-1,
        )
        frames.append(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    return frames


def query(implementation: str, frames: list[np.ndarray]) -> Callable[[], object]:
    """A zero-argument callable that preprocesses ``frames`` once."""
    from rdvla.runtime import preprocess as reference

    config = reference.DEFAULT_CONFIG
    size = config.image_size
    out = np.empty((1, 6 * len(frames), size, size), dtype=np.float32)
    return lambda: reference.to_pixel_values(frames, config=config, implementation=implementation, out=out)


def timed_ms(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time and CPU time of this process (all its threads) of one call, in ms."""
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start), 1e3 * (time.process_time() - cpu)


def wall_times(
    native: Callable[[], object], numpy: Callable[[], object], repeats: int, numpy_repeats: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, CPU) ms of native and numpy calls, interleaved so that both see the same load."""
    native()  # warm-up
    numpy()
    native_ms: list[tuple[float, float]] = []
    numpy_ms: list[tuple[float, float]] = []
    every = max(1, repeats // max(1, numpy_repeats))
    for i in range(repeats):
        native_ms.append(timed_ms(native))
        if i % every == 0 and len(numpy_ms) < numpy_repeats:
            numpy_ms.append(timed_ms(numpy))
    return native_ms, numpy_ms


def callgrind_instructions(implementation: str, size: tuple[int, int], content: str, calls: int) -> int:
    """Instructions of one driver process making ``calls`` calls, counted by callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--driver",
        implementation,
        "--size",
        f"{size[0]}x{size[1]}",
        "--content",
        content,
        "--calls",
        str(calls),
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return int(found.group(1))


def instructions_per_call(implementation: str, size: tuple[int, int], content: str) -> float:
    base = callgrind_instructions(implementation, size, content, 1)
    more = callgrind_instructions(implementation, size, content, 1 + EXTRA_CALLS)
    return (more - base) / EXTRA_CALLS


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed native calls per size")
    parser.add_argument("--numpy-repeats", type=int, default=7, help="timed numpy calls per size")
    parser.add_argument("--content", choices=("fixture", "smooth"), default="fixture")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--driver", choices=("native", "numpy"), help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.driver:
        width, height = (int(v) for v in args.size.split("x"))
        fn = query(args.driver, make_frames(width, height, args.content))
        for _ in range(args.calls):
            fn()
        return

    count = shutil.which("valgrind") is not None and not args.no_callgrind
    print(f"# Preprocessing: native vs numpy ({args.content} frames)\n")
    print(f"- command: `{' '.join(['python', f'scripts/{Path(__file__).name}', *sys.argv[1:]])}`")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {machine()}; load average before: {load_average()}")
    print(f"- python {platform.python_version()}, numpy {np.__version__}")
    print(
        f"- wall: median (and minimum) of {args.repeats} native / {args.numpy_repeats} numpy calls,"
        " interleaved, after a warm-up; ratio of the medians;"
        + (f" instructions: callgrind, (1 + {EXTRA_CALLS} calls) - (1 call), per call" if count else "")
        + "\n"
    )
    header = "| frames | numpy ms (min) | native ms (min) | wall ratio | numpy CPU ms | native CPU ms |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if count:
        header += " numpy Minstr | native Minstr | instr ratio |"
        rule += "---:|---:|---:|"
    print(header)
    print(rule)
    for size in SIZES:
        frames = make_frames(*size, args.content)
        native_ms, numpy_ms = wall_times(
            query("native", frames), query("numpy", frames), args.repeats, args.numpy_repeats
        )
        native_wall = [wall for wall, _ in native_ms]
        numpy_wall = [wall for wall, _ in numpy_ms]
        native_median, numpy_median = statistics.median(native_wall), statistics.median(numpy_wall)
        row = (
            f"| 2 x {size[0]}x{size[1]} | {numpy_median:.1f} ({min(numpy_wall):.1f}) "
            f"| {native_median:.2f} ({min(native_wall):.2f}) | {numpy_median / native_median:.1f}x "
            f"| {statistics.median(cpu for _, cpu in numpy_ms):.1f} "
            f"| {statistics.median(cpu for _, cpu in native_ms):.2f} |"
        )
        if count:
            numpy_ins = instructions_per_call("numpy", size, args.content)
            native_ins = instructions_per_call("native", size, args.content)
            row += f" {numpy_ins / 1e6:.1f} | {native_ins / 1e6:.1f} | {numpy_ins / native_ins:.1f}x |"
        print(row, flush=True)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
