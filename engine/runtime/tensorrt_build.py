"""ONNX part -> TensorRT engine: a chain of one-job steps, and a cache of built engines.

Steps (each small and swappable): ``parse_onnx`` -> ``keep_fp32_layers`` (FP16 builds) ->
``make_config`` (precision, optimisation profile for the object batch and the clicks, timing
cache, progress monitor) ->
``build_serialized`` (progress shown while building) -> ``save_engine`` (engine + JSON sidecar).
``build_engine`` chains them behind the cache.

Cache: ``<cache_dir>/<model>-<S>px-<precision>-<gpu>-sm<cc>-trt<version>/<part>.engine`` with
``<part>.json`` beside it holding the ``EngineKey``. An engine whose sidecar differs from what
is asked for (another GPU, TensorRT version, precision, image size, ONNX graph, profile), or
has no sidecar at all, is never used silently: it is rebuilt (``on_mismatch="rebuild"``) or
refused with the differences listed (``on_mismatch="refuse"``). The key of a part holds only
what that part depends on: the image encoder (one image, no memory) is the same engine for
every object count and memory capacity; the object range enters the keys of the parts with an
object axis, the click range those of the decoders, the capacity that of the memory attention.

FP16 safeguards (TensorRT <= 10, which lowers an FP32 graph itself): normalisation layers
(ONNX LayerNormalization: every LayerNorm of the model, engine/model/common.py) and the click
Fourier features (sin/cos of 2*pi*(xy @ G) and the arithmetic of their angles, which lose
whole periods in FP16) are pinned to FP32 (``keep_fp32_layers``); and every FP16 engine is
checked against FP32 on real inputs after it is built (engine/runtime/precision_check.py), a
part that fails falling back to its FP32 engine (engine/runtime_factory.py says so in its log).

TensorRT >= 8.6 is required (``import_tensorrt`` refuses older): the runners use the name-based
tensor API, and the ONNX parser must turn LayerNormalization into one normalisation layer.
JetPack 5's TensorRT 8.5 is refused with that reason (README.md, "On a Jetson").

Precision: TensorRT <= 10 lowers an FP32 graph itself (``BuilderFlag.FP16``). TensorRT 11
builds strongly typed networks only, so FP16 there needs the FP16 export (``onnx_precision``).
``tensorrt`` is imported lazily: this module imports without it.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import MAX_OBJECTS
from ..graph_cache import ExportedPart
from ..graph_spec import OBJECTS, POINTS

ENGINE_FORMAT = 2  # 2: keys per part; FP32 layers pinned in FP16 engines
PRECISIONS = ("fp16", "fp32")
Log = Callable[[str], None]


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing."""


class EngineCacheError(RuntimeError):
    """A cached engine that does not match what was asked for (and may not be rebuilt)."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build the engine."""


MIN_TENSORRT = (8, 6)


def import_tensorrt():
    """The ``tensorrt`` module, or TensorRTUnavailable saying what is missing or too old."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailable(
            "backend 'tensorrt' needs NVIDIA TensorRT >= 8.6 (pip install tensorrt on a PC; "
            "JetPack 6's python3-libnvinfer on a Jetson, seen from a venv made with "
            f"--system-site-packages) and an NVIDIA GPU: {err}") from err
    version = tuple(int(p) for p in re.findall(r"\d+", trt.__version__)[:2])
    if version < MIN_TENSORRT:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} found; backend 'tensorrt' needs >= 8.6: older versions "
            "lack the name-based tensor API these runners use and parse no ONNX "
            "LayerNormalization (which keeps normalisations in FP32). JetPack 5 ships 8.5: use "
            "JetPack 6 (TensorRT 10), or the onnxruntime or torch backend")
    return trt


def require_cuda(device) -> torch.device:
    """A CUDA torch device, or TensorRTUnavailable."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise TensorRTUnavailable(f"TensorRT engines run on a CUDA GPU; device {device} asked "
                                  f"for, torch.cuda.is_available() = {torch.cuda.is_available()}")
    return device


