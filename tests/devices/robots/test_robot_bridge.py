"""The ZeroMQ bridge over loopback (127.0.0.1 only): protocol, reference peer, late replies, dead peers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import zmq

from rdvla.devices.robots.base import (
    RobotConnectionError,
    RobotError,
    RobotLimits,
    RobotState,
    RobotStatus,
    RobotTimeoutError,
)
from rdvla.devices.robots.bridge import BridgePeer, BridgeRobot, LinkState
from rdvla.devices.robots.protocol import (
    HEADER,
    MAGIC,
    Message,
    MessageKind,
    ProtocolError,
    decode,
    pack_action,
    pack_state,
    unpack_action,
    unpack_state,
)
from rdvla.devices.robots.sim import SimRobot
from rdvla.devices.testing import FakeClock, wait_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "tcp://127.0.0.1:*"


# ----- protocol ---------------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    values = np.array([0.01, -0.02, 0.03, 0.1, -0.2, 0.3, -1.0])
    message = decode(Message(MessageKind.ACTION, 42, 12.5, pack_action(values)).encode())
    assert (message.kind, message.seq, message.time_s) == (MessageKind.ACTION, 42, 12.5)
    np.testing.assert_array_equal(unpack_action(message), values)
    state = RobotState(np.arange(8.0), RobotStatus.HOLDING, 3.0, 7)
    back = unpack_state(decode(Message(MessageKind.STATE, 2**40, 3.0, pack_state(state)).encode()))
    np.testing.assert_array_equal(back.proprio, state.proprio)
    assert (back.status, back.actions_applied, back.timestamp_s) == (RobotStatus.HOLDING, 7, 3.0)


@pytest.mark.parametrize(
    "data, error",
    [
        (b"RDVB", "shorter than"),
        (HEADER.pack(b"XXXX", 1, 2, 0, 1, 0.0), "bad magic"),
        (HEADER.pack(MAGIC, 9, 2, 0, 1, 0.0), "protocol version 9"),
        (HEADER.pack(MAGIC, 1, 99, 0, 1, 0.0), "unknown message kind 99"),
        (HEADER.pack(MAGIC, 1, 1, 56, 1, 0.0) + b"\0" * 10, "header says 56"),
        (HEADER.pack(MAGIC, 1, 1, 8, 1, 0.0) + b"\0" * 8, "ACTION: payload of 8 bytes"),
    ],
)
def test_malformed_messages_are_rejected(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(data)


def test_unknown_robot_status_is_rejected() -> None:
    state = RobotState(np.zeros(8), RobotStatus.READY, 0.0, 0)
    payload = bytearray(pack_state(state))
    payload[64] = 77  # status field
    with pytest.raises(ProtocolError, match="unknown robot status 77"):
        unpack_state(Message(MessageKind.STATE, 1, 0.0, bytes(payload)))


# ----- an in-process reference peer --------------------------------------------------------------


class PeerThread:
    def __init__(self, robot: SimRobot, loop_timeout_s: float = 0.5) -> None:
        self.peer = BridgePeer(robot, LOOPBACK, loop_timeout_s=loop_timeout_s)
        self.endpoint = self.peer.bind()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.peer.serve, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.peer.close()


@pytest.fixture
def peer() -> Iterator[PeerThread]:
    served = PeerThread(SimRobot(RobotLimits()))
    yield served
    served.close()


def bridge(endpoint: str, **kwargs: object) -> BridgeRobot:
    options: dict[str, object] = dict(timeout_s=0.5, connect_timeout_s=2.0, heartbeat_interval_s=0.02, peer_timeout_s=0.2)
    options.update(kwargs)
    return BridgeRobot(endpoint, RobotLimits(), **options)  # type: ignore[arg-type]


def test_bridge_reads_and_commands_the_peer_robot(peer: PeerThread) -> None:
    with bridge(peer.endpoint, action_scale=(0.01, 0.1)) as robot:
        start = robot.read_state()
        np.testing.assert_allclose(start.proprio, peer.peer.robot.read_state().proprio)
        moved = robot.send_action(np.array([0.01, 0, 0, 0, 0, 0, -1.0]))  # metres: the scale is the loop's to apply
        assert moved.position[0] == pytest.approx(start.position[0] + 0.01)
        assert moved.actions_applied == 1
        assert robot.hold().status == RobotStatus.HOLDING
        assert robot.stop().status == RobotStatus.STOPPED
        with pytest.raises(RobotError, match="refused ACTION.*stopped"):
            robot.send_action(np.zeros(7))
        assert robot.link_state == LinkState.UP
        assert robot.stats.timeouts == 0


def test_peer_holds_the_robot_when_the_loop_goes_silent() -> None:
    served = PeerThread(SimRobot(RobotLimits()), loop_timeout_s=0.2)
    try:
        robot = bridge(served.endpoint)
        robot.connect()
        assert robot.send_action(np.zeros(7)).status == RobotStatus.READY
        robot.close()  # the loop dies: no actions, no heartbeats
        assert wait_until(lambda: served.peer.robot.read_state().status == RobotStatus.HOLDING, timeout_s=3.0)
    finally:
        served.close()


def test_only_the_newest_waiting_action_is_applied() -> None:
    peer = BridgePeer(SimRobot(RobotLimits()), LOOPBACK)
    sent: list[list[bytes]] = []
    peer._socket.close()
    peer._socket = type("Recorder", (), {"send_multipart": lambda _self, frames: sent.append(frames)})()
    peer.robot.connect()
    backlog = [[b"loop", Message(MessageKind.ACTION, seq, 0.0, pack_action(np.full(7, 0.001))).encode()] for seq in (5, 6, 7)]
    peer._answer(backlog)
    replies = [decode(frames[1]) for frames in sent]
    assert [(r.seq, r.kind) for r in replies] == [(5, MessageKind.ERROR), (6, MessageKind.ERROR), (7, MessageKind.STATE)]
    assert unpack_state(replies[2]).actions_applied == 1
    assert peer.stats.superseded == 2
    peer._context.term()


# ----- late replies and dead peers ---------------------------------------------------------------


class SlowPeer:
    """A hand-written controller (protocol only): answers its first action late, the rest at once."""

    def __init__(self, delay_s: float) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(LOOPBACK)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.robot = SimRobot()
        self.robot.connect()
        self.delay_s = delay_s
        self.late_seq: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.socket.poll(10):
                continue
            identity, data = self.socket.recv_multipart()
            request = decode(data)
            if request.kind == MessageKind.ACTION:
                self.robot.send_action(unpack_action(request))
                if self.late_seq is None:
                    self.late_seq = request.seq
                    time.sleep(self.delay_s)
            reply = Message(MessageKind.STATE, request.seq, time.monotonic(), pack_state(self.robot.read_state()))
            self.socket.send_multipart([identity, reply.encode()])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.socket.close()
        self.context.term()


def test_a_late_reply_is_never_taken_for_the_current_one() -> None:
    slow = SlowPeer(delay_s=0.3)
    try:
        robot = bridge(slow.endpoint, timeout_s=0.2, peer_timeout_s=1.0, heartbeat_interval_s=0.05)
        with robot:
            started = time.monotonic()
            with pytest.raises(RobotTimeoutError, match=r"ACTION #\d+ .* within 200 ms") as timed_out:
                robot.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
            assert time.monotonic() - started < 0.35
            assert f"ACTION #{slow.late_seq} " in str(timed_out.value)
            state = robot.read_state()  # the late reply to the action arrives first and is discarded
            assert state.actions_applied == 1
            stats = robot.stats
            assert (stats.late_replies, stats.timeouts) == (1, 1)
    finally:
        slow.close()


@pytest.mark.timeout(10)
def test_no_peer_at_the_address_fails_connect_clearly() -> None:
    with zmq.Context() as context, context.socket(zmq.ROUTER) as placeholder:
        port = placeholder.bind_to_random_port("tcp://127.0.0.1")
    robot = bridge(f"tcp://127.0.0.1:{port}", connect_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(RobotConnectionError, match="no controller answered at tcp://127.0.0.1"):
        robot.connect()
    assert time.monotonic() - started < 1.5


def test_link_goes_down_on_the_injected_clock() -> None:
    clock = FakeClock()
    served = PeerThread(SimRobot(RobotLimits()))
    robot = bridge(served.endpoint, clock=clock)
    try:
        robot.connect()
        assert robot.link_state == LinkState.UP
        served.close()  # the controller stops answering
        time.sleep(0.1)  # heartbeats already in flight settle
        clock.advance(0.3)  # past peer_timeout_s = 0.2 on the loop's clock
        assert robot.link_state == LinkState.DOWN
        requests = robot.stats.requests
        with pytest.raises(RobotConnectionError, match="link to the controller .* is down"):
            robot.send_action(np.zeros(7))
        assert robot.stats.requests == requests  # refused locally: nothing was sent
    finally:
        robot.close()


def test_link_comes_back_when_the_controller_restarts() -> None:
    first = PeerThread(SimRobot(RobotLimits()))
    endpoint = first.endpoint
    robot = bridge(endpoint, peer_timeout_s=0.2, heartbeat_interval_s=0.02)
    try:
        robot.connect()
        robot.send_action(np.zeros(7))
        first.close()
        assert wait_until(lambda: robot.link_state == LinkState.DOWN)
        with pytest.raises(RobotConnectionError):
            robot.send_action(np.zeros(7))
        restarted = BridgePeer(SimRobot(RobotLimits()), endpoint)
        restarted.bind()
        stop = threading.Event()
        thread = threading.Thread(target=restarted.serve, args=(stop,), daemon=True)
        thread.start()
        try:
            assert wait_until(lambda: robot.link_state == LinkState.UP)
            assert robot.send_action(np.zeros(7)).actions_applied == 1  # a fresh controller
        finally:
            stop.set()
            thread.join(timeout=5)
            restarted.close()
    finally:
        robot.close()


def start_reference_peer(*extra: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bridge_peer.py"), "--address", LOOPBACK, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("bridge peer listening on tcp://127.0.0.1:"), line
    return process, line.split()[-1]


def test_ten_thousand_exchanges_then_a_killed_peer_is_detected() -> None:
    process, endpoint = start_reference_peer()
    peer_timeout = 0.3
    heartbeat = 0.05
    robot = bridge(endpoint, timeout_s=0.5, peer_timeout_s=peer_timeout, heartbeat_interval_s=heartbeat)
    try:
        robot.connect()
        applied = robot.read_state().actions_applied
        step = np.array([1e-6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        round_trips = np.empty(10_000)
        for index in range(10_000):
            started = time.perf_counter()
            state = robot.send_action(step)
            round_trips[index] = time.perf_counter() - started
            # Every action applied exactly once and in order: the controller's counter moves by one.
            assert state.actions_applied == applied + index + 1
        stats = robot.stats
        assert (stats.timeouts, stats.late_replies) == (0, 0)
        print(
            f"\nbridge loopback round trip over 10,000 actions: median {np.median(round_trips) * 1e6:.0f} us, "
            f"p99 {np.percentile(round_trips, 99) * 1e6:.0f} us, max {round_trips.max() * 1e6:.0f} us"
        )

        process.kill()
        process.wait(timeout=5)
        killed = time.monotonic()
        assert wait_until(lambda: robot.link_state == LinkState.DOWN, timeout_s=5.0)
        detected = time.monotonic() - killed
        assert detected <= peer_timeout + heartbeat + 0.25, f"dead peer noticed after {detected:.3f} s"
        with pytest.raises((RobotConnectionError, RobotTimeoutError)):
            robot.send_action(step)
        started = time.monotonic()
        with pytest.raises((RobotConnectionError, RobotTimeoutError)):
            robot.read_state()
        assert time.monotonic() - started <= robot.timeout_s + 0.2
    finally:
        robot.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_reference_peer_reports_bad_setup(tmp_path: Path) -> None:
    bad = tmp_path / "setup.yaml"
    bad.write_text("version: 1\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bridge_peer.py"), "--address", LOOPBACK, "--setup", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: setup.yaml: control_rate_hz: required")
    assert "Traceback" not in result.stderr

