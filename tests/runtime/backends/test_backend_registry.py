"""Backends register themselves with their capabilities; a new one is one registration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from rdvla.cli.arguments import open_policy
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.backends.registry import backend_kind, backend_names, load_backend, register, unregister
from rdvla.runtime.halting import FixedIterations


class FakeBackend(Backend):
    """Zeros everywhere; times each iteration at 1.5 ms 'on the device'."""

    name = "fake"
    default_precision = "fp16"
    options = ("speed",)
    iteration_times = True

    def __init__(self, bundle: object, precision: str = "fp16", speed: float = 1.0) -> None:
        self.precision, self.speed, self.iterations = precision, speed, 0

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        pass

    def reset_latent(self, init_latent: np.ndarray) -> None:
        self.iterations = 0

    def step(self) -> None:
        self.iterations += 1

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self.iterations += 1
        return (0.0, 1.0) if read else None

    def decode(self) -> None:
        pass

    def actions(self) -> np.ndarray:
        return np.zeros((8, 7), np.float32)

    def latent(self) -> np.ndarray:
        return np.zeros((1, 8, 64), np.float32)

    def iteration_times_ms(self) -> list[float]:
        return [1.5] * self.iterations


@pytest.fixture
def fake() -> Iterator[type[FakeBackend]]:
    register(FakeBackend)
    yield FakeBackend
    unregister(FakeBackend.name)


def test_the_built_in_backends_declare_their_default_precision() -> None:
    assert {name: backend_kind(name).default_precision for name in backend_names()} == \
        {"onnxruntime": "fp32", "tensorrt": "fp16", "torch": "fp32"}


def test_a_registered_backend_loads_by_name_with_its_default_precision_and_options(fake: type[FakeBackend]) -> None:
    assert "fake" in backend_names()
    backend = load_backend(object(), "fake", speed=2.0)  # type: ignore[arg-type]
    assert isinstance(backend, fake) and (backend.precision, backend.speed) == ("fp16", 2.0)
    with pytest.raises(ValueError, match="takes no option checkpoint"):
        load_backend(object(), "fake", checkpoint="x")  # type: ignore[arg-type]


def test_an_unknown_backend_is_refused_with_the_registered_names() -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'; choose one of onnxruntime, tensorrt, torch"):
        backend_kind("nope")


def test_the_cli_runs_a_registered_backend_and_the_policy_reads_its_device_timings(
        fake: type[FakeBackend], tiny_bundle: Path) -> None:
    args = argparse.Namespace(backend="fake", precision=None, checkpoint=None, preprocessing="numpy")
    policy, precision = open_policy(tiny_bundle, args)
    try:
        assert precision == "fp16" and isinstance(policy.backend, fake)
        result = policy.act("pick up the bowl", np.zeros(8), pixel_values=np.zeros((1, 12, 224, 224), np.float32),
                            halting=FixedIterations(3))
        assert result.iteration_ms == [1.5, 1.5, 1.5]  # the backend's own timings: it declares iteration_times
    finally:
        policy.close()
    with pytest.raises(ValueError, match="--checkpoint applies to the torch backend only"):
        open_policy(tiny_bundle, argparse.Namespace(backend="fake", precision=None, checkpoint=Path("c"), preprocessing=None))
