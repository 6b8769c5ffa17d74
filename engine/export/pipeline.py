"""The export chain for a whole model: for each part, build -> trace -> dedupe -> check -> save.

``export_model`` returns the cached graphs when their sidecars match and exports the rest.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import onnx
import torch

from ..config import MAX_COND_FRAMES
from ..graph_cache import (ExportedModel, ExportedPart, PartKey, part_key, part_path,
                           weights_digest)
from ..memory_layout import MemoryCapacity
from ..model.sam2 import SAM2Model
from .parts import OBJECTS, PART_NAMES, POINTS, build_part, half_model, part_specs
from .steps import (OPSET, RELATIVE, TOLERANCE, check_signature, check_with_onnxruntime,
                    dedupe_initializers, export_onnx, file_sha256)

# Dynamic sizes the graphs are traced at, and (different on purpose) checked at.
TRACE_SIZES = {OBJECTS: 2, POINTS: 3}
CHECK_SIZES = {OBJECTS: 3, POINTS: 2}


def export_part(model: SAM2Model, key: PartKey, path: Path, capacity: MemoryCapacity,
                check: bool = True) -> ExportedPart:
    """Export one part to ``path`` (always, no cache lookup) and write its sidecar.

    ``model`` computes in the precision of ``key`` (float32, or ``half_model`` for fp16); the
    check compares the graph with that same model in torch."""
    spec = part_specs(model.cfg, capacity)[key.part]
    module = build_part(model, key.part, capacity)
    example = spec.random_inputs(TRACE_SIZES, torch.Generator().manual_seed(1))
    export_onnx(module, spec, example, path)
    dedupe = dedupe_initializers(path)
    onnx.checker.check_model(str(path))
    check_signature(path, spec)
    info = {"torch": torch.__version__, "onnx": onnx.__version__,
            "dedupe": {"bytes_before": dedupe.bytes_before, "bytes_after": dedupe.bytes_after,
                       "merged_tensors": dedupe.merged},
            "inputs": [[t.name, list(t.shape), str(t.dtype)] for t in spec.inputs],
            "outputs": [[t.name, list(t.shape), str(t.dtype)] for t in spec.outputs]}
    if check:
        tol, rel = TOLERANCE[key.precision], RELATIVE[key.precision]
        report = check_with_onnxruntime(path, module, spec, CHECK_SIZES, tol, rel)
        held = [t.name for t in spec.outputs if not (rel and t.selected)]
        info["check"] = {"max_abs_diff": report.max_abs_diff, "sizes": report.sizes,
                         "tolerance": tol, "relative": rel, "held": held}
    part = ExportedPart(path, key, file_sha256(path), path.stat().st_size, info)
    part.save()
    return part


def export_model(model: SAM2Model, cache_dir: str | Path, precision: str = "fp32",
                 capacity: MemoryCapacity | None = None, parts: Iterable[str] = PART_NAMES,
                 check: bool = True, force: bool = False,
                 log: Callable[[str], None] | None = print) -> ExportedModel:
    """Export (or find in ``cache_dir``) every part of ``model``.

    precision: "fp32" (default; TensorRT <= 10 builds FP16 engines from it) or "fp16"
    (float16 weights and compute, float32 inputs and outputs: for TensorRT 11, whose
    strongly typed networks take their precision from the graph).
    capacity: memory slots of the memory attention (default: what a tracker keeping
    ``MAX_COND_FRAMES`` prompted frames per object selects, as the node and make_runtime).
    check: compare each new graph with torch in onnxruntime; raises ExportCheckError beyond
    the tolerance. force: export even when a valid cached graph exists.
    """
    capacity = capacity or MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
    device = next(model.parameters()).device
    model.eval().cpu()  # traced and checked on CPU (fp16 via CPU autocast); moved back after
    try:
        return _export_all(model, Path(cache_dir), precision, capacity, parts, check, force, log)
    finally:
        model.to(device)


def _export_all(model: SAM2Model, cache_dir: Path, precision: str, capacity: MemoryCapacity,
                parts: Iterable[str], check: bool, force: bool,
                log: Callable[[str], None] | None) -> ExportedModel:
    digest = weights_digest(model)
    source = half_model(model) if precision == "fp16" else model
    result = ExportedModel(capacity=capacity)
    for name in parts:
        key = part_key(model, name, precision, capacity, OPSET, digest)
        path = part_path(cache_dir, key)
        cached = None if force else ExportedPart.load_if_valid(path, key)
        if cached is not None:
            result.parts[name] = cached
            continue
        start = time.perf_counter()
        part = export_part(source, key, path, capacity, check)
        result.parts[name] = part
        if log:
            log(_describe(part, time.perf_counter() - start))
    return result


def _describe(part: ExportedPart, seconds: float) -> str:
    mb = part.size_bytes / 2**20
    text = f"exported {part.path.name}: {mb:.1f} MiB in {seconds:.1f} s"
    dedupe = part.info.get("dedupe", {})
    if dedupe.get("merged_tensors"):
        before = dedupe["bytes_before"] / 2**20
        text += f" (deduped {dedupe['merged_tensors']} constants, {before:.1f} MiB before)"
    check = part.info.get("check")
    if check:
        worst = max(check["max_abs_diff"][name] for name in check["held"])
        text += f"; onnxruntime vs torch max |diff| {worst:.2e}"
        text += f" (bound {check['tolerance']:g} x max(1, max |output|)"
        text += ", fp16 vs fp16 torch)" if check["relative"] else ")"
    return text
