"""Backends run a bundle's graphs: `base` (the interface), `registry` (every backend registers itself
there with its capabilities; `load_backend`), `pingpong`, `capture`, and one module (or package) per
backend: `onnxruntime`, `tensorrt/`, `torch_split`. Each imports its library lazily."""
