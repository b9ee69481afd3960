"""Argument types and option groups shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

from rdvla.runtime.backends.registry import backend_kind, backend_names
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS
from rdvla.runtime.preprocess.native import IMPLEMENTATIONS


def positive_int(text: str) -> int:
    """A whole number >= 1, or an argparse error naming the bad value."""
    return int_in(1)(text)


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in low..high (no upper bound when `high` is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must lie in {low}..{high}, got {value}" if high is not None
                                             else f"must be at least {low}, got {value}")
        return value
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (rates, durations, limits), or an argparse error naming the bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


# Iteration counts (--iterations, --min-iterations, --max-iterations): what the halting rules accept.
ITERATIONS = int_in(1, MAX_SUPPORTED_ITERATIONS)


def add_halting_options(p: argparse._ActionsContainer, default: str) -> None:
    """How a query's iterations stop (read by `runtime.halting.parse_halting`); `default` says what happens
    without --halting or --iterations."""
    stopping = p.add_mutually_exclusive_group()
    stopping.add_argument("--halting", help=f"adaptive halting: mse:THRESH (e.g. mse:1e-3) or cosine:THRESH (e.g. "
                          f"cosine:0.999); without it or --iterations: {default}")
    stopping.add_argument("--iterations", type=ITERATIONS, metavar="N", help="a fixed number of recurrent iterations")
    p.add_argument("--min-iterations", type=ITERATIONS, metavar="N", help="adaptive halting: fewest iterations (default 2)")
    p.add_argument("--max-iterations", type=ITERATIONS, metavar="N", help="adaptive halting: most iterations (default 32)")


def iteration_counts(text: str) -> list[int]:
    """Comma-separated iteration counts, each in 1..MAX_SUPPORTED_ITERATIONS, sorted and deduplicated."""
    try:
        counts = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > MAX_SUPPORTED_ITERATIONS:
        raise argparse.ArgumentTypeError(f"iteration counts must lie in 1..{MAX_SUPPORTED_ITERATIONS}, got {text!r}")
    return counts


def graph_list(text: str) -> list[str]:
    """`--graphs NAME,...`; the names are checked against the bundle by the command."""
    graphs = [g.strip() for g in text.split(",") if g.strip()]
    if not graphs:
        raise argparse.ArgumentTypeError("name at least one graph")
    return graphs


def add_bundle_argument(p: argparse._ActionsContainer) -> None:
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory (holds manifest.json)")


def add_preprocessing_option(p: argparse._ActionsContainer) -> None:
    p.add_argument("--preprocessing", choices=IMPLEMENTATIONS,
                   help="camera-image preprocessing: native (C++, the default where it is built) or numpy (the specification)")


# The backend without --backend. The option itself defaults to None, so that `rdvla predict` can tell it was given.
DEFAULT_BACKEND = "onnxruntime"


def add_backend_options(p: argparse._ActionsContainer) -> None:
    """How `open_policy` runs a bundle: backend, precision, the torch backend's checkpoint, image preprocessing."""
    kinds = [backend_kind(name) for name in backend_names()]
    p.add_argument("--backend", choices=[kind.name for kind in kinds],
                   help=", ".join(f"{kind.name} ({kind.summary})" for kind in kinds))
    p.add_argument("--precision", help="fp32, fp16 or int8 (default: the backend's: " +
                   ", ".join(f"{kind.default_precision} for {kind.name}" for kind in kinds) + ")")
    p.add_argument("--checkpoint", type=Path, help="torch backend: the source checkpoint (default: the path the manifest records)")
    add_preprocessing_option(p)


def open_policy(bundle: Path, args: argparse.Namespace) -> tuple[Any, str]:
    """The `Policy` running `bundle` as the backend options ask, and the precision it runs."""
    from rdvla.runtime.policy import Policy

    backend = args.backend or DEFAULT_BACKEND
    kind = backend_kind(backend)
    precision = args.precision or kind.default_precision
    if args.checkpoint and "checkpoint" not in kind.options:
        takers = [name for name in backend_names() if "checkpoint" in backend_kind(name).options]
        raise ValueError(f"--checkpoint applies to the {' and '.join(takers)} backend only")
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    policy = Policy.load(bundle, backend=backend, precision=precision, preprocessing=args.preprocessing, **options)
    return policy, precision
