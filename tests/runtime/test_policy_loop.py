"""The recurrent loop of `Policy`: halting, deadline, check_every, constant memory (ONNX Runtime)."""

from __future__ import annotations

import gc
import math
import tracemalloc
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from rdvla.runtime.backends.base import Backend
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.halting import AdjacentMSE, CosineSimilarity, FixedIterations
from rdvla.runtime.policy import Policy, truncated_normal_latent

PIXELS = np.zeros((1, 12, 224, 224), np.float32)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedBackend(Backend):
    """Returns scripted MSE values; each iteration costs `step_s` on the fake clock. Counts calls."""

    def __init__(self, clock: FakeClock, mses: list[float], step_s: float = 0.010) -> None:
        self.clock, self.mses, self.step_s = clock, mses, step_s
        self.k = 0
        self.calls: list[str] = []

    def run_context(self, pixel_values, input_ids, proprio) -> None:
        self.calls.append("context")

    def reset_latent(self, init_latent) -> None:
        self.k = 0

    def step(self) -> None:
        self.k += 1
        self.clock.now += self.step_s
        self.calls.append("step")

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        self.k += 1
        self.clock.now += self.step_s
        self.calls.append("step_decode" if read else "step_decode_noread")
        mse = self.mses[self.k - 1]
        return (mse, 1.0 - mse) if read else None

    def decode(self) -> None:
        self.calls.append("decode")

    def actions(self) -> np.ndarray:
        return np.full((8, 7), float(self.k), np.float32)

    def latent(self) -> np.ndarray:
        return np.zeros((1, 8, 64), np.float32)


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return Bundle.open(tiny_bundle)


def scripted(bundle: Bundle, mses: list[float], check_every: int = 1) -> tuple[Policy, ScriptedBackend, FakeClock]:
    clock = FakeClock()
    backend = ScriptedBackend(clock, mses)
    return Policy(bundle, backend, check_every=check_every, clock=clock), backend, clock


def act(policy: Policy, **kw):
    return policy.act("open the drawer", np.zeros(8), pixel_values=PIXELS, init_latent=np.zeros((1, 8, 64), np.float32), **kw)


DECAY = [math.nan] + [0.1 / 2**k for k in range(1, 64)]  # 0.05, 0.025, ... first below 1e-3 at k = 8


def test_adaptive_stop_and_reason(bundle) -> None:
    policy, backend, _ = scripted(bundle, DECAY)
    result = act(policy, halting=AdjacentMSE(1e-3))
    assert result.iterations == 8 and result.stopped_by == "converged"
    assert backend.calls.count("step_decode") == 8 and "decode" not in backend.calls
    assert np.isnan(result.deltas[0]) and result.deltas[7] < 1e-3 <= result.deltas[6]
    result = act(policy, halting=AdjacentMSE(1e-9, max_iterations=12))
    assert result.iterations == 12 and result.stopped_by == "max_iterations"
    result = act(policy, halting=CosineSimilarity(0.999))
    assert result.iterations == 8 and result.stopped_by == "converged"


def test_fixed_iterations_never_decode_per_iteration(bundle) -> None:
    policy, backend, _ = scripted(bundle, DECAY)
    result = act(policy, halting=FixedIterations(5))
    assert backend.calls == ["context", "step", "step", "step", "step", "step", "decode"]
    assert result.iterations == 5 and result.stopped_by == "fixed" and result.deltas == []


def test_deadline_returns_the_last_iterate(bundle) -> None:
    # 10 ms per iteration; a 35 ms deadline fits 3 (the 4th would end at 40 ms).
    policy, backend, _ = scripted(bundle, DECAY)
    result = act(policy, halting=AdjacentMSE(1e-3), deadline_s=0.035)
    assert result.iterations == 3 and result.stopped_by == "deadline"
    assert np.all(result.normalized_actions == 3.0)  # the decode of iteration 3
    policy, backend, _ = scripted(bundle, DECAY)
    result = act(policy, halting=FixedIterations(12), deadline_s=0.035)
    assert result.iterations == 3 and result.stopped_by == "deadline" and backend.calls[-1] == "decode"
    # A deadline already passed still yields one iteration.
    result = act(policy, halting=FixedIterations(12), deadline_s=1e-9)
    assert result.iterations == 1


def test_deadline_is_validated(bundle) -> None:
    policy, _, _ = scripted(bundle, DECAY)
    with pytest.raises(ValueError, match="positive"):
        act(policy, deadline_s=0.0)
    with pytest.raises(ValueError, match="check_every"):
        Policy(bundle, ScriptedBackend(FakeClock(), DECAY), check_every=0)


