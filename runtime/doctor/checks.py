"""The checks of `rdvla doctor`: one function per check, each returning one-line findings.

A finding names what was found and, unless it is OK, the fix. FAIL means `rdvla run` on TensorRT
would stop; WARN that it runs, but slower or less reliably than it could; SKIP that the check does
not apply here (not a Jetson) or needs something another line already reports missing.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar

from rdvla.devices.cameras.realsense.sdk import RealSenseUnavailableError
from rdvla.devices.cameras.realsense import CameraInfo
from rdvla.devices.cameras.realsense.config import NO_CAMERA_ADVICE
from rdvla.devices.cameras.realsense.sdk import one_line
from rdvla.runtime.backends.tensorrt.build_memory import MEMINFO, Fit, Memory, build_footprint, describe, fit, parse_meminfo, ways_out
from rdvla.runtime.backends.tensorrt.builder import graph_sources
from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaRuntime
from rdvla.runtime.backends.tensorrt.environment import (
    EngineEnvironment,
    check_engine_compat,
    check_engine_sources,
    check_tensorrt_version,
    engine_section,
    parse_l4t_release,
    query_environment,
)
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError
from rdvla.runtime.doctor import jetson
from rdvla.runtime.doctor.probe import Probe

T = TypeVar("T")
log = logging.getLogger(__name__)

LOW_DISK_BYTES = 2 * 1024**3  # an engine build writes about the graphs' size; `rdvla run --record` writes episodes
LOW_MEMORY_FRACTION = 0.1  # of the total: below it, other programs hold what the engines and the loop need
NO_JETSON = "not a Jetson"


class Status(str, enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str  # one line: what was found and, unless OK, the fix

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.check:<11}  {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status.value, "message": self.message}


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What the probe answered, or the exception it raised instead."""

    value: Optional[T] = None
    exception: Optional[Exception] = None

    @property
    def error(self) -> str:
        return one_line(self.exception) if self.exception is not None else ""


def _ask(question: Callable[[], T]) -> Answer[T]:
    # A library failing in any way is reported on its line, never as a traceback.
    try:
        return Answer(question())
    except Exception as exc:
        return Answer(exception=exc)


class Machine:
    """What the checks look at: the probe, the bundle if one is named, and the facts several checks share,
    each asked of the probe once."""

    def __init__(self, probe: Probe, bundle: Optional[Path] = None) -> None:
        self.probe = probe
        self.bundle = bundle

    @cached_property
    def release_text(self) -> Optional[str]:
        return self.probe.read_text(jetson.NV_TEGRA_RELEASE)

    @property
    def is_jetson(self) -> bool:
        return self.release_text is not None

    @cached_property
    def tensorrt(self) -> Answer[str]:
        return _ask(self.probe.tensorrt_version)

    @cached_property
    def cuda(self) -> Answer[CudaRuntime]:
        return _ask(self.probe.cuda_runtime)

    @cached_property
    def cuda_versions(self) -> Answer[tuple[str, str]]:
        """CUDA's runtime and driver versions: cuda-python reaches the driver."""
        cuda = self.cuda.value
        if cuda is None:
            return Answer(exception=self.cuda.exception)
        return _ask(lambda: (cuda.runtime_version(), cuda.driver_version()))

    @cached_property
    def gpu(self) -> Answer[EngineEnvironment]:
        """This GPU, described as the TensorRT backend describes it before loading engines."""
        cuda = self.cuda.value
        if cuda is None or self.cuda_versions.value is None:
            return Answer(exception=self.cuda_versions.exception)
        return _ask(lambda: query_environment(self.tensorrt.value or "", cuda))

    @cached_property
    def memory(self) -> Optional[Memory]:
        return parse_meminfo(self.probe.read_text(str(MEMINFO)) or "")


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_jetpack(machine: Machine) -> list[Finding]:
    if machine.release_text is None:
        return [Finding("jetpack", Status.SKIP,
                        f"{NO_JETSON} (no {jetson.NV_TEGRA_RELEASE}): the JetPack, power mode and clock checks do not apply")]
    release = parse_l4t_release(machine.release_text)
    version = jetson.parse_release(release) if release else None
    if release is None or version is None:
        first = machine.release_text.strip().splitlines()[0] if machine.release_text.strip() else "empty"
        return [Finding("jetpack", Status.WARN,
                        f"{jetson.NV_TEGRA_RELEASE} names no L4T release ({first!r}): cannot tell the JetPack")]
    jetpack = jetson.jetpack_of(version)
    named = f"JetPack {jetpack}" if jetpack else "a release older than JetPack 4"
    if version < jetson.MIN_L4T:
        return [Finding("jetpack", Status.FAIL, f"L4T {release} is {named}, whose TensorRT is older than 10: rdvla needs "
                        "JetPack 6.1 or newer (L4T R36.4+); flash it with NVIDIA SDK Manager")]
    return [Finding("jetpack", Status.OK, f"L4T {release} ({named})")]


