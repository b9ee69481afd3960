"""The PyTorch backend against the golden cases and ONNX Runtime, its buffers, and its refusals."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from rdvla.runtime.golden import GoldenCase, load_cases
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.backends.torch_split import TorchBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError
from rdvla.runtime.halting import AdjacentMSE, FixedIterations, HaltingRule
from rdvla.runtime.normalization import normalize_proprio
from rdvla.runtime.policy import Policy
from rdvla.runtime.preprocess import to_pixel_values

HALTING: list[HaltingRule] = [FixedIterations(1), FixedIterations(4), FixedIterations(12), AdjacentMSE(1e-4)]
ACTIONS_MAX_ABS = 1e-5
# Tensor factories a per-iteration code path could call from Python to make a new buffer.
FACTORIES = ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like",
             "empty_strided", "tensor", "as_tensor", "from_numpy", "rand", "randn")

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return Bundle.open(tiny_bundle)


@pytest.fixture(scope="module")
def cases(bundle: Bundle) -> list[GoldenCase]:
    return load_cases(bundle)


@pytest.fixture(scope="module")
def torch_policy(bundle: Bundle) -> Iterator[Policy]:
    policy = Policy(bundle, TorchBackend(bundle, device="cpu"))
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def ort_policy(bundle: Bundle) -> Policy:
    return Policy(bundle, OnnxRuntimeBackend(bundle))


def _act(policy: Policy, case: GoldenCase, halting: HaltingRule) -> Any:
    return policy.act(case.instruction, case.proprio, images=case.images, halting=halting, init_latent=case.init_latent)


def _query(policy: Policy, case: GoldenCase) -> None:
    """Run the VLM+Prelude of `case` and load its S0, leaving the loop to the caller."""
    backend, bundle = policy.backend, policy.bundle
    ids = policy.tokenizer(case.instruction)
    proprio = normalize_proprio(case.proprio, bundle.norm_stats)[None]
    backend.run_context(to_pixel_values(case.images, config=bundle.preprocess), ids, proprio)
    backend.reset_latent(case.init_latent)


@pytest.mark.parametrize("halting", HALTING, ids=lambda h: repr(h))
def test_matches_golden_and_onnxruntime(torch_policy: Policy, ort_policy: Policy, cases: list[GoldenCase],
                                        halting: HaltingRule) -> None:
    for case in cases:
        ours = _act(torch_policy, case, halting)
        ort = _act(ort_policy, case, halting)
        reference, k = case.reference(halting)
        assert ours.iterations == ort.iterations == k
        assert np.abs(ours.normalized_actions - reference).max() <= ACTIONS_MAX_ABS
        assert np.abs(ours.normalized_actions - ort.normalized_actions).max() <= ACTIONS_MAX_ABS
        assert ours.normalized_actions.dtype == np.float32 and ours.normalized_actions.shape == (8, 7)
        times = torch_policy.backend.iteration_times_ms()  # type: ignore[attr-defined]
        assert len(times) == k and all(t > 0 for t in times)
        if halting.needs_decode:
            np.testing.assert_allclose(ours.mse[1:], case.trace_mse[1:k], rtol=1e-3, atol=1e-9)
            np.testing.assert_allclose(ours.cosine[1:], case.trace_cosine[1:k], atol=1e-6)


def test_context_matches_onnxruntime(torch_policy: Policy, ort_policy: Policy, cases: list[GoldenCase]) -> None:
    _query(torch_policy, cases[0])
    _query(ort_policy, cases[0])
    ours = torch_policy.backend.context()  # type: ignore[attr-defined]
    theirs = ort_policy.backend.context()  # type: ignore[attr-defined]
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        assert ours[name].shape == value.shape
        assert np.abs(ours[name] - value).max() <= 1e-5 * np.abs(value).max(), name


def test_every_ping_pong_direction_matches_onnxruntime(torch_policy: Policy, ort_policy: Policy, cases: list[GoldenCase]) -> None:
    # Mixing step and step_decode puts latent and action buffers out of phase: this sequence runs
    # step_decode in all four (latent, actions) directions (1,0) (0,1) (0,0) (1,1) and step in both.
    calls: list[Callable[[Any], Any]] = [
        lambda b: b.step(), lambda b: b.step_decode(), lambda b: b.step_decode(read=False), lambda b: b.step(),
        lambda b: b.step_decode(), lambda b: b.step_decode(), lambda b: b.decode(), lambda b: b.step(),
        lambda b: b.step_decode(), lambda b: b.decode(),
    ]
    for policy in (torch_policy, ort_policy):
        _query(policy, cases[1])
    for call in calls:
        ours, theirs = call(torch_policy.backend), call(ort_policy.backend)
        if theirs is not None:
            assert ours is not None
            assert ours[0] == pytest.approx(theirs[0], rel=1e-3, abs=1e-9)
            assert ours[1] == pytest.approx(theirs[1], abs=1e-6)
        np.testing.assert_allclose(torch_policy.backend.latent(), ort_policy.backend.latent(), atol=1e-5)
        np.testing.assert_allclose(torch_policy.backend.actions(), ort_policy.backend.actions(), atol=ACTIONS_MAX_ABS)


def _buffers(backend: TorchBackend) -> list[torch.Tensor]:
    return [*backend._latents, *backend._actions, backend._scalars, *backend._context.values()]


def test_no_tensor_allocated_per_iteration(torch_policy: Policy, cases: list[GoldenCase], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = torch_policy.backend
    assert isinstance(backend, TorchBackend)
    _query(torch_policy, cases[0])
    before = [(id(t), t.data_ptr()) for t in _buffers(backend)]
    initial = backend.latent()
    created: list[str] = []

    def counting(name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            created.append(name)
            return factory(*args, **kwargs)
        return wrapper

    with monkeypatch.context() as patch:
        for name in FACTORIES:
            patch.setattr(torch, name, counting(name, getattr(torch, name)))
        stats = [backend.step_decode(read=True) for _ in range(32)]
        for _ in range(32):
            backend.step()
        backend.step_decode(read=False)
    assert created == []
    assert [(id(t), t.data_ptr()) for t in _buffers(backend)] == before
    assert len(backend.iteration_times_ms()) == 65
    assert all(s is not None and np.isfinite(s).all() for s in stats[1:])
    assert not np.array_equal(backend.latent(), initial)  # the loop ran on these buffers


def test_altered_checkpoint_is_refused(bundle: Bundle, tiny_copy: Path) -> None:
    TorchBackend(bundle, checkpoint=tiny_copy, device="cpu").close()  # an unaltered copy anywhere is accepted
    stats = tiny_copy / "dataset_statistics.json"
    text = stats.read_text()
    at = next(i for i, c in enumerate(text) if c.isdigit() and c != "7")
    stats.write_text(text[:at] + "7" + text[at + 1 :])  # one byte, still valid JSON
    with pytest.raises(BundleError, match=r"dataset_statistics\.json differ from their SHA-256.*pass checkpoint=\.\.\. / --checkpoint"):
        TorchBackend(bundle, checkpoint=tiny_copy, device="cpu")


def test_missing_checkpoint_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"not found.*pass checkpoint=\.\.\. / --checkpoint"):
        TorchBackend(bundle, checkpoint=tmp_path / "absent", device="cpu")
    moved = dataclasses.replace(bundle.manifest, source={**bundle.manifest.source, "checkpoint": str(tmp_path / "moved")})
    with pytest.raises(BundleError, match=r"recorded at export\) not found.*pass checkpoint="):
        TorchBackend(dataclasses.replace(bundle, manifest=moved), device="cpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_on_cpu_are_refused(bundle: Bundle, precision: str) -> None:
    with pytest.raises(BundleError, match=rf"{precision} on CUDA only"):
        TorchBackend(bundle, precision=precision, device="cpu")


def test_unknown_precision_is_refused(bundle: Bundle) -> None:
    with pytest.raises(BundleError, match=r"fp32, bf16, fp16; got 'int8'"):
        TorchBackend(bundle, precision="int8")


def test_policy_load_dispatches_to_torch(tiny_bundle: Path) -> None:
    policy = Policy.load(tiny_bundle, backend="torch", device="cpu")
    assert isinstance(policy.backend, TorchBackend)
    assert policy.backend.execution_modes() == {"core_step": "eager: CPU", "core_step_decode": "eager: CPU"}
    policy.close()


# -- GPU tier: extra checks where CUDA is present ------------------------------------------------------


@pytest.fixture
def ieee_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep cuDNN convolutions (the patch embeddings) out of TF32, as the reference on the CPU is."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.mark.gpu
@gpu
def test_cuda_graphs_match_golden_and_eager(bundle: Bundle, cases: list[GoldenCase], ieee_fp32: None) -> None:
    graphs = Policy(bundle, TorchBackend(bundle, device="cuda"))
    eager = Policy(bundle, TorchBackend(bundle, device="cuda", cuda_graphs=False))
    assert all(m.startswith("CUDA graphs") for m in graphs.backend.execution_modes().values())  # type: ignore[attr-defined]
    assert all(m == "eager: CUDA graphs disabled" for m in eager.backend.execution_modes().values())  # type: ignore[attr-defined]
    for case in cases:
        for halting in [*HALTING, FixedIterations(32)]:
            ours, theirs = _act(graphs, case, halting), _act(eager, case, halting)
            reference, k = case.reference(halting)
            assert ours.iterations == theirs.iterations == k
            assert np.abs(ours.normalized_actions - theirs.normalized_actions).max() <= 1e-6
            # Float reordering of GPU kernels: the FP32 gate of ONNX Runtime / TensorRT.
            assert np.abs(ours.normalized_actions - reference).max() <= 1e-4
            assert len(graphs.backend.iteration_times_ms()) == k  # type: ignore[attr-defined]
    graphs.close()
    eager.close()


@pytest.mark.gpu
@gpu
def test_failed_capture_falls_back_to_eager(bundle: Bundle, cases: list[GoldenCase], ieee_fp32: None,
                                            monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_graphs() -> None:
        raise RuntimeError("no graphs here")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", no_graphs)
    with caplog.at_level(logging.WARNING, logger="rdvla.runtime.backends.capture"):
        policy = Policy(bundle, TorchBackend(bundle, device="cuda"))
    assert set(policy.backend.execution_modes().values()) == {"eager: capture failed (RuntimeError: no graphs here)"}  # type: ignore[attr-defined]
    assert "core_step runs without CUDA graphs (eager): capture failed" in caplog.text
    reference, k = cases[0].reference(FixedIterations(4))
    result = _act(policy, cases[0], FixedIterations(4))
    assert result.iterations == k and np.abs(result.normalized_actions - reference).max() <= 1e-4
    policy.close()


@pytest.mark.gpu
@gpu
def test_cuda_iterations_allocate_nothing(bundle: Bundle, cases: list[GoldenCase]) -> None:
    policy = Policy(bundle, TorchBackend(bundle, device="cuda"))
    backend = policy.backend
    assert isinstance(backend, TorchBackend)
    _query(policy, cases[0])
    backend.synchronize()
    allocations = torch.cuda.memory_stats()["allocation.all.allocated"]
    before = [(id(t), t.data_ptr()) for t in _buffers(backend)]
    for _ in range(32):
        backend.step_decode(read=True)
    for _ in range(32):
        backend.step()
    backend.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == allocations
    assert [(id(t), t.data_ptr()) for t in _buffers(backend)] == before
    policy.close()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_on_cuda_keep_fp32_boundaries(bundle: Bundle, cases: list[GoldenCase], precision: str) -> None:
    policy = Policy(bundle, TorchBackend(bundle, precision=precision, device="cuda"))
    result = _act(policy, cases[0], FixedIterations(12))
    assert result.iterations == 12
    assert result.normalized_actions.dtype == np.float32 and np.isfinite(result.normalized_actions).all()
    assert policy.backend.latent().dtype == np.float32
    assert all(t.dtype == torch.float32 for t in [*policy.backend._latents, *policy.backend._actions])  # type: ignore[attr-defined]
    policy.close()
