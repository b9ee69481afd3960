"""A stream's work captured into a CUDA graph through the runtime API, replayed, and released.

The sequence follows trtexec's (NVIDIA/TensorRT release/10.3 samples/common/sampleDevice.h,
TrtCudaGraph): begin capture in thread-local mode, enqueue once, end capture, instantiate with no
flags, and drop the graph once its executable instance exists. When the enqueue fails (TensorRT's
`execute_async_v3` returns False when an engine holds work that cannot be captured, which the
backend raises as an error), the capture is still ended so that the stream leaves capture mode, a graph it may return is destroyed
(none when the capture was invalidated: cudaErrorStreamCaptureInvalidated) and the last error is
cleared, so the stream runs the engine directly afterwards.

cuda-python calls (cuda.bindings.runtime, 12.x): cudaStreamBeginCapture(stream, mode) -> (err,),
cudaStreamEndCapture(stream) -> (err, graph), cudaGraphInstantiate(graph, flags) -> (err, exec)
(the CUDA 12 signature), cudaGraphLaunch(exec, stream) -> (err,), cudaGraphExecDestroy(exec) and
cudaGraphDestroy(graph) -> (err,).
"""

from __future__ import annotations

from typing import Any, Callable

from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaError, CudaRuntime


class CudaGraph:
    """An instantiated graph: `launch(stream)` replays it, `destroy()` releases it (once)."""

    def __init__(self, cuda: CudaRuntime, executable: Any) -> None:
        self._cuda = cuda
        self._executable: Any = executable

    def launch(self, stream: Any) -> None:
        self._cuda.call("cudaGraphLaunch", self._executable, stream)

    def destroy(self) -> None:
        executable, self._executable = self._executable, None
        if executable is not None:
            self._cuda.call("cudaGraphExecDestroy", executable)


def capture(cuda: CudaRuntime, stream: Any, enqueue: Callable[[], None]) -> CudaGraph:
    """Record what `enqueue()` puts on `stream` into a graph; what `enqueue` raised, or CudaError, on failure."""
    mode = cuda.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    cuda.call("cudaStreamBeginCapture", stream, mode)
    try:
        enqueue()
    except BaseException:
        _abandon(cuda, stream)
        raise
    try:
        graph = cuda.call("cudaStreamEndCapture", stream)  # ends capture mode even when it fails
    except CudaError:
        cuda.clear_error()
        raise
    try:
        executable = cuda.call("cudaGraphInstantiate", graph, 0)
    finally:
        cuda.call("cudaGraphDestroy", graph)
    return CudaGraph(cuda, executable)


def _abandon(cuda: CudaRuntime, stream: Any) -> None:
    """End a failed capture without raising: the caller's exception says what went wrong."""
    error, *graph = cuda.rt.cudaStreamEndCapture(stream)
    if int(error) == 0 and graph and graph[0] is not None:
        cuda.rt.cudaGraphDestroy(graph[0])
    cuda.clear_error()
