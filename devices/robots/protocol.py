"""The bridge's wire format: one small binary message per ZeroMQ frame, little-endian, no Python needed.

Header (24 bytes, struct "<4sBBHQd"):
    magic     4 bytes  b"RDVB"
    version   uint8    1
    kind      uint8    MessageKind
    length    uint16   payload bytes that follow
    seq       uint64   request number chosen by the loop; a reply carries the seq it answers
    time      float64  sender's clock, seconds (for latency accounting only)

Payloads:
    ACTION     7 x float64   dx dy dz (m), drx dry drz (rad, axis-angle in the base frame), gripper
                             command in [-1, 1] (-1 open, +1 close): already scaled and step-limited
                             by the loop; the controller applies its own limits on top
    GET_STATE, HOLD, STOP, HEARTBEAT   empty
    STATE      8 x float64 proprio, uint32 status (RobotStatus), uint64 actions applied   ("<8dIQ")
    ERROR      UTF-8 text

The loop (ZeroMQ DEALER) sends requests; the controller (ROUTER) answers every request with
STATE, or ERROR when it refuses (e.g. an action while stopped).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
import numpy as np

from rdvla.devices.robots.base import ACTION_DIM, STATE_DIM, RobotState, RobotStatus

MAGIC = b"RDVB"
VERSION = 1
HEADER = struct.Struct("<4sBBHQd")
STATE_BODY = struct.Struct(f"<{STATE_DIM}dIQ")
ACTION_BODY = struct.Struct(f"<{ACTION_DIM}d")


class MessageKind(enum.IntEnum):
    ACTION = 1
    GET_STATE = 2
    HOLD = 3
    STOP = 4
    HEARTBEAT = 5
    STATE = 16
    ERROR = 17


_FIXED_LENGTH = {
    MessageKind.ACTION: ACTION_BODY.size,
    MessageKind.GET_STATE: 0,
    MessageKind.HOLD: 0,
    MessageKind.STOP: 0,
    MessageKind.HEARTBEAT: 0,
    MessageKind.STATE: STATE_BODY.size,
}


class ProtocolError(ValueError):
    """A message that does not follow the format above."""


@dataclass(frozen=True)
class Message:
    kind: MessageKind
    seq: int
    time_s: float
    payload: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, int(self.kind), len(self.payload), self.seq, self.time_s) + self.payload


def decode(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise ProtocolError(f"message of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, kind, length, seq, time_s = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} (this side speaks {VERSION})")
    try:
        message_kind = MessageKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown message kind {kind}") from None
    if len(data) != HEADER.size + length:
        raise ProtocolError(f"{message_kind.name}: header says {length} payload bytes, got {len(data) - HEADER.size}")
    expected = _FIXED_LENGTH.get(message_kind)
    if expected is not None and length != expected:
        raise ProtocolError(f"{message_kind.name}: payload of {length} bytes (expected {expected})")
    return Message(message_kind, seq, time_s, bytes(data[HEADER.size :]))


def pack_action(action: np.ndarray) -> bytes:
    return ACTION_BODY.pack(*np.asarray(action, dtype=np.float64))


def unpack_action(message: Message) -> np.ndarray:
    return np.array(ACTION_BODY.unpack(message.payload))


def pack_state(state: RobotState) -> bytes:
    return STATE_BODY.pack(*np.asarray(state.proprio, dtype=np.float64), int(state.status), state.actions_applied)


def unpack_state(message: Message) -> RobotState:
    *proprio, status, applied = STATE_BODY.unpack(message.payload)
    try:
        robot_status = RobotStatus(status)
    except ValueError:
        raise ProtocolError(f"STATE: unknown robot status {status}") from None
    return RobotState(np.array(proprio), robot_status, message.time_s, applied)


def error_reply(seq: int, time_s: float, text: str) -> Message:
    return Message(MessageKind.ERROR, seq, time_s, text.encode("utf-8")[:4096])


def error_text(message: Message) -> str:
    return message.payload.decode("utf-8", errors="replace")