# The optimisation profile's "opt" object batch: TensorRT tunes its kernels for this size and
# runs every size in [1, max_objects]. 1-4 objects are what people prompt most; 2 sits in the
# middle of that range (never above max_objects).
OPT_OBJECTS = 2


@dataclass(frozen=True)
class BuildOptions:
    """How engines are built: precision and the optimisation profile's ranges. Defaults:
    ``engine.config.MAX_OBJECTS`` objects (the node's default), up to 32 clicks."""

    precision: str = "fp16"
    max_objects: int = MAX_OBJECTS
    opt_objects: int | None = None  # None: OPT_OBJECTS, or max_objects when that is fewer
    max_points: int = 32
    opt_points: int = 2
    workspace_mib: int | None = None  # None: TensorRT's default (device memory)
    optimization_level: int | None = None  # None: TensorRT's default (3)

    def __post_init__(self) -> None:
        if self.opt_objects is None:
            object.__setattr__(self, "opt_objects", max(1, min(OPT_OBJECTS, self.max_objects)))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.opt_objects <= self.max_objects:
            raise ValueError(f"need 1 <= opt_objects <= max_objects, got {self}")
        if not 1 <= self.opt_points <= self.max_points:
            raise ValueError(f"need 1 <= opt_points <= max_points, got {self}")

    def axis_range(self, axis: str) -> tuple[int, int, int]:
        """(min, opt, max) of a dynamic axis of the exported graphs."""
        if axis == "objects":
            return 1, self.opt_objects, self.max_objects
        if axis == "points":
            return 1, self.opt_points, self.max_points
        raise ValueError(f"no optimisation range for dynamic axis {axis!r}")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a cached engine is used only for an equal key. The
    object and click ranges are 0 for a part without that axis (see ``part_axes``)."""

    part: str
    model: str
    image_size: int
    precision: str
    capacity: str
    onnx_sha256: str
    gpu: str
    compute_capability: str
    tensorrt: str
    max_objects: int
    max_points: int
    opt_objects: int = 0
    opt_points: int = 0
    format: int = ENGINE_FORMAT


def onnx_precision(trt, precision: str) -> str:
    """Which export an engine of ``precision`` is built from with this TensorRT."""
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        return "fp16"  # TensorRT 11+: strongly typed, the graph carries the precision
    return "fp32"


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability "8.7") of a CUDA device."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def part_axes(part: ExportedPart) -> set[str]:
    """The dynamic axes (``objects``, ``points``) of a part's inputs, from its sidecar."""
    return {d for _name, shape, _dtype in part.info["inputs"] for d in shape
            if isinstance(d, str)}


def engine_key(part: ExportedPart, options: BuildOptions, gpu: str, cc: str,
               trt_version: str) -> EngineKey:
    """The key of ``part``'s engine: only the ranges of the axes it has enter it."""
    k, axes = part.key, part_axes(part)
    objects = (options.max_objects, options.opt_objects) if OBJECTS in axes else (0, 0)
    points = (options.max_points, options.opt_points) if POINTS in axes else (0, 0)
    return EngineKey(k.part, k.model, k.image_size, options.precision, k.capacity, part.sha256,
                     gpu, cc, trt_version, objects[0], points[0], objects[1], points[1])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def engine_path(cache_dir: str | Path, key: EngineKey) -> Path:
    folder = (f"{key.model}-{key.image_size}px-{key.precision}-{_slug(key.gpu)}"
              f"-sm{key.compute_capability}-trt{key.tensorrt}")
    stem = f"{key.part}-{key.capacity}" if key.capacity else key.part
    return Path(cache_dir) / folder / f"{stem}.engine"


def engine_mismatch(path: Path, key: EngineKey) -> list[str]:
    """Why the engine at ``path`` cannot serve ``key`` (empty list: it can)."""
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        return [f"no engine file {path}"]
    if not sidecar.is_file():
        return [f"no metadata sidecar {sidecar.name}: a foreign or incomplete engine"]
    try:
        found = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        return [f"unreadable metadata {sidecar.name}: {err}"]
    wanted = asdict(key)
    return [f"{field}: engine has {found.get(field)!r}, wanted {value!r}"
            for field, value in wanted.items() if found.get(field) != value]


