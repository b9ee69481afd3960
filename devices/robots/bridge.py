"""A real arm behind a controller process (ROS 2 node, vendor SDK), reached over ZeroMQ.

The loop side (BridgeRobot, a DEALER socket) sends one request per call and waits for the reply
carrying the same sequence number; replies to earlier, timed-out requests are recognised by their
number and discarded, so a late reply is never mistaken for the current one. A second socket,
driven by a heartbeat thread, keeps asking the controller for its state; when nothing has been
heard for ``peer_timeout_s`` the link is DOWN and actions are refused until it comes back.

The controller side (BridgePeer, a ROUTER socket) wraps any Robot; scripts/bridge_peer.py runs it
around a SimRobot as the reference implementation of the protocol in devices.robots.protocol. It
holds the robot when the loop goes silent, and of several actions waiting at once it applies only
the newest: a backlog of stale actions is never replayed.

Timing: the injectable ``clock`` decides link freshness (UP/DOWN) and stamps messages; blocking
waits (a request's timeout, the heartbeat period) are real-time waits.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import zmq

from rdvla.devices.robots.base import (
    Clock,
    Robot,
    RobotConnectionError,
    RobotError,
    RobotLimits,
    RobotState,
    RobotStatus,
    RobotTimeoutError,
    limit_action,
)
from rdvla.devices.robots.protocol import (
    Message,
    MessageKind,
    ProtocolError,
    decode,
    error_reply,
    error_text,
    pack_action,
    pack_state,
    unpack_action,
    unpack_state,
)

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class BridgeStats:
    requests: int
    timeouts: int
    late_replies: int  # replies that arrived after their request had timed out (discarded)
    last_round_trip_s: Optional[float]


def _dealer(context: zmq.Context, address: str) -> zmq.Socket:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)  # closing never waits on a dead controller
    socket.setsockopt(zmq.IMMEDIATE, 1)  # no queueing of requests while there is no connection
    socket.connect(address)
    return socket


class BridgeRobot(Robot):
    """The control loop's handle on a robot run by an external controller process."""

    def __init__(
        self,
        address: str,
        limits: RobotLimits = RobotLimits(),
        *,
        action_scale: tuple[float, float] = (1.0, 1.0),
        timeout_s: float = 0.1,
        connect_timeout_s: float = 2.0,
        heartbeat_interval_s: float = 0.05,
        peer_timeout_s: float = 0.5,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(limits, action_scale)
        if not 0 < heartbeat_interval_s < peer_timeout_s:
            raise ValueError("heartbeat_interval_s must be positive and shorter than peer_timeout_s")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.address = address
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.peer_timeout_s = peer_timeout_s
        self.clock = clock
        self._context: Optional[zmq.Context] = None
        self._socket: Optional[zmq.Socket] = None
        self._heartbeat: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seq = 0
        self._last_contact: Optional[float] = None
        self._requests = self._timeouts = self._late = 0
        self._last_rtt: Optional[float] = None

    # ----- link ----------------------------------------------------------------------------------

    def _touch(self) -> None:
        now = self.clock()
        with self._lock:
            self._last_contact = now

    @property
    def link_state(self) -> LinkState:
        with self._lock:
            last = self._last_contact
        if last is None or self.clock() - last > self.peer_timeout_s:
            return LinkState.DOWN
        return LinkState.UP

    @property
    def stats(self) -> BridgeStats:
        with self._lock:
            return BridgeStats(self._requests, self._timeouts, self._late, self._last_rtt)

    def connect(self) -> None:
        if self._socket is not None:
            return
        self._context = zmq.Context()
        self._socket = _dealer(self._context, self.address)
        deadline = time.monotonic() + self.connect_timeout_s
        last_error: Optional[RobotError] = None
        while time.monotonic() < deadline:
            try:
                self._request(MessageKind.GET_STATE, b"", min(self.timeout_s, max(0.0, deadline - time.monotonic())))
                break
            except (RobotTimeoutError, RobotConnectionError) as exc:
                last_error = exc
                time.sleep(0.01)  # the TCP connection may still be forming
        else:
            self.close()
            raise RobotConnectionError(
                f"no controller answered at {self.address} within {self.connect_timeout_s:g} s "
                f"(is scripts/bridge_peer.py or your controller node running?){f': {last_error}' if last_error else ''}"
            )
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="bridge-heartbeat", daemon=True)
        self._heartbeat.start()
        log.info("bridge: connected to the controller at %s", self.address)

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2.0)
            self._heartbeat = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        with self._lock:
            self._last_contact = None

    def _heartbeat_loop(self) -> None:
        assert self._context is not None
        socket = _dealer(self._context, self.address)
        seq = 0
        was_up = True
        try:
            while not self._stop.is_set():
                try:
                    socket.send(Message(MessageKind.HEARTBEAT, seq + 1, self.clock()).encode(), zmq.NOBLOCK)
                    seq += 1
                    deadline = time.monotonic() + self.heartbeat_interval_s
                    while (remaining := deadline - time.monotonic()) > 0 and socket.poll(max(1, int(remaining * 1000))):
                        reply = decode(socket.recv(zmq.NOBLOCK))
                        if reply.seq == seq:
                            self._touch()
                            break
                except zmq.Again:
                    pass  # no connection right now; silence will mark the link down
                except ProtocolError as exc:
                    log.warning("bridge: bad heartbeat reply: %s", exc)
                up = self.link_state == LinkState.UP
                if up != was_up:
                    log.warning("bridge: link to %s is %s", self.address, "up again" if up else "DOWN")
                    was_up = up
                self._stop.wait(self.heartbeat_interval_s)
        finally:
            socket.close()

    # ----- requests ------------------------------------------------------------------------------

    def _request(self, kind: MessageKind, payload: bytes, timeout_s: float) -> Message:
        socket = self._socket
        if socket is None:
            raise RobotConnectionError("the bridge robot is not connected (call connect())")
        seq = self._seq + 1  # numbers only what was sent, so the controller sees no gap after a refused send
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        try:
            # With IMMEDIATE set, "writable" means connected: wait (within the timeout) for a reconnection.
            if not socket.poll(max(1, int(timeout_s * 1000 + 0.5)), zmq.POLLOUT):
                raise zmq.Again()
            socket.send(Message(kind, seq, self.clock(), payload).encode(), zmq.NOBLOCK)
        except zmq.Again:
            raise RobotConnectionError(
                f"no connection to the controller at {self.address} within {timeout_s * 1000:.0f} ms"
            ) from None
        with self._lock:
            self._seq = seq
            self._requests += 1
        while (remaining := deadline - time.monotonic()) > 0:
            if not socket.poll(max(1, int(remaining * 1000 + 0.5))):
                continue
            try:
                reply = decode(socket.recv(zmq.NOBLOCK))
            except ProtocolError as exc:
                log.warning("bridge: dropped a malformed reply: %s", exc)
                continue
            self._touch()
            if reply.seq != seq:
                # Only an answer to an earlier, timed-out request can arrive here.
                with self._lock:
                    self._late += 1
                log.debug("bridge: discarded a late reply to #%d while waiting for #%d", reply.seq, seq)
                continue
            with self._lock:
                self._last_rtt = time.perf_counter() - started
            if reply.kind == MessageKind.ERROR:
                raise RobotError(f"the controller refused {kind.name} #{seq}: {error_text(reply)}")
            if reply.kind != MessageKind.STATE:
                raise RobotError(f"the controller answered {kind.name} #{seq} with {reply.kind.name}")
            return reply
        with self._lock:
            self._timeouts += 1
        raise RobotTimeoutError(f"no reply to {kind.name} #{seq} from {self.address} within {timeout_s * 1000:.0f} ms")

    def _state_request(self, kind: MessageKind, payload: bytes = b"") -> RobotState:
        try:
            return unpack_state(self._request(kind, payload, self.timeout_s))
        except ProtocolError as exc:
            raise RobotError(f"the controller sent a bad state: {exc}") from exc

    def read_state(self) -> RobotState:
        return self._state_request(MessageKind.GET_STATE)

    def send_action(self, action: np.ndarray) -> RobotState:
        step = limit_action(action, self.limits)
        if self.link_state == LinkState.DOWN:
            raise RobotConnectionError(
                f"link to the controller at {self.address} is down (silent for more than {self.peer_timeout_s:g} s); action not sent"
            )
        return self._state_request(MessageKind.ACTION, pack_action(step))

    def hold(self) -> RobotState:
        return self._state_request(MessageKind.HOLD)

    def stop(self) -> RobotState:
        return self._state_request(MessageKind.STOP)