def check_tensorrt(machine: Machine) -> list[Finding]:
    version = machine.tensorrt.value
    if version is None:
        return [Finding("tensorrt", Status.FAIL, machine.tensorrt.error)]
    supported = _ask(lambda: check_tensorrt_version(version))  # the runtime's own rule: TensorRT 10 or newer
    if supported.exception is not None:
        return [Finding("tensorrt", Status.FAIL, supported.error)]
    return [Finding("tensorrt", Status.OK, f"TensorRT {version}")]


def check_numpy(machine: Machine) -> list[Finding]:
    """NumPy 2 beside JetPack's TensorRT: JetPack 6 builds TensorRT's Python bindings for its own NumPy 1.x, with a
    pybind11 older than 2.12 (the first NumPy-2-safe one), and no board has yet shown they work with NumPy 2."""
    numpy = _ask(lambda: machine.probe.import_module("numpy"))
    if numpy.value is None:
        return [Finding("numpy", Status.FAIL, f"cannot import numpy ({numpy.error}): reinstall rdvla (scripts/setup_jetson.sh)")]
    version = str(getattr(numpy.value, "__version__", "unknown"))
    tensorrt = machine.tensorrt.value
    if machine.is_jetson and tensorrt is not None and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 2:
        return [Finding("numpy", Status.WARN, f"numpy {version} beside JetPack's TensorRT {tensorrt}, whose Python bindings are "
                        "built for NumPy 1 and not known to work with NumPy 2: `pip install -c scripts/jetson-constraints.txt "
                        "'numpy<2'` in .venv (scripts/setup_jetson.sh keeps every pip call to that file)")]
    return [Finding("numpy", Status.OK, f"numpy {version}")]


def check_cuda(machine: Machine) -> list[Finding]:
    cuda = machine.cuda.value
    if cuda is None:  # cuda-python missing: the runtime's message says how to install it
        return [Finding("cuda", Status.FAIL, machine.cuda.error)]
    versions = machine.cuda_versions
    if versions.value is None:
        return [Finding("cuda", Status.FAIL, f"cuda-python cannot reach the CUDA driver ({versions.error}): check that the GPU "
                        "driver is loaded and that this user may use the GPU (on a Jetson: the video and render groups)")]
    runtime, driver = versions.value
    return [Finding("cuda", Status.OK, f"CUDA runtime {runtime} (cuda-python), driver {driver}")]


def check_gpu(machine: Machine) -> list[Finding]:
    gpu = machine.gpu.value
    if gpu is None:
        if machine.cuda_versions.value is None:
            return [Finding("gpu", Status.SKIP, "needs cuda-python and a CUDA driver (see the cuda line)")]
        return [Finding("gpu", Status.FAIL, f"cannot query GPU 0 ({machine.gpu.error})")]
    return [Finding("gpu", Status.OK, f"{gpu.gpu_name}, SM {gpu.compute_capability}, {gpu.sm_count} SMs")]


def check_power(machine: Machine) -> list[Finding]:
    if not machine.is_jetson:
        return [Finding("power", Status.SKIP, NO_JETSON)]
    mode = jetson.read_power_mode(machine.probe)
    if mode is None:
        return [Finding("power", Status.WARN, f"cannot read the power mode (`nvpmodel -q` failed, {jetson.NVPMODEL_STATUS} "
                        "unreadable): check that nvpmodel is installed (nvidia-l4t-nvpmodel)")]
    if mode.is_max:
        return [Finding("power", Status.OK, f"power mode {mode.name} (nvpmodel {mode.id})")]
    fastest = next((m for m in jetson.parse_power_modes(machine.probe.read_text(jetson.NVPMODEL_CONF) or "") if m.is_max), None)
    fix = f"sudo nvpmodel -m {fastest.id}` ({fastest.name})" if fastest else "sudo nvpmodel -m 0`"
    return [Finding("power", Status.WARN, f"power mode {mode.name} (nvpmodel {mode.id}) caps the clocks and so slows every query: "
                    f"for the lowest latency run `{fix}, then `sudo jetson_clocks`")]