# ------------------------------------------------------------------------------- steps
def parse_onnx(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    """Step 1: the network of an ONNX file -> (network, parser); the parser must outlive it."""
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if int(trt.__version__.split(".")[0]) < 10 and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors))
    return network, parser


# Layers an FP16 engine keeps in FP32 (TensorRT <= 10 with BuilderFlag.FP16): normalisations
# (their variance overflows FP16) and the click Fourier features: sin/cos and the arithmetic
# that computes their angles, 2*pi*(2*xy/size - 1) @ G (angles of many periods lose whole
# radians in FP16), found by walking back from each sin/cos up to ANGLE_DEPTH producers.
ANGLE_DEPTH = 8
NORM_KINDS = ("LayerNormalization", "NORMALIZATION")
SINCOS_KINDS = ("Sin", "Cos", "SIN", "COS")

# (name, kind, input tensor names, output tensor names): an ONNX node (kind: its op type) or
# a TensorRT layer (kind: its layer type, or SIN / COS for a unary sin / cos).
Layer = tuple[str, str, list[str], list[str]]


def fp32_layers(layers: list[Layer]) -> set[str]:
    """Names of the layers an FP16 engine keeps in FP32; the same rule for ONNX nodes and
    TensorRT layers, so that tests check on the ONNX graph what the builder pins."""
    producer = {out: layer for layer in layers for out in layer[3]}
    pinned = {name for name, kind, _, _ in layers if kind in NORM_KINDS}
    for name, kind, inputs, _ in layers:
        if kind not in SINCOS_KINDS:
            continue
        pinned.add(name)
        frontier = list(inputs)
        for _ in range(ANGLE_DEPTH):
            parents = [producer[t] for t in frontier if t in producer]
            pinned.update(p[0] for p in parents)
            frontier = [t for p in parents for t in p[2]]
    return pinned


def onnx_layers(graph) -> list[Layer]:
    """The nodes of an ONNX graph as ``Layer`` tuples."""
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in graph.node]


def trt_layers(trt, network) -> list[Layer]:
    """The layers of a TensorRT network as ``Layer`` tuples (unary sin / cos by their op)."""
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type.name
        if layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer  # the subclass, to read its operation
            if layer.op in (trt.UnaryOperation.SIN, trt.UnaryOperation.COS):
                kind = layer.op.name
        inputs = [layer.get_input(j).name for j in range(layer.num_inputs)
                  if layer.get_input(j) is not None]
        out.append((layer.name, kind, inputs,
                    [layer.get_output(j).name for j in range(layer.num_outputs)]))
    return out


def keep_fp32_layers(trt, network, config) -> list[str]:
    """Step 1b (FP16, weakly typed networks): pin the ``fp32_layers`` to FP32 and make the
    builder obey; returns their names."""
    names = fp32_layers(trt_layers(trt, network))
    floats = (trt.float32, trt.float16)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in names or any(
                layer.get_output(j).dtype not in floats for j in range(layer.num_outputs)):
            continue  # shape and index layers keep their integer types
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        if hasattr(layer, "compute_precision"):  # INormalizationLayer
            layer.compute_precision = trt.float32
        pinned.append(layer.name)
    flag = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)
    flag = flag if flag is not None else getattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS")
    if pinned:
        config.set_flag(flag)
    return pinned


def profile_shapes(part: ExportedPart, options: BuildOptions) -> dict[str, tuple]:
    """(min, opt, max) shapes of every input with a dynamic axis, from the part's sidecar."""
    shapes = {}
    for name, shape, _dtype in part.info["inputs"]:
        if not any(isinstance(d, str) for d in shape):
            continue
        ranges = [options.axis_range(d) if isinstance(d, str) else (d, d, d) for d in shape]
        shapes[name] = tuple(tuple(r[i] for r in ranges) for i in range(3))
    return shapes


