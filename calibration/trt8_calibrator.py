"""Implicit INT8 calibration for TensorRT 8.x (JetPack 5), fed from the `rdvla calibrate` data.

TensorRT 8 cannot build the explicit Q/DQ graphs as well as TensorRT 10 does, and its own INT8
path calibrates the FP32 network with a calibrator. `NpzCalibrator` replays one graph's samples
from `<bundle>/calibration/<run>/data/<graph>.npz` (the same inputs the Q/DQ graphs were
calibrated on) and writes TensorRT's calibration cache, which later builds (or
`trtexec --int8 --calib=CACHE`) reuse. On the Jetson:

    python -m calibration.trt8_calibrator BUNDLE --graph core_step --cache core_step.cache

The calibrators are deprecated since TensorRT 10.1: on JetPack 6 use the Q/DQ graphs
(`rdvla build --precision int8`). TensorRT and pycuda are imported inside functions only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from rdvla.runtime.backends.tensorrt import TensorRTUnavailable, make_trt_logger, require_pycuda, require_tensorrt
from rdvla.runtime.bundle import Bundle, BundleError

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


def calibration_batches(npz: Path, input_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One feed per sample, in the graph's input order; every sample must have the same shapes."""
    with np.load(npz) as data:
        missing = [n for n in input_names if n not in data.files]
        if missing:
            raise BundleError(f"{npz} lacks inputs {', '.join(missing)}: it was captured for another graph")
        arrays = {n: data[n] for n in input_names}
    count = len(next(iter(arrays.values())))
    return [{n: np.ascontiguousarray(arrays[n][i]) for n in input_names} for i in range(count)]


def make_calibrator(batches: list[dict[str, np.ndarray]], cache: Path) -> "trt.IInt8EntropyCalibrator2":
    """An entropy calibrator (TensorRT's recommended one for transformers) over `batches`; needs a current CUDA context."""
    import tensorrt as trt

    cuda = require_pycuda()

    class NpzCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.buffers = {name: cuda.mem_alloc(array.nbytes) for name, array in batches[0].items()}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> Optional[list[int]]:  # type: ignore[override]
            if self.index == len(batches):
                return None
            for name in names:
                cuda.memcpy_htod(self.buffers[name], batches[self.index][name])
            self.index += 1
            return [int(self.buffers[name]) for name in names]

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))
            log.info("wrote the calibration cache %s", cache)

    return NpzCalibrator()


def write_cache(bundle: Bundle, graph: str, cache: Path, data_dir: Optional[Path] = None) -> Path:
    """Calibrate the FP32 graph `graph` of `bundle` with TensorRT's implicit INT8 path and write `cache`."""
    version = require_tensorrt()
    import tensorrt as trt

    if int(version.split(".")[0]) >= 10:
        log.warning("TensorRT %s deprecates implicit INT8 calibration: build the Q/DQ graphs (rdvla build --precision int8)", version)
    record = (bundle.manifest.get("calibration") or {}).get("int8")
    if data_dir is not None:
        directory = data_dir
    elif record is not None:
        directory = bundle.path(record["data"]["dir"])
    else:
        raise BundleError(f"{bundle.root} holds no calibration data: run `rdvla calibrate` first")
    spec = bundle.graph(graph)
    dynamic = [t.name for t in spec.inputs if any(isinstance(d, str) for d in t.shape)]
    if dynamic:
        raise BundleError(f"{graph} has dynamic inputs ({', '.join(dynamic)}); implicit calibration here covers the core graphs")
    batches = calibration_batches(directory / f"{graph}.npz", [t.name for t in spec.inputs])
    cuda = require_pycuda()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        logger = make_trt_logger(log)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if int(version.split(".")[0]) < 10 else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(bundle.path(spec.file))):
            raise BundleError(f"{spec.file}: TensorRT could not parse it: {parser.get_error(0).desc() if parser.num_errors else 'no details'}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = make_calibrator(batches, cache)
        if builder.build_serialized_network(network, config) is None:
            raise BundleError(f"TensorRT could not calibrate {graph} (see its log above)")
    finally:
        context.pop()
        context.detach()
    return cache


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.trt8_calibrator", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--graph", required=True, choices=("core_step", "core_step_decode", "decode"))
    p.add_argument("--cache", type=Path, required=True, help="calibration cache to write (read instead when it exists)")
    p.add_argument("--data", type=Path, help="calibration data directory (default: the bundle's latest INT8 calibration)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        path = write_cache(Bundle.open(args.bundle), args.graph, args.cache, args.data)
    except (BundleError, TensorRTUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"calibration cache: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
