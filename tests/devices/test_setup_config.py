"""The setup file: the example loads, and every mistake is reported with the field's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rdvla.devices.cameras.multi import MultiCamera
from rdvla.devices.libero.scene import InitState
from rdvla.devices.config import ConfigError, SimulatorSetup, build_cameras, build_robot, load_setup, parse_setup
from rdvla.devices.robots.bridge import BridgeRobot
from rdvla.devices.robots.sim import SimRobot

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "setup.yaml"


def minimal() -> dict[str, Any]:
    return {
        "version": 1,
        "control_rate_hz": 10,
        "cameras": [{"role": "third_person", "serial": "111"}, {"role": "wrist", "serial": "222"}],
        "robot": {"type": "sim"},
    }


def test_example_setup_loads() -> None:
    setup = load_setup(EXAMPLE)
    assert [c.role for c in setup.cameras] == ["third_person", "wrist"]
    assert all(isinstance(c.serial, str) and c.serial for c in setup.cameras)
    assert setup.cameras[1].exposure == 156
    assert setup.robot.type == "bridge" and setup.robot.address == "tcp://192.168.1.20:5555"
    assert setup.robot.action_scale == (0.05, 0.5)
    assert setup.robot.timeout_s == pytest.approx(0.05)
    assert setup.control_rate_hz == 10
    assert setup.max_frame_age_s == pytest.approx(0.1) and setup.max_skew_s == pytest.approx(0.035)
    assert setup.limits.workspace_min == (0.25, -0.35, 0.02)
    assert setup.limits.max_translation_m == pytest.approx(0.02)
    robot = build_robot(setup)
    assert isinstance(robot, BridgeRobot) and robot.peer_timeout_s == pytest.approx(0.3)
    cameras = build_cameras(setup)  # built, not connected: no camera needed
    assert isinstance(cameras, MultiCamera) and cameras.roles == ("third_person", "wrist")


def test_defaults_and_policy_order() -> None:
    data = minimal()
    data["cameras"].reverse()  # wrist written first: the policy still gets third-person first
    setup = parse_setup(data)
    assert [c.role for c in setup.cameras] == ["third_person", "wrist"]
    assert setup.cameras[0].width is None and setup.cameras[0].depth is False
    assert setup.max_frame_age_s == pytest.approx(0.1)
    assert isinstance(build_robot(setup), SimRobot)


def test_recording_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    data = minimal()
    data["cameras"][0] = {"role": "third_person", "recording": "episodes/a.db3", "real_time": False}
    (tmp_path / "setup.yaml").write_text(yaml.safe_dump(data))
    setup = load_setup(tmp_path / "setup.yaml")
    assert setup.cameras[0].recording == str(tmp_path / "episodes" / "a.db3")
    assert setup.cameras[0].real_time is False and setup.cameras[0].serial is None


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = minimal()
    keys = path.replace("]", "").replace("[", ".").split(".")
    target: Any = data
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    last = keys[-1]
    if value is DELETE:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("cameras[1].serial", 123456789012, "cameras[1].serial: expected a string, got integer 123456789012 (quote serial"),
        ("cameras[0].role", "left", "cameras[0].role: expected one of third_person, wrist, got 'left'"),
        ("cameras[1].role", "third_person", "cameras[1].role: 'third_person' is already used by cameras[0]"),
        ("cameras[1].serial", "111", "cameras[1].serial: '111' is already used by cameras[0]"),
        ("cameras[0].fsp", 30, "cameras[0].fsp: unknown field"),
        ("cameras[0].fps", 0, "cameras[0].fps: must be greater than 0"),
        ("cameras[0].fps", 29.97, "cameras[0].fps: expected an integer"),
        ("cameras[0].width", 640, "cameras[0].height: give width and height together"),
        ("cameras[0].depth", "yes", "cameras[0].depth: expected true or false"),
        ("cameras[0].recording", "a.db3", "cameras[0]: give exactly one of serial"),
        ("cameras[0].real_time", False, "cameras[0].real_time: only applies to a recording"),
        ("cameras", [], "cameras: expected a non-empty list"),
        ("robot", DELETE, "robot: required"),
        ("robot.type", "ur5", "robot.type: expected one of sim, bridge"),
        ("robot.type", "bridge", "robot.address: required"),
        ("robot.address", "192.168.1.20:5555", "robot.address: expected a ZeroMQ endpoint"),
        ("robot.heartbeat_ms", 600, "robot.heartbeat_ms: must be shorter than robot.peer_timeout_ms"),
        ("robot.action_scale.translation", -1, "robot.action_scale.translation: must be greater than 0"),
        ("limits.workspace_min", [0, 0], "limits.workspace_min: expected a list of 3 numbers"),
        ("limits.workspace_max", [1, "a", 1], "limits.workspace_max[1]: expected a number"),
        ("limits.workspace_max", [1, 1, -1], "limits.workspace_min[2]: 0 must be below limits.workspace_max[2] (-1)"),
        ("limits.max_rotation_rad", True, "limits.max_rotation_rad: expected a number, got boolean"),
        ("control_rate_hz", DELETE, "control_rate_hz: required"),
        ("control_rate_hz", 5000, "control_rate_hz: at most 1000"),
        ("observation.max_skew_ms", -5, "observation.max_skew_ms: must be greater than 0"),
        ("version", 2, "version: this rdvla reads setup version 1"),
        ("extra", 1, "extra: unknown field"),
    ],
)
def test_errors_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_setup(mutate(path, value))
    assert message in str(error.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="setup file not found"):
        load_setup(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\ncameras: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line"):
        load_setup(broken)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the file: expected a mapping"):
        load_setup(not_mapping)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(mutate("cameras[1].serial", 42)))
    with pytest.raises(ConfigError, match=r"^wrong.yaml: cameras\[1\].serial: expected a string"):
        load_setup(wrong)


SIMULATOR_EXAMPLE = EXAMPLE.with_name("libero.yaml")


def test_simulator_example_loads() -> None:
    setup = load_setup(SIMULATOR_EXAMPLE)
    assert setup == SimulatorSetup("libero_spatial", 0, InitState("fixed", 0), "fast", SIMULATOR_EXAMPLE)


@pytest.mark.parametrize(
    "simulator, message",
    [
        ({"suite": "libero_100", "task": 0}, "simulator.suite: expected one of libero_spatial,"),
        ({"task": 0}, "simulator.suite: required"),
        ({"suite": "libero_goal"}, "simulator.task: required"),
        ({"suite": "libero_goal", "task": -1}, "simulator.task: must be greater than -1"),
        ({"suite": "libero_goal", "task": 1.5}, "simulator.task: expected an integer"),
        ({"suite": "libero_goal", "task": 0, "init": "fixed:-1"}, "simulator.init: expected fixed:INDEX"),
        ({"suite": "libero_goal", "task": 0, "init": "3"}, "simulator.init: expected fixed:INDEX"),
        ({"suite": "libero_goal", "task": 0, "render": "pretty"}, "simulator.render: expected one of default, fast"),
        ({"suite": "libero_goal", "task": 0, "seed": 3}, "simulator.seed: unknown field"),
    ],
)
def test_simulator_errors_name_the_field(simulator: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_setup({"version": 1, "simulator": simulator})
    assert str(error.value).startswith(message), str(error.value)


def test_a_simulator_is_the_cameras_and_the_robot() -> None:
    with pytest.raises(ConfigError, match=r"^control_rate_hz: unknown field \(known: version, simulator\)"):
        parse_setup({**minimal(), "simulator": {"suite": "libero_goal", "task": 0}})
    setup = parse_setup({"version": 1, "simulator": {"suite": "libero_goal", "task": 3, "init": "random:17"}})
    assert setup == SimulatorSetup("libero_goal", 3, InitState("random", 17), "default", None)