def make_config(trt, builder, options: BuildOptions, shapes: dict[str, tuple],
                timing_cache: bytes, strongly_typed: bool, progress=None):
    """Step 2: builder config: precision, one optimisation profile, timing cache, progress."""
    config = builder.create_builder_config()
    if options.precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 engines are the exact reference
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"invalid optimisation profile {shapes}")
    cache = config.create_timing_cache(timing_cache)
    if not config.set_timing_cache(cache, False):
        raise EngineBuildError("TensorRT refused the timing cache")
    if progress is not None:
        config.progress_monitor = progress
    return config


def progress_monitor(trt, label: str, log: Log):
    """A TensorRT >= 10 progress monitor logging the top-level build phases, else None."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                log(f"[tensorrt] {label}: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return _Progress()


def build_serialized(builder, network, config, label: str, log: Log,
                     heartbeat_s: float = 15.0) -> bytes:
    """Step 3: build; logs elapsed time every ``heartbeat_s`` (builds take minutes)."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            log(f"[tensorrt] building {label}: {time.monotonic() - start:.0f} s ...")

    log(f"[tensorrt] building {label} (this takes minutes; cached afterwards)")
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        data = builder.build_serialized_network(network, config)
    finally:
        done.set()
        thread.join()
    if data is None:
        raise EngineBuildError(f"TensorRT failed to build {label} (see its log above)")
    log(f"[tensorrt] built {label} in {time.monotonic() - start:.0f} s")
    return bytes(data)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_engine(path: Path, data: bytes, key: EngineKey) -> Path:
    """Step 4: engine then sidecar (written last: an engine without one is never used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
    _write_atomic(path, data)
    _write_atomic(path.with_suffix(".json"),
                  json.dumps(asdict(key), indent=2, sort_keys=True).encode())
    return path


# ------------------------------------------------------------------------------- chain
def build_engine(part: ExportedPart, cache_dir: str | Path, options: BuildOptions,
                 device="cuda", on_mismatch: str = "rebuild", log: Log = print) -> Path:
    """The engine of ``part`` for this GPU and TensorRT: cached, rebuilt or refused."""
    if on_mismatch not in ("rebuild", "refuse"):
        raise ValueError(f"on_mismatch must be 'rebuild' or 'refuse', got {on_mismatch!r}")
    trt = import_tensorrt()
    device = require_cuda(device)
    gpu, cc = gpu_identity(device)
    key = engine_key(part, options, gpu, cc, trt.__version__)
    path = engine_path(cache_dir, key)
    problems = engine_mismatch(path, key)
    if not problems:
        return path
    if path.exists() and on_mismatch == "refuse":
        raise EngineCacheError(f"engine {path} does not match this model/GPU/TensorRT and "
                               "rebuilding is off: " + "; ".join(problems))
    if path.exists():
        log(f"[tensorrt] rebuilding {path.name}: " + "; ".join(problems))
    with torch.cuda.device(device):
        data = _build(trt, part, options, key, Path(cache_dir), log)
    return save_engine(path, data, key)


def _build(trt, part: ExportedPart, options: BuildOptions, key: EngineKey, cache_dir: Path,
           log: Log) -> bytes:
    needed = onnx_precision(trt, options.precision)
    if part.key.precision != needed:
        raise EngineBuildError(
            f"a {options.precision} engine on TensorRT {trt.__version__} is built from the "
            f"{needed} export, got the {part.key.precision} export {part.path}")
    strongly_typed = part.key.precision == "fp16"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, part.path, strongly_typed)
    timing_path = cache_dir / f"timing-{_slug(key.gpu)}-trt{key.tensorrt}.cache"
    timing = timing_path.read_bytes() if timing_path.is_file() else b""
    label = f"{part.key.part} ({key.model}, {key.image_size}px, {key.precision})"
    config = make_config(trt, builder, options, profile_shapes(part, options), timing,
                         strongly_typed, progress_monitor(trt, label, log))
    if options.precision == "fp16" and not strongly_typed:
        pinned = keep_fp32_layers(trt, network, config)
        log(f"[tensorrt] {label}: {len(pinned)} layers kept in FP32 (normalisations, click "
            "Fourier features)")
    data = build_serialized(builder, network, config, label, log)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return data
