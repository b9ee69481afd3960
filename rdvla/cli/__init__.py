"""The `rdvla` command: one module per subcommand, each with `register(sub)` and `run(args)`.

Library rooms never import this package. A subcommand imports what it needs inside `run`, so
`rdvla --help` and every robot command work on an install without the workstation's libraries.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Callable, Sequence

from rdvla import __version__
from rdvla.runtime import interrupts
from rdvla.cli import (
    build,
    calibrate,
    cameras,
    checkpoint,
    demo,
    doctor,
    eval,
    export,
    predict,
    preprocess,
    profile,
    run,
    verify,
)

# Errors a user can cause (bad path, mismatched checkpoint, bad option) or the machine can (a full disk, a
# read-only mount): one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
# So are a camera's, a robot's, the control loop's failure to start (a cable, a controller, a recording) and a graph
# that cannot be quantised (a missing quantizer), named by module: one of them can only have been raised once its
# module is loaded, and `rdvla --help` need not load them (the quantizer's needs onnx, which the robot lacks).
USER_ERRORS_BY_MODULE = (("rdvla.devices.cameras.base", "CameraError"), ("rdvla.devices.robots.base", "RobotError"),
                         ("rdvla.runtime.control.broker", "StartError"), ("rdvla.calibration.quantize", "QuantizationError"),
                         ("rdvla.devices.libero.suites", "LiberoUnavailableError"), ("rdvla.devices.libero.gl", "GLUnavailableError"))

# The shell's code for a command ended by a signal it handles (128 + SIGINT).
INTERRUPTED = 130

# Libraries only the workstation install has (`pip install 'rdvla[export]'`); the robot's has none of them.
WORKSTATION_LIBRARIES = frozenset({"torch", "transformers", "timm", "onnx", "onnxscript", "safetensors"})

# In the order of the offline-to-robot flow; `rdvla --help` lists them so.
COMMANDS = (checkpoint, predict, export, calibrate, eval, doctor, build, verify, profile, preprocess, cameras, run, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdvla",
        description="Export RD-VLA checkpoints into TensorRT-ready bundles and run them on a robot.",
    )
    parser.add_argument("--version", action="version", version=f"rdvla {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    # A command that runs others (the demo) runs them through this parser, without importing this package.
    parser.set_defaults(dispatch=_dispatcher(parser))
    return parser


_NEGATIVE_VALUE = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """`--proprio -0.1,0.2,...` as `--proprio=-0.1,0.2,...`: argparse takes a value that starts with a dash
    and is not one plain number (a list of them, say) for an option and reports a missing argument."""
    out: list[str] = []
    for token in argv:
        if out and _NEGATIVE_VALUE.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _dispatcher(parser: argparse.ArgumentParser) -> Callable[[Sequence[str]], int]:
    def dispatch(argv: Sequence[str]) -> int:
        args = parser.parse_args(attach_negative_values(argv))
        return int(args.run(args))

    return dispatch


def _one_line(exc: BaseException) -> str:
    """The error as one line; an OS error as `path: reason` (what the system refused, and where)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    # Progress from our own modules at INFO; third-party libraries only when they warn.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("rdvla").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # Ctrl+C and SIGTERM unwind, so work in progress is cleaned up (`rdvla run` installs its own handlers for
    # the loop); one that a library swallowed still ends the command as interrupted.
    with interrupts.remembered():
        try:
            code = int(args.run(args))
        except KeyboardInterrupt:
            code = INTERRUPTED
        except BaseException as exc:
            if not interrupts.received():
                return _report(exc, args.command)
            code = INTERRUPTED
        if interrupts.received():
            code = INTERRUPTED
    if code == INTERRUPTED:
        print("interrupted", file=sys.stderr)
    return code


def _report(exc: BaseException, command: str) -> int:
    """The exit code of a command that raised `exc`, its one-line error printed; anything else re-raised."""
    if isinstance(exc, BrokenPipeError):  # the reader went away (`rdvla doctor | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    loaded = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS_BY_MODULE
                   if module in sys.modules)
    if isinstance(exc, USER_ERRORS + loaded):
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in WORKSTATION_LIBRARIES:
        library = (exc.name or "").split(".")[0]
        print(f"error: this `rdvla {command}` needs {library}, which only the workstation install has: "
              "pip install 'rdvla[export]' (or run it on the workstation and copy the bundle to the robot)", file=sys.stderr)
        return 2
    raise exc


if __name__ == "__main__":
    sys.exit(main())