def test_check_every_reads_only_every_nth(bundle) -> None:
    policy, backend, _ = scripted(bundle, DECAY, check_every=3)
    result = act(policy, halting=AdjacentMSE(1e-3))
    # Converged at 8, first read at or after 8 is 9.
    assert result.iterations == 9 and result.stopped_by == "converged"
    reads = [c for c in backend.calls if c.startswith("step_decode")]
    assert reads == ["step_decode_noread", "step_decode_noread", "step_decode"] * 3


@pytest.fixture(scope="module")
def ort_policy(bundle) -> Policy:
    return Policy(bundle, OnnxRuntimeBackend(bundle))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def test_memory_is_constant_in_the_iteration_count(ort_policy: Policy) -> None:
    init = truncated_normal_latent((1, 8, 64), 0.6, np.random.default_rng(0))
    run = lambda n: ort_policy.act("open the drawer", np.zeros(8), pixel_values=PIXELS, init_latent=init, halting=FixedIterations(n))  # noqa: E731
    for n in (1, 64, 1):  # warm every path once
        run(n)
        run(n)
    gc.collect()
    before = _rss_mb()
    run(1)
    after_1 = _rss_mb()
    run(64)
    after_64 = _rss_mb()
    assert abs(after_64 - after_1) < 3.0, (before, after_1, after_64)
    adaptive = ort_policy.act("open the drawer", np.zeros(8), pixel_values=PIXELS, init_latent=init, halting=AdjacentMSE(1e-12, max_iterations=64))
    assert adaptive.iterations == 64
    assert abs(_rss_mb() - after_1) < 3.0


def test_loop_allocates_no_buffers_per_iteration(ort_policy: Policy) -> None:
    backend = ort_policy.backend
    assert isinstance(backend, OnnxRuntimeBackend)
    pairs = [*backend._buffers["latent"], *backend._buffers["actions"]]
    buffers = [id(a) for a in (*pairs, backend._mse, backend._cosine)]
    addresses = [a.__array_interface__["data"][0] for a in pairs]
    backend.reset_latent(np.zeros((1, 8, 64), np.float32))
    backend.step_decode()
    tracemalloc.start()
    snap_a = tracemalloc.take_snapshot()
    for _ in range(200):
        backend.step()
        backend.step_decode(read=True)
    snap_b = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap_b.compare_to(snap_a, "filename") if s.size_diff > 0)
    assert growth < 16_000, f"{growth} bytes allocated over 400 iterations"
    pairs = [*backend._buffers["latent"], *backend._buffers["actions"]]
    assert buffers == [id(a) for a in (*pairs, backend._mse, backend._cosine)]
    assert addresses == [a.__array_interface__["data"][0] for a in pairs]


def test_camera_images_are_preprocessed_into_the_backends_staging_buffer(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rdvla.runtime.preprocess import to_pixel_values

    policy = Policy.load(tiny_bundle)
    seen: list[np.ndarray] = []
    run_context = policy.backend.run_context
    monkeypatch.setattr(policy.backend, "run_context", lambda pixels, ids, proprio: (seen.append(pixels), run_context(pixels, ids, proprio)))
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)] for _ in range(2)]
    try:
        for query in images:
            policy.act("pick up the bowl", np.zeros(8), images=query, halting=FixedIterations(1))
            assert np.array_equal(seen[-1], to_pixel_values(query, implementation="numpy"))
    finally:
        policy.close()
    assert seen[0] is seen[1] is policy.backend.pixel_values_buffer((1, 12, 224, 224))  # one buffer, no per-query array


def test_the_chunk_comes_back_robot_ready_with_the_gripper_post_processed_as_asked(bundle) -> None:
    raw = act(scripted(bundle, DECAY)[0], halting=FixedIterations(3)).actions
    libero = act(scripted(bundle, DECAY)[0], halting=FixedIterations(3), gripper="libero").actions
    np.testing.assert_allclose(libero[:, :6], raw[:, :6], rtol=1e-6)  # un-normalised alike
    assert np.array_equal(libero[:, 6], -np.sign(2.0 * raw[:, 6].astype(np.float32) - 1.0))  # binarised, inverted
    with pytest.raises(ValueError, match="gripper"):
        act(scripted(bundle, DECAY)[0], halting=FixedIterations(3), gripper="soft")
