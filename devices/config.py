"""One YAML file describes a robot setup: cameras, robot, control rate, limits (examples/setup.yaml), or a
simulated one: a LIBERO scene whose two cameras and arm stand in for them (examples/libero.yaml).

Everything is checked on load, and every error names the field, e.g.
``setup.yaml: cameras[1].serial: expected a string, got integer 123 (quote serial numbers)``.
Durations are written in milliseconds in the file and held in seconds here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import yaml

from rdvla.devices.cameras.base import ROLE_ORDER, Clock
from rdvla.devices.cameras.multi import MultiCamera
from rdvla.devices.cameras.registry import camera_type, make_camera
from rdvla.devices.robots.base import SCALAR_LIMIT_FIELDS, Robot, RobotLimits
from rdvla.devices.setup_fields import ConfigError, Fields, kind

if TYPE_CHECKING:  # the LIBERO package is imported only for a simulator setup
    from rdvla.devices.libero.scene import InitState

SCHEMA_VERSION = 1
ROBOT_TYPES = ("sim", "bridge")
# observation: in a setup file without them, and for cameras without a setup (recordings replayed on a desk).
DEFAULT_MAX_FRAME_AGE_MS = 100.0
DEFAULT_MAX_SKEW_MS = 35.0


@dataclass(frozen=True)
class RobotConfig:
    type: str  # "sim" or "bridge"
    address: Optional[str]  # bridge: ZeroMQ endpoint of the controller, e.g. tcp://192.168.1.20:5555
    action_scale: tuple[float, float]  # policy units -> (metres, radians)
    timeout_s: float
    connect_timeout_s: float
    heartbeat_interval_s: float
    peer_timeout_s: float


@dataclass(frozen=True)
class SetupConfig:
    cameras: tuple[Any, ...]  # camera configs (see cameras.registry), in policy order: third-person first, then wrist
    robot: RobotConfig
    limits: RobotLimits
    control_rate_hz: float
    max_frame_age_s: float
    max_skew_s: float
    source: Optional[Path]


@dataclass(frozen=True)
class SimulatorSetup:
    """A LIBERO scene as the setup: its cameras and arm, stepped once per action at the suite's 20 Hz."""

    suite: str
    task: int
    init: InitState  # the suite's fixed initial state or a seeded random placement, as `rdvla eval` names them
    render: str  # "default" or "fast"
    source: Optional[Path]


def load_setup(path: str | os.PathLike[str]) -> SetupConfig | SimulatorSetup:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"setup file not found: {source}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source.name}: not UTF-8 text; save the setup file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read setup file {source}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source.name}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    try:
        return parse_setup(data, base_dir=source.parent, source=source)
    except ConfigError as exc:
        raise ConfigError(f"{source.name}: {exc}") from None


def parse_setup(data: Any, *, base_dir: Path = Path("."), source: Optional[Path] = None) -> SetupConfig | SimulatorSetup:
    if isinstance(data, Mapping) and "simulator" in data:
        return _simulator(data, source)
    top = Fields(data, "", ("version", "control_rate_hz", "observation", "cameras", "robot", "limits"))
    _check_version(top)
    rate = top.number("control_rate_hz")
    if rate > 1000:
        raise ConfigError(f"control_rate_hz: at most 1000, got {rate}")
    observation = Fields(top.raw("observation", False) or {}, "observation", ("max_frame_age_ms", "max_skew_ms"))
    cameras = _cameras(top.raw("cameras", True), base_dir)
    return SetupConfig(
        cameras=cameras,
        robot=_robot(top.raw("robot", True)),
        limits=_limits(top.raw("limits", False) or {}),
        control_rate_hz=float(rate),
        max_frame_age_s=observation.number("max_frame_age_ms", DEFAULT_MAX_FRAME_AGE_MS) / 1000.0,
        max_skew_s=observation.number("max_skew_ms", DEFAULT_MAX_SKEW_MS) / 1000.0,
        source=source,
    )


def _check_version(top: Fields) -> None:
    version = top.number("version", integer=True)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"version: this rdvla reads setup version {SCHEMA_VERSION}, the file says {version}")


def _simulator(data: Mapping[str, Any], source: Optional[Path]) -> SimulatorSetup:
    from rdvla.devices.libero.render import RENDER_MODES
    from rdvla.devices.libero.scene import InitState
    from rdvla.devices.libero.suites import SUITES

    top = Fields(data, "", ("version", "simulator"))  # the scene is the cameras, the robot and the rate
    _check_version(top)
    fields = Fields(top.raw("simulator", True), "simulator", ("suite", "task", "init", "render"))
    suite = fields.string("suite", required=True)
    if suite not in SUITES:
        raise ConfigError(f"simulator.suite: expected one of {', '.join(SUITES)}, got {suite!r}")
    render = fields.string("render") or "default"
    if render not in RENDER_MODES:
        raise ConfigError(f"simulator.render: expected one of {', '.join(RENDER_MODES)}, got {render!r}")
    init = fields.string("init") or "fixed:0"
    init_kind, _, index = init.partition(":")
    if init_kind not in ("fixed", "random") or not index.isdigit():
        raise ConfigError(f"simulator.init: expected fixed:INDEX (the suite's initial state) or random:SEED, got {init!r}")
    return SimulatorSetup(suite, fields.number("task", minimum=-1, integer=True), InitState(init_kind, int(index)), render,
                          source)


