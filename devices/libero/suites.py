"""The LIBERO suites as the authors evaluate them (shared/rdvla_spec.md 3.6), and the simulator's import.

The simulator is an optional extra (`pip install 'rdvla[libero]'`); everything here that needs it
imports it lazily and turns its absence into one `LiberoUnavailableError` line.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from rdvla.devices.libero.gl import choose_gl_backend

log = logging.getLogger(__name__)

INSTALL_HINT = "install the simulator with `pip install -e '.[libero]'` (or `bash scripts/install.sh --libero`)"


class LiberoUnavailableError(RuntimeError):
    """The LIBERO simulator (libero.libero, robosuite, mujoco) is not installed or cannot start."""


@dataclass(frozen=True)
class Suite:
    name: str
    max_steps: int  # control steps after the settle steps (the authors' limits)
    dataset: str  # the dataset key of dataset_statistics.json a checkpoint trained on this suite carries


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("libero_spatial", 220, "libero_spatial_no_noops"),
        Suite("libero_object", 280, "libero_object_no_noops"),
        Suite("libero_goal", 300, "libero_goal_no_noops"),
        Suite("libero_10", 520, "libero_10_no_noops"),
        Suite("libero_90", 400, "libero_90_no_noops"),
    )
}

SETTLE_STEPS = 10  # dummy steps after a reset while the objects come to rest
SETTLE_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # stay, gripper open
IMAGE_SIZE = 256  # rendered resolution of both cameras (env_img_res)
CAMERAS = ("agentview", "robot0_eye_in_hand")  # simulator camera names, in the policy's order
ROLES = ("third_person", "wrist")  # the same cameras as the control loop names them


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """LIBERO and robosuite print progress to stdout, which belongs to the CLI: it goes to the debug log."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        yield
    if sink.getvalue().strip():
        log.debug("simulator: %s", sink.getvalue().strip())


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


def import_libero() -> Any:
    """The `libero.libero` package with robosuite patched by it (robosuite 1.4 with mujoco 3 needs LIBERO's
    environments imported first), after a GL backend is chosen: both must happen before mujoco loads."""
    choose_gl_backend()
    # robosuite warns at import that it has no private macro file (it needs none here): not the user's concern.
    logging.disable(logging.WARNING)
    try:
        libero = importlib.import_module("libero.libero")
        importlib.import_module("libero.libero.envs")
        importlib.import_module("libero.libero.benchmark")
    except ImportError as error:
        raise LiberoUnavailableError(f"the LIBERO simulator is not installed ({error.name or error}); {INSTALL_HINT}") from None
    finally:
        logging.disable(logging.NOTSET)
    return libero


@dataclass(frozen=True)
class Task:
    suite: Suite
    index: int
    name: str
    language: str
    bddl_file: str
    init_states: Any  # (50, state_dim) float64: the suite's fixed initial states, episode i starts from row i


def load_task(suite_name: str, index: int) -> Task:
    chosen = suite(suite_name)
    libero = import_libero()
    benchmark = importlib.import_module("libero.libero.benchmark")
    with quiet():
        tasks = benchmark.get_benchmark_dict()[suite_name]()
    if not 0 <= index < tasks.n_tasks:
        raise ValueError(f"task {index} does not exist in {suite_name}: it has tasks 0..{tasks.n_tasks - 1}")
    task = tasks.get_task(index)
    bddl = f"{libero.get_libero_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
    return Task(chosen, index, task.name, task.language, bddl, tasks.get_task_init_states(index))


def task_count(suite_name: str) -> int:
    suite(suite_name)
    import_libero()
    benchmark = importlib.import_module("libero.libero.benchmark")
    with quiet():
        return int(benchmark.get_benchmark_dict()[suite_name]().n_tasks)
