"""Runtimes: SAM 2's per-frame computations behind one interface, chosen by one argument.

    runtime = make_runtime("onnxruntime", "sam2.1_hiera_tiny.pt", device="cpu",
                           model_name="sam2.1_hiera_tiny", image_size=512)
    feats = runtime.encode_image(image)          # same calls as SAM2Model

Backends: "torch" (eager; ``compile=True`` on CUDA), "onnxruntime" (CPU or CUDA provider),
"tensorrt" (FP16 by default; engines built and cached on first use). The graph backends export
the model to ONNX on first use and cache the files (``cache_dir``, default
``$SAM2_ROS_CACHE`` or ``~/.cache/sam2_ros``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..backends import BACKENDS, check_backend
from ..config import MAX_COND_FRAMES
from ..memory_layout import MemoryCapacity
from ..model.sam2 import SAM2Model
from .base import GraphRuntime, Runtime
from .checks import InputError, InputSpec
from .torch_runtime import TorchRuntime


__all__ = ["BACKENDS", "GraphRuntime", "InputError", "InputSpec", "Runtime", "TorchRuntime",
           "default_cache_dir", "load_sam2", "make_runtime"]


def default_cache_dir() -> Path:
    """Where exports and engines are cached: $SAM2_ROS_CACHE or ~/.cache/sam2_ros."""
    return Path(os.environ.get("SAM2_ROS_CACHE", Path.home() / ".cache" / "sam2_ros"))


def load_sam2(model_or_checkpoint, model_name: str | None = None,
              image_size: int | None = None) -> SAM2Model:
    """A SAM2Model as given, or loaded on CPU from a checkpoint path (model identified from
    the file when ``model_name`` is None)."""
    if isinstance(model_or_checkpoint, SAM2Model):
        if image_size is not None and image_size != model_or_checkpoint.cfg.image_size:
            raise ValueError(f"image_size {image_size} asked for, but the model given is built "
                             f"for {model_or_checkpoint.cfg.image_size}")
        return model_or_checkpoint
    from ..checkpoint import CheckpointError, identify, load_model, read_state_dict

    if model_name is None:
        model_name = identify(read_state_dict(model_or_checkpoint))
        if model_name is None:
            raise CheckpointError(f"{model_or_checkpoint}: not a known SAM 2 model; pass "
                                  "model_name=...")
    return load_model(model_or_checkpoint, model_name, image_size=image_size)


def make_runtime(backend: str, model_or_checkpoint, device="cpu", *,
                 model_name: str | None = None, image_size: int | None = None,
                 cache_dir: str | Path | None = None, capacity: MemoryCapacity | None = None,
                 **opts) -> Runtime:
    """The runtime ``backend`` ("torch" | "onnxruntime" | "tensorrt") for a SAM2Model or a
    checkpoint path.

    opts by backend: torch: ``compile`` (CUDA only), ``precision`` ("fp32" | "bf16": image
    encoder and memory attention in bfloat16). onnxruntime: ``threads``, ``precision``
    ("fp32" | "fp16" graphs), ``log``.
    tensorrt: ``precision`` ("fp16" | "fp32"), ``max_objects``, ``max_points``,
    ``on_mismatch`` ("rebuild" | "refuse"), ``log``. capacity: the fixed memory capacity of
    the graph backends (default: what a tracker with ``MAX_COND_FRAMES`` prompted frames per
    object can select: 4 + 6 spatial memories, 4 + 15 pointers).
    """
    check_backend(backend, opts.get("precision"))  # devices: each runtime says what it lacks
    model = load_sam2(model_or_checkpoint, model_name, image_size)
    capacity = capacity or MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    builders = {"torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}
    return builders[backend](model, torch.device(device), cache_dir, capacity, **opts)


def _torch(model, device, cache_dir, capacity, compile: bool = False,
           precision: str = "fp32") -> Runtime:
    return TorchRuntime(model, device, compile=compile, capacity=capacity, precision=precision)


def _onnxruntime(model, device, cache_dir, capacity, threads: int = 0, precision: str = "fp32",
                 log=print) -> Runtime:
    from ..export import export_model
    from .onnx_runtime import OnnxRuntime

    exported = export_model(model, cache_dir / "onnx", precision=precision, capacity=capacity,
                            log=log)
    return OnnxRuntime(model, exported, device, threads)


def _tensorrt(model, device, cache_dir, capacity, precision: str = "fp16",
              max_objects: int = 16, max_points: int = 32, on_mismatch: str = "rebuild",
              log=print) -> Runtime:
    from ..export import export_model
    from .tensorrt_build import (BuildOptions, build_engine, import_tensorrt, onnx_precision,
                                 require_cuda)
    from .tensorrt_runtime import TensorRTRuntime

    trt = import_tensorrt()  # fail before a long export when TensorRT or the GPU is missing
    require_cuda(device)
    options = BuildOptions(precision=precision, max_objects=max_objects, max_points=max_points)
    exported = export_model(model, cache_dir / "onnx", precision=onnx_precision(trt, precision),
                            capacity=capacity, log=log)
    engines = {name: build_engine(part, cache_dir / "tensorrt", options, device, on_mismatch, log)
               for name, part in exported.parts.items()}
    return TensorRTRuntime(model, exported, engines, device)
