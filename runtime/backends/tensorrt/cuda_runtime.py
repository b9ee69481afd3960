"""The CUDA runtime API through cuda-python: error codes turned into exceptions, memory, streams, events.

Why cuda-python and not pycuda. pycuda's `Stream` has no stream capture and pycuda has no CUDA
graph API in any release (inducer/pycuda src/wrapper/wrap_cudadrv.cpp binds Stream's synchronize,
is_done, wait_for_event and handle only; no cuStreamBeginCapture / cuGraph* call exists in src/ or
pycuda/ at tags v2021.1, v2024.1, v2026.1), so the CUDA graphs the core step needs cannot be
made with it, and mixing two CUDA wrappers (pycuda for memory, cuda-python for graphs) would mean
two context models and two error models in one backend. cuda-python binds the whole runtime API
(graphs included), is NVIDIA's own binding (TensorRT 10.3's Python samples drive TensorRT with it:
NVIDIA/TensorRT release/10.3 samples/python/common_runtime.py, cudaMallocHost + cudaMemcpyAsync),
installs from a wheel where pycuda compiles against the CUDA toolkit on the device, and its runtime
API works on the device's primary CUDA context, the one TensorRT's runtime uses: no cuda_context
to push, pop or keep per thread. So rdvla uses cuda-python alone.

Which cuda-python: 12.6.x. The `cuda.bindings.runtime` module path exists from 12.6.1 (release
notes 12.6.1: `cuda.cudart` -> `cuda.bindings.runtime`, the old paths deprecated). `cuda.bindings`
shares major.minor with the CUDA toolkit (its support policy): 13.x links the CUDA 13 runtime
(release notes 13.0.3), which JetPack 6 (CUDA 12.6) cannot run, and 12.7+ would rely on CUDA minor
version compatibility on Tegra, while 12.6 is the CUDA of JetPack 6.1 and 6.2 and runs on any newer
driver. Hence CUDA_PYTHON_REQUIREMENT. Without a usable driver, 12.6 raises RuntimeError ("Failed to
dlopen libcuda.so.1") where 12.9 returns cudaErrorInsufficientDriver: callers treat both alike.

Every cuda-python call returns a tuple whose first item is a `cudaError_t` and whose other items
are the C function's out-parameters (NVIDIA/cuda-python cuda_bindings/cuda/bindings/runtime.pyx,
12.6 and 12.9: e.g. `cudaStreamEndCapture(stream) -> (err, graph)`, `cudaGraphLaunch(exec, stream) -> (err,)`);
`check` turns a failed one into `CudaError` naming the call and the error. Stream, event and graph
handles stay cuda-python objects; TensorRT takes a stream as its integer address.

The module binding is passed in (`CudaRuntime(module)`), so the tests drive this code against a
fake of the API boundary; nothing here imports cuda-python.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

CUDA_PYTHON_REQUIREMENT = "cuda-python>=12.6.1,<12.7"


class CudaError(RuntimeError):
    """A CUDA runtime call that returned an error code."""

    def __init__(self, call: str, name: str, code: int) -> None:
        super().__init__(f"{call} failed with {name} ({code})")
        self.call, self.name, self.code = call, name, code


def check(call: str, result: Sequence[Any]) -> Any:
    """The out-parameters of a cuda-python call (one value, a tuple of them, or None), or CudaError."""
    error, *values = result
    code = int(error)
    if code != 0:
        raise CudaError(call, str(getattr(error, "name", f"cudaError {code}")), code)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class PinnedArray:
    """Page-locked host memory: the numpy array over it and its address, taken once at allocation for every copy
    (numpy builds a new `ctypes` object on every `.ctypes` access: its multiarray/getset.c, array_ctypes_get)."""

    array: np.ndarray
    address: int


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    capability: tuple[int, int]
    sm_count: int


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"  # CUDA's encoding: 12060 -> 12.6


class CudaRuntime:
    """The calls rdvla makes, each checked; `rt` is `cuda.bindings.runtime` (or a fake of it)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def call(self, name: str, *args: Any) -> Any:
        return check(name, getattr(self.rt, name)(*args))

    # -- device ------------------------------------------------------------------------------------

    def device_info(self, device: int = 0) -> DeviceInfo:
        props = self.call("cudaGetDeviceProperties", device)
        name = props.name
        text = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        return DeviceInfo(text, (int(props.major), int(props.minor)), int(props.multiProcessorCount))

    def driver_version(self) -> str:
        """The CUDA version the driver supports, e.g. "12.6"."""
        return _cuda_version(int(self.call("cudaDriverGetVersion")))

    def runtime_version(self) -> str:
        """The CUDA runtime cuda-python was built against, e.g. "12.6"."""
        return _cuda_version(int(self.call("cudaRuntimeGetVersion")))

    def set_device(self, device: int = 0) -> None:
        """Make `device`'s primary context (the one TensorRT uses) current on this thread."""
        self.call("cudaSetDevice", device)

    # -- memory ------------------------------------------------------------------------------------

    def device_buffer(self, nbytes: int) -> int:
        """A zeroed device allocation (warm-up and capture runs then read defined values); its address."""
        address = int(self.call("cudaMalloc", nbytes))
        try:
            self.call("cudaMemset", address, 0, nbytes)
        except CudaError:
            self.call("cudaFree", address)
            raise
        return address

    def free(self, address: int) -> None:
        self.call("cudaFree", address)

    def pinned_array(self, shape: Sequence[int], dtype: str, zero: bool = False) -> PinnedArray:
        """Page-locked host memory (asynchronous copies need it) as a numpy array; free with `free_host`."""
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        address = int(self.call("cudaMallocHost", max(count * dt.itemsize, 1)))
        raw = (ctypes.c_byte * (count * dt.itemsize)).from_address(address)
        array: np.ndarray = np.frombuffer(memoryview(raw), dtype=dt, count=count).reshape(tuple(shape))
        if zero:
            array.fill(0)
        return PinnedArray(array, address)

    def free_host(self, pinned: PinnedArray) -> None:
        self.call("cudaFreeHost", pinned.address)

    def copy_to_device(self, address: int, host: PinnedArray, nbytes: int, stream: Any) -> None:
        """Queue a copy of the first `nbytes` of `host` to the device memory at `address`."""
        self.call("cudaMemcpyAsync", address, host.address, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def copy_to_host(self, host: PinnedArray, address: int, stream: Any) -> None:
        """Queue a copy of all of `host` from the device memory at `address`."""
        self.call("cudaMemcpyAsync", host.address, address, host.array.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    # -- streams and events ------------------------------------------------------------------------

    def stream(self) -> Any:
        # Non-blocking: no implicit synchronisation with the legacy default stream other libraries may use.
        return self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)

    def synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def destroy_stream(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def event(self, timing: bool = True) -> Any:
        return self.call("cudaEventCreateWithFlags", self.rt.cudaEventDefault if timing else self.rt.cudaEventDisableTiming)

    def record(self, event: Any, stream: Any) -> None:
        self.call("cudaEventRecord", event, stream)

    def wait(self, event: Any) -> None:
        self.call("cudaEventSynchronize", event)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self.call("cudaEventElapsedTime", start, end))

    def destroy_event(self, event: Any) -> None:
        self.call("cudaEventDestroy", event)

    def clear_error(self) -> None:
        """Reset the last (non-sticky) error, as after a failed capture."""
        self.rt.cudaGetLastError()


def stream_address(stream: Any) -> int:
    """The integer handle TensorRT's execute_async_v3 takes."""
    return int(stream)
