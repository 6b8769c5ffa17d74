"""``make_runtime``: the runtime of a backend, chosen by name, exporting and building on first use.

    runtime = make_runtime("onnxruntime", "sam2.1_hiera_tiny.pt", device="cpu",
                           model_name="sam2.1_hiera_tiny", image_size=512)
    tracker = StreamingTracker(runtime=runtime)

This module is where the exporter (engine/export/) and the runtimes (engine/runtime/) meet;
neither imports the other. The graph backends export the model to ONNX on first use and cache
the files (``cache_dir``, default ``$SAM2_ROS_CACHE`` or ``~/.cache/sam2_ros``); TensorRT
builds its engines from them. A graph runtime keeps its graphs or engines and a copy of the
small glue (engine/model/glue.py), not the torch model: the model given is read on the CPU
and left where it is.

FP16 (TensorRT's default, onnxruntime's ``precision="fp16"``): after the FP16 graphs or engines
exist, each part is checked against FP32 on real inputs (engine/runtime/precision_check.py);
a part beyond the tolerance runs in FP32, and the log says which and why. The verdict is
recorded next to the FP16 artefact, so the check runs once per build.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .backends import check_backend
from .checkpoint import load_sam2
from .config import MAX_COND_FRAMES, MAX_OBJECTS
from .graph_cache import ExportedModel, default_cache_dir
from .graph_spec import PART_NAMES
from .memory_layout import MemoryCapacity
from .model.glue import TrackingGlue
from .runtime import Runtime, TorchRuntime
from .runtime.torch_runtime import AUTOCAST_PARTS
from .runtime.precision_check import (FP16_TOLERANCE, PartCheck, check_fp16_parts,
                                      load_verdict, save_verdict, verdict_key)

__all__ = ["default_cache_dir", "load_sam2", "make_runtime"]

Log = Callable[[str], None]


def make_runtime(backend: str, model_or_checkpoint, device="cpu", *,
                 model_name: str | None = None, image_size: int | None = None,
                 cache_dir: str | Path | None = None, capacity: MemoryCapacity | None = None,
                 **opts) -> Runtime:
    """The runtime ``backend`` ("torch" | "onnxruntime" | "tensorrt") for a SAM2Model or a
    checkpoint path.

    opts by backend: torch: ``compile`` (CUDA only), ``precision`` ("fp32" | "bf16": image
    encoder and memory attention in bfloat16). onnxruntime: ``threads``, ``precision``
    ("fp32" | "fp16" graphs), ``check_fp16``, ``log``. tensorrt: ``precision`` ("fp16" |
    "fp32"), ``max_objects`` (default ``engine.config.MAX_OBJECTS``), ``max_points``,
    ``on_mismatch`` ("rebuild" | "refuse"), ``check_fp16``, ``check_memory``, ``log``.
    capacity: the fixed memory capacity of the graph backends (default: what a tracker with
    ``MAX_COND_FRAMES`` prompted frames per object can select: 4 + 6 spatial memories,
    4 + 15 pointers; the node, ``sam2-engine build`` and ``python -m engine.export`` use the
    same default).
    """
    check_backend(backend, opts.get("precision"))  # devices: each runtime says what it lacks
    model = load_sam2(model_or_checkpoint, model_name, image_size)
    capacity = capacity or MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if opts.get("log", print) is None:
        opts["log"] = _quiet
    builders = {"torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}
    return builders[backend](model, torch.device(device), cache_dir, capacity, **opts)


def _quiet(_line: str) -> None:
    """``log=None``: say nothing."""


def _torch(model, device, cache_dir, capacity, compile: bool = False,
           precision: str = "fp32", autocast_parts: tuple[str, ...] | None = None,
           tf32: bool | None = None) -> Runtime:
    return TorchRuntime(model, device, compile=compile, capacity=capacity, precision=precision,
                        autocast_parts=AUTOCAST_PARTS if autocast_parts is None
                        else autocast_parts, tf32=tf32)


def _onnxruntime(model, device, cache_dir, capacity, threads: int = 0, precision: str = "fp32",
                 check_fp16: bool = True, log: Log = print) -> Runtime:
    from .export import export_model
    from .runtime.onnx_runtime import OnnxRuntime

    def runtime(exported: ExportedModel) -> Runtime:
        return OnnxRuntime(TrackingGlue.of(model), exported, device, threads)

    exported = export_model(model, cache_dir / "onnx", precision=precision, capacity=capacity,
                            log=log)
    if precision != "fp16" or not check_fp16:
        return runtime(exported)
    fp32 = export_model(model, cache_dir / "onnx", precision="fp32", capacity=capacity, log=log)
    verdicts = {}
    for name, part in exported.parts.items():
        key = verdict_key(name, part.sha256, fp32.parts[name].sha256, FP16_TOLERANCE)
        verdicts[name] = (part.path.with_suffix(".fp16check.json"), key)
    checks = _checks(verdicts, lambda: check_fp16_parts(runtime(exported), runtime(fp32),
                                                        FP16_TOLERANCE), log, "onnxruntime")
    parts = {name: fp32.parts[name] if not checks[name].passed else part
             for name, part in exported.parts.items()}
    return runtime(ExportedModel(parts, exported.capacity))


def _checks(verdicts: dict[str, tuple[Path, dict]], run: Callable[[], dict[str, PartCheck]],
            log: Log, label: str) -> dict[str, PartCheck]:
    """The recorded FP16 verdict of every part, running the check (and recording it) when one
    is missing or stale; logs the parts that fall back to FP32."""
    checks = {name: load_verdict(path, key) for name, (path, key) in verdicts.items()}
    if any(c is None for c in checks.values()):
        log(f"[{label}] checking each FP16 part against FP32 on a probe frame ...")
        checks = run()
        for name, (path, key) in verdicts.items():
            save_verdict(path, key, checks[name])
        for check in checks.values():
            log(f"[{label}] {check.describe()}")
    for check in checks.values():
        if not check.passed:
            log(f"[{label}] {check.describe()}: {check.part} runs in FP32")
    return checks


def _tensorrt(model, device, cache_dir, capacity, precision: str = "fp16",
              max_objects: int = MAX_OBJECTS, max_points: int = 32, on_mismatch: str = "rebuild",
              check_fp16: bool = True, check_memory: bool = True, log: Log = print) -> Runtime:
    from .export import export_model
    from .runtime.memory_estimate import check_fits
    from .runtime.tensorrt_build import (BuildOptions, build_engine, import_tensorrt,
                                         onnx_precision, require_cuda)
    from .runtime.tensorrt_runtime import TensorRTRuntime

    trt = import_tensorrt()  # fail before a long export when TensorRT or the GPU is missing
    device = require_cuda(device)
    if check_memory:
        free, total = torch.cuda.mem_get_info(device)
        est = check_fits(model.cfg, max_objects, capacity, precision, free)
        log(f"[tensorrt] GPU memory estimate for {max_objects} objects, capacity "
            f"{capacity.tag()}: {est.describe()}; {free / 2**30:.2f} of {total / 2**30:.2f} "
            "GiB free")
        if est.high > free:
            log("[tensorrt] warning: the high estimate exceeds the free memory; if the build "
                "or the first frames run out of memory, lower max_objects")
    options = BuildOptions(precision=precision, max_objects=max_objects, max_points=max_points)

    def engines_for(opts: BuildOptions, parts=PART_NAMES):
        exported = export_model(model, cache_dir / "onnx", onnx_precision(trt, opts.precision),
                                capacity, parts, log=log)
        return exported, {name: build_engine(part, cache_dir / "tensorrt", opts, device,
                                             on_mismatch, log)
                          for name, part in exported.parts.items()}

    exported, engines = engines_for(options)
    if precision == "fp16" and check_fp16:
        verdicts = {name: (path.with_suffix(".fp16check.json"), _engine_identity(path))
                    for name, path in engines.items()}

        def run() -> dict[str, PartCheck]:
            candidate = TensorRTRuntime(TrackingGlue.of(model), exported, engines, device)
            try:
                return check_fp16_parts(candidate, TorchRuntime(model), FP16_TOLERANCE)
            finally:
                del candidate
                torch.cuda.empty_cache()

        checks = _checks(verdicts, run, log, "tensorrt")
        failing = [name for name, check in checks.items() if not check.passed]
        if failing:
            fp32 = BuildOptions(precision="fp32", max_objects=max_objects, max_points=max_points)
            engines.update(engines_for(fp32, failing)[1])
    return TensorRTRuntime(TrackingGlue.of(model), exported, engines, device)


def _engine_identity(path: Path) -> dict:
    """What an FP16 verdict of the engine at ``path`` depends on: its sidecar key (model, ONNX
    graph, GPU, TensorRT, profile), its size and time of writing, and the tolerance."""
    stat = path.stat()
    return {"engine": json.loads(path.with_suffix(".json").read_text()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "tolerance": FP16_TOLERANCE}