@dataclass(frozen=True)
class PeerStats:
    received: int
    actions: int
    superseded: int  # actions dropped because a newer one was already waiting
    gaps: int  # requests whose number skipped ahead (earlier ones never arrived)
    reordered: int  # requests whose number went backwards


class BridgePeer:
    """Controller side of the bridge: serves a Robot to BridgeRobot clients."""

    def __init__(self, robot: Robot, address: str, *, loop_timeout_s: float = 0.5, clock: Clock = time.monotonic) -> None:
        self.robot = robot
        self.address = address
        self.loop_timeout_s = loop_timeout_s
        self.clock = clock
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._last_seq: dict[bytes, int] = {}
        self._last_heard: Optional[float] = None
        self._received = self._actions = self._superseded = self._gaps = self._reordered = 0

    def bind(self) -> str:
        """Bind (``tcp://host:*`` picks a free port) and return the actual endpoint."""
        self._socket.bind(self.address)
        endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("bridge peer: listening on %s", endpoint)
        return endpoint

    @property
    def stats(self) -> PeerStats:
        return PeerStats(self._received, self._actions, self._superseded, self._gaps, self._reordered)

    def close(self) -> None:
        self._socket.close()
        self._context.term()

    def serve(self, stop: threading.Event, poll_s: float = 0.01) -> None:
        """Answer requests until ``stop`` is set, holding the robot whenever the loop goes silent."""
        self.robot.connect()
        while not stop.is_set():
            batch = []
            if self._socket.poll(int(poll_s * 1000)):
                while True:
                    try:
                        batch.append(self._socket.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            self._answer(batch)
            self._watchdog()

    def _answer(self, batch: list[list[bytes]]) -> None:
        messages: list[tuple[bytes, Message]] = []
        for frames in batch:
            if len(frames) != 2:
                log.warning("bridge peer: ignored a message of %d frames", len(frames))
                continue
            identity, data = frames
            try:
                messages.append((identity, decode(data)))
            except ProtocolError as exc:
                log.warning("bridge peer: ignored a malformed message: %s", exc)
        newest_action: dict[bytes, int] = {}
        for identity, message in messages:
            if message.kind == MessageKind.ACTION:
                newest_action[identity] = max(newest_action.get(identity, -1), message.seq)
        for identity, message in messages:
            if message.kind == MessageKind.ACTION and message.seq < newest_action[identity]:
                self._superseded += 1
                reply = error_reply(message.seq, self.clock(), f"superseded by action #{newest_action[identity]}")
            else:
                reply = self.handle(identity, message)
            self._socket.send_multipart([identity, reply.encode()])

    def handle(self, identity: bytes, message: Message) -> Message:
        """The reply to one request (never raises for a robot error: the loop gets an ERROR)."""
        self._received += 1
        self._last_heard = self.clock()
        previous = self._last_seq.get(identity)
        if previous is not None:
            if message.seq <= previous:
                self._reordered += 1
                log.warning("bridge peer: request #%d after #%d (reordered)", message.seq, previous)
            elif message.seq > previous + 1:
                self._gaps += 1
                log.warning("bridge peer: requests #%d..#%d never arrived", previous + 1, message.seq - 1)
        self._last_seq[identity] = max(message.seq, previous or 0)
        try:
            if message.kind == MessageKind.ACTION:
                self._actions += 1
                state = self.robot.send_action(unpack_action(message))
            elif message.kind == MessageKind.HOLD:
                state = self.robot.hold()
            elif message.kind == MessageKind.STOP:
                state = self.robot.stop()
            elif message.kind in (MessageKind.GET_STATE, MessageKind.HEARTBEAT):
                state = self.robot.read_state()
            else:
                return error_reply(message.seq, self.clock(), f"{message.kind.name} is not a request")
        except RobotError as exc:
            return error_reply(message.seq, self.clock(), str(exc))
        return Message(MessageKind.STATE, message.seq, self.clock(), pack_state(state))

    def _watchdog(self) -> None:
        if self._last_heard is None or self.clock() - self._last_heard <= self.loop_timeout_s:
            return
        try:
            if self.robot.read_state().status == RobotStatus.READY:
                log.warning("bridge peer: loop silent for more than %.2f s; holding the robot", self.loop_timeout_s)
                self.robot.hold()
        except RobotError as exc:
            log.error("bridge peer: could not hold the robot: %s", exc)
