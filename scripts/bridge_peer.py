#!/usr/bin/env python3
"""Reference controller for the rdvla robot bridge: serves a simulated arm over ZeroMQ.

Run it where the arm's controller would run; `rdvla run` (robot.type: bridge) connects to it.
A real integration (ROS 2 node, vendor SDK) implements the same small protocol, documented in
devices/robots/protocol.py, around the real arm; this script is the model to follow and the
peer the tests use.

    python scripts/bridge_peer.py --address tcp://0.0.0.0:5555 [--setup examples/setup.yaml]

Prints one line `bridge peer listening on ENDPOINT` on stdout once it accepts connections
(with a port of `*`, ENDPOINT shows the port picked). Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

import zmq

# Run from a checkout without installing rdvla.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rdvla.devices.robots.base import RobotLimits  # noqa: E402
from rdvla.devices.robots.bridge import BridgePeer  # noqa: E402
from rdvla.devices.robots.sim import SimRobot  # noqa: E402


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint to bind (default %(default)s)")
    parser.add_argument("--setup", type=Path, help="take the robot limits from this setup file")
    parser.add_argument(
        "--loop-timeout-ms", type=float, default=500.0, help="hold the arm when the loop is silent this long (default 500)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")

    limits = RobotLimits()
    if args.setup is not None:
        from rdvla.devices.config import ConfigError, load_setup

        try:
            limits = load_setup(args.setup).limits
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    # The loop has already scaled the actions to metres and radians: no scaling here.
    peer = BridgePeer(SimRobot(limits), args.address, loop_timeout_s=args.loop_timeout_ms / 1000.0)
    try:
        endpoint = peer.bind()
    except zmq.ZMQError as exc:  # address in use, bad endpoint
        print(f"error: cannot listen on {args.address}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"bridge peer listening on {endpoint}", flush=True)
    try:
        peer.serve(stop)
    finally:
        stats = peer.stats
        logging.getLogger("bridge_peer").info(
            "served %d requests (%d actions, %d superseded, %d gaps, %d reordered)",
            stats.received,
            stats.actions,
            stats.superseded,
            stats.gaps,
            stats.reordered,
        )
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
