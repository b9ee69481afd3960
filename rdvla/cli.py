"""The `rdvla` command: each room registers its own subcommands; heavy imports happen inside them."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from rdvla import __version__

# Errors a user can cause (bad path, mismatched checkpoint, bad option): one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


OWN_LOGGERS = ("rdvla", "export", "runtime", "devices", "calibration")


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    from calibration import commands as calibration_commands
    from devices import commands as device_commands
    from export import commands as export_commands
    from export import tensorrt_build
    from rdvla import predict
    from runtime import commands as runtime_commands
    from runtime.control import commands as control_commands

    return [export_commands.register, tensorrt_build.register, predict.register, runtime_commands.register,
            device_commands.register, control_commands.register, calibration_commands.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdvla",
        description="Export RD-VLA checkpoints into TensorRT-ready bundles and run them on a robot.",
    )
    parser.add_argument("--version", action="version", version=f"rdvla {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Progress from our own rooms at INFO; third-party libraries only when they warn.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for room in OWN_LOGGERS:
        logging.getLogger(room).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.run(args))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
