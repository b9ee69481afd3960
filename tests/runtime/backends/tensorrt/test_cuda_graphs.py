"""CUDA graph capture through cuda-python, driven against a fake of its runtime API (no GPU, no TensorRT).

The enqueue stand-in plays `execute_async_v3`'s part: it puts a named piece of work on the stream
(or raises, as the backend does when TensorRT returns False). What is checked is rdvla's logic:
every direction captured and replayed, the fallback with its reason, and error codes as exceptions.
"""

from __future__ import annotations

import logging
import types
from typing import Any, Callable

import pytest

from rdvla.runtime.backends.capture import DISABLED, capture_or_fallback
from rdvla.runtime.backends.tensorrt.cuda_graphs import capture
from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaError, CudaRuntime, check

STREAM = 7
DIRECTIONS = ((0, 0), (0, 1), (1, 0), (1, 1))


def test_error_codes_become_named_exceptions(kit: types.SimpleNamespace) -> None:
    err = kit.cudaError_t
    assert check("cudaGraphLaunch", (err.cudaSuccess,)) is None
    assert check("cudaStreamEndCapture", (err.cudaSuccess, 1234)) == 1234
    assert check("cudaMemGetInfo", (err.cudaSuccess, 1, 2)) == (1, 2)
    with pytest.raises(CudaError, match=r"cudaStreamEndCapture failed with cudaErrorStreamCaptureInvalidated \(901\)") as info:
        check("cudaStreamEndCapture", (err.cudaErrorStreamCaptureInvalidated, None))
    assert (info.value.name, info.value.code, info.value.call) == ("cudaErrorStreamCaptureInvalidated", 901, "cudaStreamEndCapture")


def test_real_cuda_python_answers_through_check() -> None:
    """The installed cuda-python: a capture on a bogus stream (and, here, without a driver) is an exception, never an
    ignored tuple: CudaError with the code's name (12.9: cudaErrorInsufficientDriver) or 12.6's failure to load libcuda."""
    runtime = pytest.importorskip("cuda.bindings.runtime")
    cuda = CudaRuntime(runtime)
    mode = runtime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    with pytest.raises(RuntimeError) as info:
        cuda.call("cudaStreamBeginCapture", 12345, mode)
    if isinstance(info.value, CudaError):
        assert info.value.name.startswith("cudaError") and info.value.code > 0


def runners(fake: Any, fail: Callable[[tuple[int, ...]], bool] = lambda d: False) -> dict[tuple[int, ...], Callable[[], None]]:
    def runner(direction: tuple[int, ...]) -> Callable[[], None]:
        def run() -> None:
            if fail(direction) and STREAM in fake.capturing:
                raise RuntimeError("TensorRT could not enqueue core_step_decode (see its messages above)")
            fake.enqueue(STREAM, f"core_step_decode {direction}")

        return run

    return {d: runner(d) for d in DIRECTIONS}


def prepare(fake: Any, runs: dict[tuple[int, ...], Callable[[], None]], skip: str | None = None) -> Any:
    cuda = CudaRuntime(fake)
    captured: list[Any] = []

    def capture_one(run: Callable[[], None]) -> Callable[[], None]:
        graph = capture(cuda, STREAM, run)
        captured.append(graph)
        return lambda: graph.launch(STREAM)

    execution = capture_or_fallback(
        "core_step_decode", runs, capture_one, lambda: cuda.synchronize(STREAM), warmup_runs=1, direct="execute_async_v3", skip_reason=skip
    )
    return execution, captured


def test_capture_succeeds_and_each_direction_replays_its_own_graph(kit: types.SimpleNamespace) -> None:
    fake = kit.FakeCudaRuntime()
    execution, graphs = prepare(fake, runners(fake))
    assert execution.mode == "CUDA graphs (4 directions)"
    # warm-up: one direct run per direction, then nothing ran while capturing
    assert fake.work[STREAM] == [f"core_step_decode {d}" for d in DIRECTIONS]
    begins = [args for name, args in fake.calls if name == "cudaStreamBeginCapture"]
    assert begins == [(STREAM, kit.FakeCudaRuntime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)] * 4
    assert not fake.graphs and len(fake.executables) == 4  # each graph dropped once instantiated
    fake.work[STREAM].clear()
    execution.runners[(1, 0)]()
    execution.runners[(0, 1)]()
    assert [w.split(": ", 1)[1] for w in fake.work[STREAM]] == ["core_step_decode (1, 0)", "core_step_decode (0, 1)"]
    assert all(w.startswith("graph ") for w in fake.work[STREAM])
    for graph in graphs:
        graph.destroy()
        graph.destroy()  # a second release is a no-op
    assert not fake.executables