def check_clocks(machine: Machine) -> list[Finding]:
    if not machine.is_jetson:
        return [Finding("clocks", Status.SKIP, NO_JETSON)]
    clocks = jetson.read_clocks(machine.probe)
    if not any(clock.name != "EMC" for clock in clocks):
        return [Finding("clocks", Status.WARN, "cannot read the CPU and GPU clocks from sysfs (cpufreq, devfreq)")]
    note = "" if any(clock.name == "EMC" for clock in clocks) else "; the EMC clock is readable by root only"
    unlocked = [clock for clock in clocks if not clock.locked]
    if unlocked:
        return [Finding("clocks", Status.WARN, f"not locked: {', '.join(c.describe() for c in unlocked)}: latency varies with load; "
                        f"run `sudo jetson_clocks` (after choosing the power mode){note}")]
    return [Finding("clocks", Status.OK, f"locked (jetson_clocks): {', '.join(c.describe() for c in clocks)}{note}")]


def check_memory(machine: Machine) -> list[Finding]:
    memory = machine.memory
    if memory is None:
        return [Finding("memory", Status.SKIP, "cannot read /proc/meminfo")]
    shared = " (the GPU shares it)" if machine.is_jetson else ""
    text = f"{_gb(memory.available)} available of {_gb(memory.total)}{shared}"
    if memory.available < LOW_MEMORY_FRACTION * memory.total:
        return [Finding("memory", Status.WARN, f"only {text}: close other programs before loading engines")]
    return [Finding("memory", Status.OK, text)]


def check_disk(machine: Machine) -> list[Finding]:
    where = machine.bundle if machine.bundle is not None and machine.bundle.is_dir() else Path.cwd()
    usage = _ask(lambda: machine.probe.disk_usage(str(where)))
    if usage.value is None:
        return [Finding("disk", Status.WARN, f"cannot read the free space at {where} ({usage.error})")]
    text = f"{_gb(usage.value.free)} free of {_gb(usage.value.total)} at {where}"
    if usage.value.free < LOW_DISK_BYTES:
        return [Finding("disk", Status.WARN, f"only {text}: `rdvla build` writes engines about the size of the graphs and "
                        "`rdvla run --record` writes episodes; free some space")]
    return [Finding("disk", Status.OK, text)]


def _camera(camera: CameraInfo) -> Finding:
    text = f"{camera.name} {camera.serial}, firmware {camera.firmware}, USB {camera.usb_type}"
    if camera.usb_type.startswith("2"):
        # On USB 2 a D400 offers far fewer stream profiles (librealsense, doc/RaspberryPi3.md: "capabilities are
        # severely reduced when connected to USB2"), and the profiles it lacks are simply not offered.
        return Finding("camera", Status.WARN, f"{text}: on USB 2 the camera offers only reduced resolutions and frame "
                       "rates; plug it into a USB 3 port with a USB 3 cable")
    return Finding("camera", Status.OK, text)


def check_realsense(machine: Machine) -> list[Finding]:
    found = _ask(machine.probe.realsense)
    if found.value is None:
        if isinstance(found.exception, RealSenseUnavailableError):
            return [Finding("realsense", Status.WARN, f"{found.error}: `rdvla run` cannot open RealSense cameras")]
        return [Finding("realsense", Status.WARN, f"pyrealsense2 cannot list the cameras ({found.error}): check the udev rules "
                        "(99-realsense-libusb.rules) and that no other program holds a camera")]
    version, cameras = found.value
    if not cameras:
        return [Finding("realsense", Status.WARN, f"pyrealsense2 {version}: no RealSense camera connected: {NO_CAMERA_ADVICE}")]
    findings = [Finding("realsense", Status.OK, f"pyrealsense2 {version}, {len(cameras)} camera(s)")]
    if machine.is_jetson and len(cameras) > 1:
        # librealsense's maintainers: RSUSB suits one camera; for several, the kernel (V4L2) backend with the
        # L4T patch script (librealsense issue 14925).
        findings.append(Finding("multicam", Status.WARN, f"{len(cameras)} cameras: librealsense's RSUSB backend (what "
                                "scripts/setup_jetson.sh builds) is meant for one camera, and frames may drop with more; for "
                                "several, build it with the kernel backend and the L4T patch script (docs/jetson.md, "
                                "'Two cameras'), or ignore this if yours already is"))
    return findings + [_camera(c) for c in cameras]


def check_native(machine: Machine) -> list[Finding]:
    native = _ask(lambda: machine.probe.import_module("rdvla._native"))
    if native.value is None:
        return [Finding("native", Status.WARN, f"rdvla._native is not built ({native.error}): numpy preprocessing fallback, slower; "
                        "reinstall rdvla with a C++ compiler, CMake and libjpeg-turbo's headers (scripts/setup_jetson.sh)")]
    return [Finding("native", Status.OK, "rdvla._native: native preprocessing")]


