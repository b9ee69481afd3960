"""PyTorch backend: the export's split modules run directly on a GPU workstation (or the CPU).

The bundle holds graphs, not torch weights, so the backend loads the checkpoint the bundle was
exported from (`manifest["source"]`) after checking every file's SHA-256 against the manifest:
the same weights, the same split modules (`export.split`), no second implementation of the math.

Load, once: verify and load the checkpoint, cast it to the compute dtype, allocate every buffer
on the device (prelude inputs, context tensors, two latent and two action buffers in FP32, the
halting scalars), build one closure per (core graph, ping-pong direction: `pingpong`) that reads its
input buffers and `copy_`s its results into the opposite buffers, then, on CUDA, warm the closures
up on the backend's own stream and capture each as a CUDA graph replaying into the same buffers
(`capture.capture_or_fallback`, shared with the TensorRT backend).

Per iteration: one graph replay (or the eager closure), two timing marks, and only when asked an
8-byte copy of the halting scalars to pinned memory followed by an event wait.

fp32 computes in the FP32 math torch is configured for: torch's defaults keep matmuls in IEEE FP32
but let cuDNN run convolutions (the towers' patch embeddings) in TF32; set
`torch.backends.cudnn.allow_tf32 = False` before loading for reference-exact FP32. bf16 and fp16
cast the weights and context; latent and actions cross the backend's boundary in FP32 regardless.

torch and export.* are imported inside the constructor only: runtime/ must import without torch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Optional

import numpy as np

from rdvla.runtime import contract
from rdvla.runtime.backends.base import Backend
from rdvla.runtime.backends.capture import DISABLED, Runner, capture_or_fallback
from rdvla.runtime.backends.registry import register
from rdvla.runtime.backends.pingpong import ACTIONS_PAIR, DIRECTIONS, LATENT_PAIR, Direction, PingPong, slots
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import MANIFEST, BundleError, sha256_file
from rdvla.runtime.halting import MAX_SUPPORTED_ITERATIONS

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

# precision -> torch dtype name; anything but fp32 needs CUDA (CPU bf16/fp16 kernels are slow and
# not what this backend is measured on).
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Eager runs per direction before capture: the first calls load kernels lazily and set up cuBLAS
# workspaces, neither of which may happen inside a graph.
WARMUP_RUNS = 3


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BundleError("the torch backend needs PyTorch: pip install 'rdvla[export]'") from None
    return torch


def _tensor(torch: Any, array: np.ndarray, dtype: type) -> "Tensor":
    """A CPU tensor over `array` (copied only when it is not C-contiguous, writable and of `dtype`)."""
    # torch warns on wrapping a read-only array (the tokenizer's ids are), though it is only read here.
    tensor: Tensor = torch.from_numpy(np.require(array, dtype, ("C", "W")))
    return tensor


def source_checkpoint(bundle: Bundle, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint directory to load for `bundle`, verified file by file against the manifest.

    `checkpoint` overrides the path recorded at export; either way the directory must hold exactly
    the files listed in `manifest["source"]["files"]` with the same SHA-256.
    """
    from rdvla.export.checkpoint import CheckpointError, CheckpointFiles

    source = bundle.manifest.source
    recorded = source.get("checkpoint")
    expected: dict[str, str] = source.get("files") or {}
    hint = "pass checkpoint=... / --checkpoint with the checkpoint directory the bundle was exported from"
    if checkpoint is not None:
        root = Path(checkpoint)
    elif recorded is not None:
        root = Path(recorded)
    else:
        raise BundleError(f"{bundle.root}: {MANIFEST} names no source checkpoint; the torch backend needs its weights: {hint}")
    if not root.is_dir():
        where = "" if checkpoint is not None else " (the path recorded at export)"
        raise BundleError(f"checkpoint directory {root}{where} not found; the torch backend loads its weights: {hint}")
    if not expected:
        raise BundleError(f"{bundle.root}: {MANIFEST} lists no source.files hashes, so {root} cannot be verified; re-export the bundle")
    try:
        files = CheckpointFiles.discover(root)
    except CheckpointError as exc:
        raise BundleError(f"checkpoint {root} cannot be used: {exc}") from None
    found = {p.name: p for p in files.all_files()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(name for name in set(expected) & set(found) if sha256_file(found[name]) != expected[name])
    problems = [f"{', '.join(changed)} differ from their SHA-256 in source.files"] if changed else []
    problems += [f"missing {', '.join(missing)}"] if missing else []
    problems += [f"unexpected {', '.join(extra)}"] if extra else []
    if problems:
        raise BundleError(
            f"checkpoint {root} is not the one {bundle.root} was exported from ({'; '.join(problems)}); "
            f"{hint}, or re-export the bundle from this checkpoint"
        )
    return root


class TorchBackend(Backend):
    """The bundle's source checkpoint run through the split modules, on preallocated device buffers.

    `iteration_times_ms()` returns the time of each iteration since the last `reset_latent`: CUDA
    events around each `step` / `step_decode` on a GPU, host `perf_counter` on the CPU.
    `execution_modes()` tells, per core graph, whether it replays CUDA graphs or runs eagerly (and why).
    """

    name = "torch"
    summary = "GPU workstation"
    options = ("checkpoint", "device", "cuda_graphs")
    iteration_times = True

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        checkpoint: str | Path | None = None,
        device: str | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise BundleError(f"torch backend runs precision {', '.join(PRECISIONS)}; got {precision!r}")
        torch = _import_torch()
        self._torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise BundleError(f"torch backend: invalid device {device!r} ({exc})") from None
        if self.device.type not in ("cpu", "cuda"):
            raise BundleError(f"torch backend runs on cpu or cuda; got device {device!r}")
        self._cuda = self.device.type == "cuda"
        if self._cuda and not torch.cuda.is_available():
            raise BundleError(f"device {device!r} requested but this torch has no usable CUDA ({torch.__version__})")
        if self._cuda and (self.device.index or 0) >= torch.cuda.device_count():
            raise BundleError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
        if precision != "fp32" and not self._cuda:
            raise BundleError(f"torch backend runs {precision} on CUDA only; on {self.device.type} use precision 'fp32'")
        self.bundle = bundle
        self.precision = precision
        self.dims = bundle.dims
        self._dtype = getattr(torch, PRECISIONS[precision])
        self._modes: dict[str, str] = {}
        self._iterations = 0
        self._schedule = PingPong()
        start = time.perf_counter()
        self.checkpoint = source_checkpoint(bundle, checkpoint)
        if self._cuda:
            self._stream = torch.cuda.Stream(device=self.device)
        with self._on_stream():
            self._load(cuda_graphs)
        log.info(
            "torch backend: %s on %s from %s in %.1f s; %s",
            precision, self.device, self.checkpoint, time.perf_counter() - start,
            ", ".join(f"{g}: {m}" for g, m in self._modes.items()),
        )

    def _on_stream(self) -> ContextManager[Any]:
        """All device work of the backend runs on its own stream, whatever the caller's current one is."""
        return self._torch.cuda.stream(self._stream) if self._cuda else contextlib.nullcontext()

    # -- load ------------------------------------------------------------------------------------

    def _load(self, cuda_graphs: bool) -> None:
        from rdvla.export.checkpoint import load_checkpoint
        from rdvla.export.split import CoreStep, CoreStepDecode, Decode, VLMPrelude

        torch, device, dtype = self._torch, self.device, self._dtype
        model = load_checkpoint(self.checkpoint).model
        model.to(device=device, dtype=dtype).requires_grad_(False).eval()
        self._prelude = VLMPrelude(model).eval()
        self._core_step = CoreStep(model).eval()
        self._core_step_decode = CoreStepDecode(model).eval()
        self._decode = Decode(model).eval()

        n_core, n_coda = len(self.dims.recurrent_vlm_layers), len(self.dims.coda_vlm_layers)
        self._core_names = [contract.INJECTION, *contract.kv_names("core", n_core)]
        self._coda_names = contract.kv_names("coda", n_coda)
        # Static shapes: `Bundle.check_dims` holds the context tensors to the model's dimensions.
        prelude_out = {t.name: t for t in self.bundle.graph(contract.VLM_PRELUDE).outputs}
        self._context: dict[str, Tensor] = {
            name: torch.zeros(prelude_out[name].shape, dtype=dtype, device=device) for name in self._core_names + self._coda_names
        }
        prelude_in = {t.name: t for t in self.bundle.graph(contract.VLM_PRELUDE).inputs}
        self._pixels = torch.zeros(prelude_in[contract.PIXEL_VALUES].shape, dtype=dtype, device=device)
        self._proprio = torch.zeros(prelude_in[contract.PROPRIO].shape, dtype=dtype, device=device)
        self._input_ids = torch.zeros((1, self.bundle.prompt_len[1]), dtype=torch.int64, device=device)

        chunk = (1, self.dims.chunk_len, self.dims.action_dim)
        self._latents = [torch.zeros(self.dims.latent_shape, dtype=torch.float32, device=device) for _ in range(2)]
        self._actions = [torch.zeros(chunk, dtype=torch.float32, device=device) for _ in range(2)]
        # mse and cosine share one allocation so one copy reads both.
        self._scalars = torch.zeros(2, dtype=torch.float32, device=device)
        if self._cuda:
            self._host_scalars = torch.zeros(2, dtype=torch.float32, pin_memory=True)
            self._scalars_ready = torch.cuda.Event()
            self._begin: list[Any] = [torch.cuda.Event(enable_timing=True) for _ in range(MAX_SUPPORTED_ITERATIONS)]
            self._end: list[Any] = [torch.cuda.Event(enable_timing=True) for _ in range(MAX_SUPPORTED_ITERATIONS)]
        else:
            self._host_scalars = self._scalars
            self._begin = [0.0] * MAX_SUPPORTED_ITERATIONS
            self._end = [0.0] * MAX_SUPPORTED_ITERATIONS
        self._scalar_view = self._host_scalars.numpy()

        self._pairs = {LATENT_PAIR: self._latents, ACTIONS_PAIR: self._actions}
        # The graphs hold only scratch memory (results are copied out into the buffers above) and
        # replay one at a time on one stream, so they can all share one pool.
        self._pool = torch.cuda.graph_pool_handle() if self._cuda and cuda_graphs else None
        skip = "CPU" if not self._cuda else None if cuda_graphs else DISABLED
        closures = {contract.CORE_STEP: self._step_closure, contract.CORE_STEP_DECODE: self._step_decode_closure}
        self._runners: dict[str, dict[Direction, Runner]] = {}
        for graph, closure in closures.items():
            execution = capture_or_fallback(
                graph, {d: closure(d) for d in DIRECTIONS[graph]}, self._capture, self.synchronize,
                warmup_runs=WARMUP_RUNS, direct="eager", skip_reason=skip,
            )
            self._runners[graph], self._modes[graph] = execution.runners, execution.mode

    def _bound(self, graph: str, direction: Direction) -> dict[str, "Tensor"]:
        """The latent and action buffers one direction of `graph` reads and writes, by tensor name."""
        return {name: self._pairs[pair][i] for name, (pair, i) in slots(graph, direction).items()}

    def _step_closure(self, direction: Direction) -> Runner:
        core, dtype, inference = self._core_step, self._dtype, self._torch.inference_mode
        bound = self._bound(contract.CORE_STEP, direction)
        latent, target = bound[contract.LATENT], bound[contract.NEXT_LATENT]
        context = tuple(self._context[n] for n in self._core_names)

        def run() -> None:
            # inference_mode skips autograd dispatch altogether: ~15% of an eager iteration of the tiny model.
            with inference():
                target.copy_(core(latent.to(dtype), *context))

        return run

    def _step_decode_closure(self, direction: Direction) -> Runner:
        core, dtype, inference = self._core_step_decode, self._dtype, self._torch.inference_mode
        bound = self._bound(contract.CORE_STEP_DECODE, direction)
        latent, next_latent = bound[contract.LATENT], bound[contract.NEXT_LATENT]
        # prev_actions stays FP32: the module only reads it for the statistics, which it computes in FP32.
        prev_actions, actions = bound[contract.PREV_ACTIONS], bound[contract.ACTIONS]
        mse, cosine = self._scalars[0:1], self._scalars[1:2]
        context = tuple(self._context[n] for n in self._core_names + self._coda_names)

        def run() -> None:
            with inference():
                new_latent, new_actions, new_mse, new_cosine = core(latent.to(dtype), prev_actions, *context)
                next_latent.copy_(new_latent)
                actions.copy_(new_actions)
                mse.copy_(new_mse)
                cosine.copy_(new_cosine)

        return run

    def _capture(self, run: Runner) -> Runner:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
            run()
        replay: Runner = graph.replay
        return replay

    # -- per query -------------------------------------------------------------------------------

    def run_context(self, pixel_values: np.ndarray, input_ids: np.ndarray, proprio: np.ndarray) -> None:
        torch = self._torch
        for name, array, buffer in ((contract.PIXEL_VALUES, pixel_values, self._pixels), (contract.PROPRIO, proprio, self._proprio)):
            if tuple(array.shape) != tuple(buffer.shape):
                raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(buffer.shape)}")
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"{contract.INPUT_IDS} has shape {tuple(input_ids.shape)}, expected (1, prompt_len)")
        ids = self._input_ids[:, : input_ids.shape[1]]
        with self._on_stream(), torch.inference_mode():
            # Pageable host memory makes these copies blocking: once per query, and the caller's
            # arrays may be reused as soon as this returns.
            self._pixels.copy_(_tensor(torch, pixel_values, np.float32))
            self._proprio.copy_(_tensor(torch, proprio, np.float32))
            ids.copy_(_tensor(torch, input_ids, np.int64))
            outputs = self._prelude(self._pixels, ids, self._proprio)
            for name, value in zip(self._core_names + self._coda_names, outputs):
                self._context[name].copy_(value)

    def reset_latent(self, init_latent: np.ndarray) -> None:
        if init_latent.shape != self.dims.latent_shape:
            raise ValueError(f"initial latent has shape {init_latent.shape}, expected {self.dims.latent_shape}")
        self._schedule.reset()
        self._iterations = 0
        with self._on_stream():
            self._latents[0].copy_(_tensor(self._torch, init_latent, np.float32))
            self._actions[0].zero_()

    # -- per iteration: no allocation, no synchronisation ----------------------------------------

    def _run_iteration(self, run: Runner) -> None:
        k = self._iterations
        self._iterations = k + 1
        if k >= MAX_SUPPORTED_ITERATIONS:
            run()
        elif self._cuda:
            self._begin[k].record(self._stream)
            run()
            self._end[k].record(self._stream)
        else:
            self._begin[k] = time.perf_counter()
            run()
            self._end[k] = time.perf_counter()

    def step(self) -> None:
        with self._on_stream():
            self._run_iteration(self._runners[contract.CORE_STEP][self._schedule.step()])

    def step_decode(self, read: bool = True) -> Optional[tuple[float, float]]:
        with self._on_stream():
            self._run_iteration(self._runners[contract.CORE_STEP_DECODE][self._schedule.step_decode()])
            if read and self._cuda:
                self._host_scalars.copy_(self._scalars, non_blocking=True)
                self._scalars_ready.record(self._stream)
        if not read:
            return None
        if self._cuda:
            self._scalars_ready.synchronize()
        return float(self._scalar_view[0]), float(self._scalar_view[1])

    def decode(self) -> None:
        bound = self._bound(contract.DECODE, self._schedule.decode())
        with self._on_stream(), self._torch.inference_mode():
            coda = (self._context[n] for n in self._coda_names)
            bound[contract.ACTIONS].copy_(self._decode(bound[contract.LATENT].to(self._dtype), *coda))

    # -- readback ----------------------------------------------------------------------------------

    def _host(self, tensor: "Tensor") -> np.ndarray:
        with self._on_stream():
            host: np.ndarray = tensor.to(device="cpu", dtype=self._torch.float32, copy=True).numpy()
        return host

    def actions(self) -> np.ndarray:
        return self._host(self._actions[self._schedule.actions][0])

    def latent(self) -> np.ndarray:
        return self._host(self._latents[self._schedule.latent])

    def context(self) -> dict[str, np.ndarray]:
        """The VLM+Prelude outputs of the last query in FP32 (parity checks compare them per output)."""
        return {name: self._host(value) for name, value in self._context.items()}

    def iteration_times_ms(self) -> list[float]:
        """Time of each iteration since the last `reset_latent`, in milliseconds.

        On CUDA this is device time between events around each iteration and waits for the last
        one; iterations beyond MAX_SUPPORTED_ITERATIONS are not timed.
        """
        count = min(self._iterations, MAX_SUPPORTED_ITERATIONS)
        if count == 0:
            return []
        if self._cuda:
            self._end[count - 1].synchronize()
            return [float(self._begin[k].elapsed_time(self._end[k])) for k in range(count)]
        return [1e3 * (self._end[k] - self._begin[k]) for k in range(count)]

    def execution_modes(self) -> dict[str, str]:
        """How each core graph runs: CUDA graph replay, or eagerly and why."""
        return dict(self._modes)

    def synchronize(self) -> None:
        if self._cuda:
            self._stream.synchronize()

    def close(self) -> None:
        if not hasattr(self, "_latents"):
            return
        self.synchronize()
        # The graphs (held by their replay methods) write into the buffers: drop them first.
        del self._runners
        for attr in ("_pairs", "_latents", "_actions", "_scalars", "_host_scalars", "_scalar_view", "_context", "_pixels", "_proprio",
                     "_input_ids", "_prelude", "_core_step", "_core_step_decode", "_decode"):
            delattr(self, attr)


register(TorchBackend)
