"""What a Jetson says about itself: its L4T release and JetPack, its power mode, and whether its clocks are locked.

Everything is read through a `Probe`, as a user without root can: the EMC clock lives in debugfs,
which only root reads, and is then left out of the clock report rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from rdvla.runtime.backends.tensorrt.environment import parse_l4t_release
from rdvla.runtime.doctor.probe import Probe

NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
NVPMODEL_CONF = "/etc/nvpmodel.conf"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"

# The first L4T release of each JetPack, from NVIDIA's JetPack archive (developer.nvidia.com/embedded/
# jetpack-archive: JetPack 6.0 = L4T 36.3, 6.1 = 36.4, 6.2 = 36.4.3, 6.2.1 = 36.4.4; .../jetpack/downloads/
# archive-7.0 and archive-7.1: JetPack 7.0 = 38.2, 7.1 = 38.4) and the Jetson Linux archive
# (docs.nvidia.com/jetson/archives: R36.2 is a developer preview). Releases before R36 are named by major only.
JETPACK_RELEASES: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((32, 0, 0), "4.x"),
    ((34, 0, 0), "5.x"),
    ((36, 2, 0), "6.0 DP"),
    ((36, 3, 0), "6.0"),
    ((36, 4, 0), "6.1"),
    ((36, 4, 3), "6.2"),
    ((36, 4, 4), "6.2.1"),
    ((38, 2, 0), "7.0"),
    ((38, 4, 0), "7.1"),
)
# JetPack 6.1: the first JetPack with TensorRT 10 (10.3), which reads the bundle's opset-18 graphs.
MIN_L4T = (36, 4, 0)

# The GPU's devfreq device, found by its device-tree node name as jetson-stats does (rbonghi/jetson_stats,
# jtop/core/gpu.py, find_igpu: "ga10b" on L4T R35, "gpu" on R36, e.g. /sys/class/devfreq/17000000.gpu).
GPU_DEVFREQ_NAMES = "/sys/class/devfreq/*/device/of_node/name"
GPU_NODE_NAMES = ("ga10b", "gpu")
# One cpufreq policy per CPU cluster; cpuN/cpufreq are links to these (Linux, Documentation/admin-guide/pm/cpufreq.rst).
CPUFREQ_POLICIES = "/sys/devices/system/cpu/cpufreq/policy*"
# The memory clock, in the BPMP's debugfs (root only), where jetson_clocks sets it.
EMC_CLOCK = "/sys/kernel/debug/bpmp/debug/clk/emc"


def parse_release(release: str) -> Optional[tuple[int, int, int]]:
    """'R36.4.3' -> (36, 4, 3); 'R36.4' -> (36, 4, 0)."""
    match = re.fullmatch(r"R(\d+)\.(\d+)(?:\.(\d+))?", release)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def jetpack_of(release: tuple[int, int, int]) -> Optional[str]:
    """The JetPack an L4T release belongs to ('6.2'), 'x.y or a later update' past the table, None before it."""
    known = [(first, name) for first, name in JETPACK_RELEASES if first <= release]
    if not known:
        return None
    first, name = known[-1]
    if first == release or name.endswith(".x"):
        return name
    return f"{name} or a later update"


@dataclass(frozen=True)
class PowerMode:
    id: int
    name: str

    @property
    def is_max(self) -> bool:
        # MAXN, and MAXN_SUPER on the Orin Nano/NX of JetPack 6.2: no power cap on the clocks.
        return self.name.upper().startswith("MAXN")


def parse_nvpmodel_query(stdout: str) -> Optional[PowerMode]:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' and the mode's number on the next line."""
    match = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", stdout)
    return PowerMode(int(match.group(2)), match.group(1)) if match else None


def parse_power_modes(conf: str) -> list[PowerMode]:
    """The modes of /etc/nvpmodel.conf ('< POWER_MODEL ID=0 NAME=MAXN >'), in file order."""
    return [PowerMode(int(m.group(1)), m.group(2)) for m in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)]