def check_bundle(machine: Machine) -> list[Finding]:
    """The bundle opens (every file's SHA-256), and each precision's engines fit this GPU and this TensorRT."""
    root = machine.bundle
    if root is None:
        return []
    try:
        bundle = Bundle.open(root)
    except (ValueError, OSError) as exc:
        return [Finding("bundle", Status.FAIL, one_line(exc))]
    engines = bundle.manifest.engines
    findings = [Finding("bundle", Status.OK, f"{root}: opens, {len(bundle.manifest.files)} files match their SHA-256")]
    buildable = ["fp16", "int8"] if bundle.manifest.calibrated.get("int8") else ["fp16"]
    findings += [_build(machine, bundle, precision) for precision in buildable]
    if not engines:
        hint = f"no TensorRT engines yet: run `rdvla build {root} --precision fp16` on this device"
        return findings + [Finding("engines", Status.WARN, hint)]
    return findings + [_engines(machine, bundle, precision) for precision in sorted(engines)]


def _build(machine: Machine, bundle: Bundle, precision: str) -> Finding:
    """Whether `rdvla build` at `precision` fits in this machine's memory, by the builder's own estimate."""
    memory = machine.memory
    if memory is None:
        return Finding("build", Status.SKIP, f"{precision}: cannot read /proc/meminfo to tell whether `rdvla build` fits")
    footprint = build_footprint(bundle.root, graph_sources(bundle, precision), precision, None)
    verdict = fit(footprint, memory)
    text = describe(footprint, memory)
    if verdict is Fit.FITS:
        return Finding("build", Status.OK, text)
    outcome = "will swap and take much longer" if verdict is Fit.SWAPS else "would be ended by the kernel for lack of memory"
    return Finding("build", Status.WARN, f"{text}: `rdvla build --precision {precision}` {outcome}; "
                   f"{ways_out(footprint, bundle.root, verdict)}")


def _engines(machine: Machine, bundle: Bundle, precision: str) -> Finding:
    try:
        section = engine_section(bundle.manifest, precision, bundle.root)
        built = section.environment
    except BundleError as exc:
        return Finding("engines", Status.FAIL, one_line(exc))
    target = f"TensorRT {built.tensorrt_version}, {built.gpu_name} SM {built.compute_capability} with {built.sm_count} SMs"
    if machine.tensorrt.value is None or machine.gpu.value is None:
        return Finding("engines", Status.SKIP, f"{precision}: built for {target}; cannot compare with this device without "
                       "TensorRT and cuda-python (see above)")
    try:
        check_engine_compat(built, machine.gpu.value, precision, bundle.root)
        check_engine_sources(section, bundle.manifest, precision, bundle.root)
    except BundleError as exc:
        return Finding("engines", Status.FAIL, one_line(exc))
    size = sum(record.bytes for record in section.graphs.values())
    memory = machine.memory
    if memory is not None and size > memory.available:
        return Finding("engines", Status.WARN, f"{precision}: built here, but its {_gb(size)} of engines exceed the "
                       f"{_gb(memory.available)} available: close other programs, or run a smaller precision")
    count = len(section.graphs)
    return Finding("engines", Status.OK, f"{precision}: {count} engines ({_gb(size)}) built for this device ({target})")


CHECKS: tuple[Callable[[Machine], list[Finding]], ...] = (
    check_jetpack,
    check_tensorrt,
    check_numpy,
    check_cuda,
    check_gpu,
    check_power,
    check_clocks,
    check_memory,
    check_disk,
    check_realsense,
    check_native,
    check_bundle,
)


def _run_check(check: Callable[[Machine], list[Finding]], machine: Machine) -> list[Finding]:
    try:
        return check(machine)
    except Exception as exc:  # a library answering in a way no check expects: one line, never a traceback
        log.debug("%s raised", check.__name__, exc_info=True)
        name = check.__name__.removeprefix("check_").replace("_", "-")
        why = f"{type(exc).__name__}: {one_line(exc)}"
        return [Finding(name, Status.WARN, f"the check itself failed ({why}); `rdvla -v doctor` shows where")]


def diagnose(probe: Probe, bundle: Optional[Path] = None) -> list[Finding]:
    """Every check, in order; the bundle's only when one is named."""
    machine = Machine(probe, bundle)
    return [finding for check in CHECKS for finding in _run_check(check, machine)]


def summary(findings: list[Finding]) -> Finding:
    """The closing line: FAIL when `rdvla run` would stop, WARN when it would run below its best."""
    failed = [f.check for f in findings if f.status is Status.FAIL]
    warned = [f.check for f in findings if f.status is Status.WARN]
    if failed:
        return Finding("summary", Status.FAIL, f"`rdvla run` on TensorRT would stop: fix {', '.join(dict.fromkeys(failed))} first"
                       + (f" (warnings: {', '.join(dict.fromkeys(warned))})" if warned else ""))
    if warned:
        return Finding("summary", Status.WARN, f"ready, with warnings: {', '.join(dict.fromkeys(warned))}")
    return Finding("summary", Status.OK, "ready")
