"""TensorRT: engines built on the robot from a bundle's graphs, and the backend that runs them.

One module per idea; TensorRT and cuda-python are imported inside functions only, so every module
imports where they are absent (CI) and their library-free parts are plain functions tested there.

environment   which TensorRT / CUDA / GPU / L4T this is, TensorRT >= 10, and whether engines fit it
cuda_runtime  the CUDA runtime API through cuda-python: error codes as exceptions, memory, streams, events
cuda_graphs   capture of a stream's work into a CUDA graph, its replay and its release
buffers       the buffer plan sized from the manifest, the dynamic prompt axis, engine I/O checks
logger        TensorRT's log messages into Python logging (builder and backend)
precision     precision names, the per-graph precision plan, the layers an FP16 build keeps in FP32
inspector     what the engine inspector says TensorRT chose: layer counts per precision
build_record  what a build writes into the manifest
build_memory  whether a build fits in this machine's memory, from the graphs' weights (rdvla build, rdvla doctor)
builder       `rdvla build`: engines from the bundle's graphs on this GPU
backend       TensorRTBackend: the engines on device buffers, the core step replayed as CUDA graphs
"""