def read_power_mode(probe: Probe) -> Optional[PowerMode]:
    """The current power mode: from `nvpmodel -q`, else from nvpmodel's status file and its configuration."""
    query = probe.run(["nvpmodel", "-q"])
    if query is not None and query.returncode == 0:
        mode = parse_nvpmodel_query(query.stdout)
        if mode is not None:
            return mode
    status = re.search(r"pmode:(\d+)", probe.read_text(NVPMODEL_STATUS) or "")  # 'pmode:0002 fmode:...'
    if status is None:
        return None
    names = {m.id: m.name for m in parse_power_modes(probe.read_text(NVPMODEL_CONF) or "")}
    number = int(status.group(1))
    return PowerMode(number, names.get(number, f"mode {number}"))


@dataclass(frozen=True)
class Clock:
    """One clock domain, in Hz. `floor` is the lowest frequency its governor may choose (None: unreadable)."""

    name: str
    current: int
    floor: Optional[int]
    ceiling: int  # the highest the power mode allows

    @property
    def locked(self) -> bool:
        # jetson_clocks raises each floor to its ceiling (cpufreq scaling_min_freq, devfreq min_freq), as
        # jetson-stats checks (rbonghi/jetson_stats, jtop/core/jetson_clocks.py, jetson_clocks_alive); the
        # current frequency alone cannot tell, since an unlocked clock under load also runs at its ceiling.
        # The EMC shows no floor: there its current rate must be the ceiling.
        return (self.floor if self.floor is not None else self.current) >= self.ceiling

    def describe(self) -> str:
        if self.locked:
            return f"{self.name} {_mhz(self.ceiling)} MHz"
        if self.floor is None:
            return f"{self.name} {_mhz(self.current)} of {_mhz(self.ceiling)} MHz"
        return f"{self.name} {_mhz(self.floor)}-{_mhz(self.ceiling)} MHz (now {_mhz(self.current)})"


def _mhz(hz: int) -> str:
    return f"{hz / 1e6:.0f}"


def _read_int(probe: Probe, path: str) -> Optional[int]:
    text = probe.read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _read_clock(probe: Probe, name: str, base: str, files: tuple[str, Optional[str], str], scale: int = 1) -> Optional[Clock]:
    current, floor, ceiling = (_read_int(probe, f"{base}/{f}") if f else None for f in files)
    if current is None or ceiling is None:
        return None
    return Clock(name, current * scale, floor * scale if floor is not None else None, ceiling * scale)


def measurement_conditions(probe: Probe) -> Optional[dict[str, Any]]:
    """What a benchmark on this Jetson ran under (L4T release, power mode, clocks), for its report; None off Jetson."""
    release = probe.read_text(NV_TEGRA_RELEASE)
    if release is None:
        return None
    mode = read_power_mode(probe)
    return {"l4t_release": parse_l4t_release(release), "power_mode": mode.name if mode is not None else None,
            "clocks": [clock.describe() for clock in read_clocks(probe)]}


def read_clocks(probe: Probe) -> list[Clock]:
    """The CPU clusters', the GPU's and (as root) the EMC's clocks; those that cannot be read are left out."""
    clocks = []
    for index, policy in enumerate(probe.glob(CPUFREQ_POLICIES)):  # kHz
        files = ("scaling_cur_freq", "scaling_min_freq", "scaling_max_freq")
        clocks.append(_read_clock(probe, f"CPU cluster {index}", policy, files, scale=1000))
    for node in probe.glob(GPU_DEVFREQ_NAMES):  # Hz
        if (probe.read_text(node) or "").strip("\x00\n ") in GPU_NODE_NAMES:
            clocks.append(_read_clock(probe, "GPU", node.rsplit("/device/", 1)[0], ("cur_freq", "min_freq", "max_freq")))
    clocks.append(_read_clock(probe, "EMC", EMC_CLOCK, ("rate", None, "max_rate")))  # Hz
    return [clock for clock in clocks if clock is not None]
