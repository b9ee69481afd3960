"""Golden cases: inputs and the reference's 32-iteration trace, shipped in every bundle.

The answer of k fixed iterations is the decode after iteration k of the trace, and an adaptive answer is
read off the trace's statistics with the same halting rule, so one trace answers every mode.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, ModelDims
from rdvla.runtime.halting import HaltingRule, stop_on_trace

TRACE_ITERATIONS = 32


@dataclass
class GoldenCase:
    images: list[np.ndarray]
    instruction: str
    proprio: np.ndarray  # raw, (8,)
    init_latent: np.ndarray  # (1, 8, D)
    trace_actions: np.ndarray  # (32, 8, 7): decode after iteration k = the answer of k fixed iterations
    trace_mse: np.ndarray  # (32,), NaN at k = 1
    trace_cosine: np.ndarray
    # The same trace un-normalised with the statistics the bundle was exported with, and the scale of
    # each action dimension (0.5 (q99 - q01) where normalised, 1 elsewhere): what `rdvla verify`
    # compares un-normalised actions with, so edited statistics cannot pass.
    trace_unnormalized_actions: np.ndarray
    action_scale: np.ndarray  # (7,) `normalization.action_span` (the file key predates the name; not a robot's action scale)

    def reference(self, halting: HaltingRule) -> tuple[np.ndarray, int]:
        """The reference answer for `halting`, read off the 32-iteration trace."""
        stop = stop_on_trace(halting, self.trace_mse, self.trace_cosine)
        return self.trace_actions[stop.iterations - 1], stop.iterations

    def save(self, path: Path) -> None:
        arrays = {name: getattr(self, name) for name in _FIELDS}
        np.savez_compressed(path, **{**arrays, "images": np.stack(self.images), "instruction": np.array(self.instruction)})

    @classmethod
    def load(cls, path: Path) -> "GoldenCase":
        """The case saved at `path`, or a BundleError naming the file and what is wrong with it."""
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):  # numpy's reason may advise allow_pickle: not passed on
            raise BundleError(f"{path}: not a golden case (not an .npz archive of arrays): re-export the bundle") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise BundleError(f"{path}: not a golden case (a single array, not an .npz archive): re-export the bundle")
        with archive as z:
            missing = [name for name in _FIELDS if name not in z.files]
            if missing:
                raise BundleError(f"{path}: a golden case without {', '.join(missing)} (made by an older rdvla?): "
                                  "re-export the bundle")
            try:
                arrays = {name: z[name] for name in _FIELDS}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise BundleError(f"{path}: a damaged golden case ({' '.join(str(exc).split())}): re-export the bundle") from None
        return cls(**{**arrays, "images": list(arrays["images"]), "instruction": str(arrays["instruction"])})

    def check(self, dims: ModelDims, path: Path) -> None:
        """Refuse a case whose arrays do not have the shapes of the bundle's model."""
        chunk = (TRACE_ITERATIONS, dims.chunk_len, dims.action_dim)
        expected = {"proprio": (dims.proprio_dim,), "init_latent": dims.latent_shape, "trace_actions": chunk,
                    "trace_mse": (TRACE_ITERATIONS,), "trace_cosine": (TRACE_ITERATIONS,), "trace_unnormalized_actions": chunk,
                    "action_scale": (dims.action_dim,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise BundleError(f"{path}: {name} has shape {getattr(self, name).shape}, the bundle's model needs {shape}: "
                                  "re-export the bundle")
        if len(self.images) != dims.num_images:
            raise BundleError(f"{path}: {len(self.images)} images for a model of {dims.num_images}: re-export the bundle")


# What a case file holds: one array per field.
_FIELDS = tuple(f.name for f in fields(GoldenCase))


def load_cases(bundle: Bundle) -> list[GoldenCase]:
    """Every golden case the bundle's manifest lists, in order."""
    cases = []
    for rel in bundle.manifest.golden:
        case = GoldenCase.load(bundle.path(rel))
        case.check(bundle.dims, bundle.path(rel))
        cases.append(case)
    return cases