def _cameras(items: Any, base_dir: Path) -> tuple[Any, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"cameras: expected a non-empty list, got {kind(items)}")
    configs = []
    for index, item in enumerate(items):
        where = f"cameras[{index}]"
        name = item.get("type", "realsense") if isinstance(item, Mapping) else "realsense"
        try:
            camera = camera_type(name)
        except ValueError as exc:
            raise ConfigError(f"{where}.type: {exc}") from None
        fields = Fields(item, where, ("type", "role", *camera.config.SETUP_FIELDS))
        role = fields.string("role", required=True)
        if role not in ROLE_ORDER:
            raise ConfigError(f"{fields.where('role')}: expected one of {', '.join(ROLE_ORDER)}, got {role!r}")
        configs.append(camera.config.from_setup(fields, role, base_dir))
    seen: dict[tuple[str, str], int] = {}
    for index, config in enumerate(configs):
        for key, value in (("role", config.role), ("serial", getattr(config, "serial", None))):
            if value is None:
                continue
            if (key, value) in seen:
                raise ConfigError(f"cameras[{index}].{key}: {value!r} is already used by cameras[{seen[(key, value)]}]")
            seen[(key, value)] = index
    return tuple(sorted(configs, key=lambda c: ROLE_ORDER.index(c.role)))


def _robot(data: Any) -> RobotConfig:
    fields = Fields(
        data,
        "robot",
        ("type", "address", "action_scale", "timeout_ms", "connect_timeout_ms", "heartbeat_ms", "peer_timeout_ms"),
    )
    kind = fields.string("type", required=True)
    if kind not in ROBOT_TYPES:
        raise ConfigError(f"robot.type: expected one of {', '.join(ROBOT_TYPES)}, got {kind!r}")
    address = fields.string("address", required=kind == "bridge")
    if address is not None and not address.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"robot.address: expected a ZeroMQ endpoint like tcp://192.168.1.20:5555, got {address!r}")
    scale = Fields(fields.raw("action_scale", False) or {}, "robot.action_scale", ("translation", "rotation"))
    heartbeat = fields.number("heartbeat_ms", 50.0)
    peer_timeout = fields.number("peer_timeout_ms", 500.0)
    if heartbeat >= peer_timeout:
        raise ConfigError(f"robot.heartbeat_ms: must be shorter than robot.peer_timeout_ms ({peer_timeout:g})")
    return RobotConfig(
        type=kind,
        address=address,
        action_scale=(float(scale.number("translation", 1.0)), float(scale.number("rotation", 1.0))),
        timeout_s=fields.number("timeout_ms", 100.0) / 1000.0,
        connect_timeout_s=fields.number("connect_timeout_ms", 2000.0) / 1000.0,
        heartbeat_interval_s=heartbeat / 1000.0,
        peer_timeout_s=peer_timeout / 1000.0,
    )


def _limits(data: Any) -> RobotLimits:
    names = SCALAR_LIMIT_FIELDS
    fields = Fields(data, "limits", ("workspace_min", "workspace_max", *names))
    defaults = RobotLimits()
    values = {name: float(fields.number(name, getattr(defaults, name))) for name in names}
    low = fields.vector3("workspace_min", defaults.workspace_min)
    high = fields.vector3("workspace_max", defaults.workspace_max)
    for axis, (lo, hi) in enumerate(zip(low, high)):
        if lo >= hi:
            raise ConfigError(f"limits.workspace_min[{axis}]: {lo:g} must be below limits.workspace_max[{axis}] ({hi:g})")
    return RobotLimits(workspace_min=low, workspace_max=high, **values)


def build_cameras(setup: Optional[SetupConfig], configs: Optional[Sequence[Any]] = None, *,
                  clock: Clock = time.monotonic) -> MultiCamera:
    """Cameras, not yet connected, as one observation source: `configs` (default: the setup's cameras; on a desk,
    recordings standing in for them) held to the setup's observation limits, or to the defaults without a setup."""
    if configs is None:
        if setup is None:
            raise ValueError("build_cameras needs a setup or camera configs")
        configs = setup.cameras
    cameras = [make_camera(config, clock=clock) for config in configs]
    if setup is None:
        return MultiCamera(cameras, max_age_s=DEFAULT_MAX_FRAME_AGE_MS / 1000.0, max_skew_s=DEFAULT_MAX_SKEW_MS / 1000.0)
    return MultiCamera(cameras, max_age_s=setup.max_frame_age_s, max_skew_s=setup.max_skew_s)


def build_robot(setup: SetupConfig, *, clock: Clock = time.monotonic) -> Robot:
    """The setup's robot, not yet connected."""
    robot = setup.robot
    if robot.type == "sim":
        from rdvla.devices.robots.sim import SimRobot

        return SimRobot(setup.limits, action_scale=robot.action_scale, clock=clock)
    from rdvla.devices.robots.bridge import BridgeRobot

    assert robot.address is not None
    return BridgeRobot(
        robot.address,
        setup.limits,
        action_scale=robot.action_scale,
        timeout_s=robot.timeout_s,
        connect_timeout_s=robot.connect_timeout_s,
        heartbeat_interval_s=robot.heartbeat_interval_s,
        peer_timeout_s=robot.peer_timeout_s,
        clock=clock,
    )
