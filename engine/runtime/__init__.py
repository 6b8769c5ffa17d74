"""Runtimes: SAM 2's per-frame computations behind one interface (``Runtime``).

Backends: "torch" (eager; ``compile=True`` on CUDA), "onnxruntime" (CPU or CUDA provider),
"tensorrt" (FP16 by default). A runtime owns what its backend needs per frame: its graphs or
engines (or the torch model, on the torch backend) and the small learned glue (``runtime.glue``,
engine/model/glue.py). The graph runtimes run exported graphs (engine/graph_spec.py,
engine/graph_cache.py) and import nothing from the exporter; ``make_runtime``
(engine/runtime_factory.py) exports and builds on first use and picks the backend by name.
"""
from __future__ import annotations

from ..backends import BACKENDS
from .base import GraphRuntime, Runtime
from .checks import InputError, InputSpec
from .torch_runtime import TorchRuntime

__all__ = ["BACKENDS", "GraphRuntime", "InputError", "InputSpec", "Runtime", "TorchRuntime"]
