"""One-job steps of the export chain: trace to ONNX, dedupe constants, check with onnxruntime.

Each step takes a path (and what it needs) and returns a path or a report, so a step can be
swapped or run alone (``python -m engine.export`` chains them; see ``pipeline``).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .parts import PartSpec

OPSET = 17
# Constants at least this large become shared initializers (the RoPE tables, mostly).
DEDUPE_MIN_ELEMENTS = 1024
# Bound on max |onnxruntime - torch| per output, times the output's largest magnitude when that
# is above 1 (float rounding grows with the values: trained weights give memory-attention
# outputs of magnitude ~10, random test weights ~1): fp32 1e-4 (the parity bound of tests/);
# fp16 (the fp16 graph vs the same fp16 model in torch) 1e-2, where outputs picked by a
# discrete choice are only reported (RELATIVE: the fp16 mode).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
RELATIVE = {"fp32": False, "fp16": True}


class ExportCheckError(RuntimeError):
    """An exported graph disagrees with torch beyond the tolerance."""


@dataclass(frozen=True)
class DedupeReport:
    """Bytes of the file before and after, and how many tensors were merged away."""

    bytes_before: int
    bytes_after: int
    merged: int


@dataclass(frozen=True)
class CheckReport:
    """Largest |onnxruntime - torch| per output, on random inputs at ``sizes``."""

    max_abs_diff: dict[str, float]
    sizes: dict[str, int]

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def export_onnx(module: nn.Module, spec: PartSpec, example: tuple[torch.Tensor, ...],
                path: Path) -> Path:
    """Trace ``module`` on ``example`` with the legacy (TorchScript) exporter -> ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape-only Python branches
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs],
                          dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
    return path


def _constants_to_initializers(graph: onnx.GraphProto, min_elements: int) -> None:
    """Move large ``Constant`` nodes into the initializer list (same names)."""
    keep = []
    for node in graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if attr is not None and attr.name == "value" and np.prod(attr.t.dims) >= min_elements:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of its subgraphs (If / Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in (*attr.graphs, *([attr.g] if attr.HasField("g") else [])):
                yield from _all_nodes(sub)


def _tensor_key(t: onnx.TensorProto) -> tuple:
    data = numpy_helper.to_array(t)
    return t.data_type, tuple(t.dims), hashlib.sha256(data.tobytes()).hexdigest()


def dedupe_initializers(path: Path, min_elements: int = DEDUPE_MIN_ELEMENTS) -> DedupeReport:
    """Store every distinct large tensor once: the tracer bakes a cached tensor (a RoPE cos/sin
    table) into the graph as a new constant at every use. Rewrites ``path`` in place."""
    before = path.stat().st_size
    model = onnx.load(str(path))
    graph = model.graph
    _constants_to_initializers(graph, min_elements)
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    unique = []
    for t in graph.initializer:
        key = _tensor_key(t) if np.prod(t.dims) >= min_elements else ("own", t.name)
        if key in first:
            rename[t.name] = first[key]
        else:
            first[key] = t.name
            unique.append(t)
    if rename:
        del graph.initializer[:]
        graph.initializer.extend(unique)
        for node in _all_nodes(graph):
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    onnx.save(model, str(path))
    return DedupeReport(before, path.stat().st_size, len(rename))


def check_signature(path: Path, spec: PartSpec) -> None:
    """The graph at ``path`` has exactly the inputs and outputs of ``spec``, in its order.

    The exporter prunes an input the traced module never reads: the spec must then leave it
    out (see ``parts.part_specs``), or every feed by name would fail. Raises ExportCheckError
    naming the difference."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    for kind, have, want in (
            ("inputs", [i.name for i in graph.input if i.name not in initializers],
             [t.name for t in spec.inputs]),
            ("outputs", [o.name for o in graph.output], [t.name for t in spec.outputs])):
        if have != want:
            pruned = [n for n in want if n not in have]
            raise ExportCheckError(
                f"{path.name}: graph {kind} {have} differ from the part's signature {want}"
                + (f" (the model does not read {pruned}: leave them out of the signature)"
                   if pruned and kind == "inputs" else ""))


def check_with_onnxruntime(path: Path, module: nn.Module, spec: PartSpec, sizes: dict[str, int],
                           tolerance: float, relative: bool = False, seed: int = 0) -> CheckReport:
    """Run ``path`` in onnxruntime (CPU) and ``module`` in torch on the same random inputs.

    Raises ExportCheckError naming the worst output when max |diff| exceeds ``tolerance``
    times the output's largest magnitude (at least 1). ``relative`` (fp16): outputs picked by
    a discrete choice (``TensorSpec.selected``) are reported only.
    """
    import onnxruntime as ort

    inputs = spec.random_inputs(sizes, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = module(*inputs)
    expected = (expected,) if isinstance(expected, torch.Tensor) else expected
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many as torch is allowed
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)})
    diffs, bounds = {}, {}
    for t, want, have in zip(spec.outputs, expected, got):
        if tuple(have.shape) != tuple(want.shape):
            raise ExportCheckError(f"{path.name}: output {t.name} has shape {have.shape} in "
                                   f"onnxruntime, {tuple(want.shape)} in torch")
        want = want.double().numpy()
        diffs[t.name] = float(np.abs(have.astype(np.float64) - want).max())
        bounds[t.name] = tolerance * max(1.0, float(np.abs(want).max()))
    report = CheckReport(diffs, dict(sizes))
    held = [t.name for t in spec.outputs if not (relative and t.selected)]
    bad = [name for name in held if diffs[name] > bounds[name]]
    if bad:
        name = max(bad, key=lambda n: diffs[n] / bounds[n])
        raise ExportCheckError(
            f"{path.name} disagrees with torch: output {name} max |diff| {diffs[name]:.3g} > "
            f"tolerance {bounds[name]:.3g} (sizes {sizes}; all outputs: "
            + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + ")")
    return report


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