def test_enqueue_failing_under_capture_falls_back_with_the_reason(kit: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    fake = kit.FakeCudaRuntime()
    with caplog.at_level(logging.WARNING):
        execution, graphs = prepare(fake, runners(fake, fail=lambda d: d == (1, 0)))
    assert execution.mode == (
        "execute_async_v3: capture failed (RuntimeError: TensorRT could not enqueue core_step_decode (see its messages above))"
    )
    assert "core_step_decode runs without CUDA graphs (execute_async_v3): capture failed" in caplog.text
    assert not fake.capturing  # the failed capture was ended: the stream is usable again
    assert ("cudaGetLastError", ()) in fake.calls
    fake.work[STREAM].clear()
    execution.runners[(1, 0)]()  # the direct runner still works
    assert fake.work[STREAM] == ["core_step_decode (1, 0)"]
    assert len(graphs) == 2  # the directions captured before the failure, for the backend to release


def test_invalidated_capture_falls_back_with_the_cuda_error_name(kit: types.SimpleNamespace) -> None:
    fake = kit.FakeCudaRuntime()
    fake.failures["cudaStreamEndCapture"] = kit.cudaError_t.cudaErrorStreamCaptureInvalidated
    execution, _ = prepare(fake, runners(fake))
    assert execution.mode == (
        "execute_async_v3: capture failed (CudaError: cudaStreamEndCapture failed with cudaErrorStreamCaptureInvalidated (901))"
    )
    assert not fake.capturing and not fake.graphs
    assert fake.last_error == kit.cudaError_t.cudaSuccess  # cleared after the failed capture


def test_begin_capture_refused(kit: types.SimpleNamespace) -> None:
    fake = kit.FakeCudaRuntime()
    fake.failures["cudaStreamBeginCapture"] = kit.cudaError_t.cudaErrorStreamCaptureUnsupported
    execution, _ = prepare(fake, runners(fake))
    assert "cudaStreamBeginCapture failed with cudaErrorStreamCaptureUnsupported (900)" in execution.mode


def test_instantiate_failure_still_destroys_the_graph(kit: types.SimpleNamespace) -> None:
    fake = kit.FakeCudaRuntime()
    fake.failures["cudaGraphInstantiate"] = kit.cudaError_t.cudaErrorInvalidValue
    execution, _ = prepare(fake, runners(fake))
    assert "cudaGraphInstantiate failed with cudaErrorInvalidValue (1)" in execution.mode
    assert not fake.graphs and not fake.executables


def test_skipped_capture_runs_directly_without_trying(kit: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    fake = kit.FakeCudaRuntime()
    with caplog.at_level(logging.INFO):
        execution, graphs = prepare(fake, runners(fake), skip=DISABLED)
    assert execution.mode == "execute_async_v3: CUDA graphs disabled" and not graphs
    assert not any(name == "cudaStreamBeginCapture" for name, _ in fake.calls) and STREAM not in fake.work
    assert "WARNING" not in caplog.text  # a choice, not a failure


def test_backend_releases_the_graphs_of_a_capture_that_failed_part_way(kit: types.SimpleNamespace) -> None:
    """The TensorRT backend's capture step, on a bare instance (no engine can load here): the directions captured
    before the failing one are destroyed at once, not kept until `close`."""
    from rdvla.runtime.backends.tensorrt.backend import TensorRTBackend

    fake = kit.FakeCudaRuntime()
    direct = runners(fake, fail=lambda d: d == (1, 0))
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._cuda, backend._closed, backend._stream = CudaRuntime(fake), False, STREAM
    backend._runners, backend._modes, backend._graphs = {}, {}, []
    backend._direct_runner = lambda graph, direction: direct[direction]  # type: ignore[method-assign]
    backend._capture_core(backend._cuda, "core_step_decode", None)
    assert backend._modes["core_step_decode"].startswith("execute_async_v3: capture failed")
    assert not backend._graphs and not fake.executables  # the two graphs captured before (1, 0) are gone
    assert [name for name, _ in fake.calls].count("cudaGraphExecDestroy") == 2
    backend._runners["core_step_decode"][(1, 0)]()  # the direct runner still works
    assert fake.work[STREAM][-1] == "core_step_decode (1, 0)"
