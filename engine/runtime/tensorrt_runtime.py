"""TensorRT backend: one engine per exported part, all run on one CUDA stream of the runtime's.

Uses the name-based tensor API of TensorRT >= 8.6 (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``); every call's result is checked. Buffers are torch
CUDA tensors: inputs are made contiguous on the device and, with the outputs, kept referenced
by the runner until its next launch (and recorded on its stream), so no buffer is freed while
an asynchronous launch may still read or write it. The caller's stream waits for the engines'
stream before it touches the outputs.

Device memory: the execution contexts are created without scratch memory of their own and
share one buffer, sized to the largest part's need (the parts run one after another on the one
stream, so they never use it at the same time): the sum of five parts' scratch becomes the
largest one. The runtime keeps the engines and a copy of the small glue (``TrackingGlue``) on
the GPU, never the torch model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..graph_cache import ExportedModel
from ..model.glue import TrackingGlue
from .base import GraphRuntime
from .checks import InputSpec, check_feed
from .tensorrt_build import import_tensorrt, require_cuda


class EngineError(RuntimeError):
    """TensorRT refused a call; the message names the engine and the tensor."""


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.bool: torch.bool, trt.int8: torch.int8}
    for name, torch_dtype in (("int64", torch.int64), ("bfloat16", torch.bfloat16)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_dtype
    if dtype not in table:
        raise EngineError(f"unsupported TensorRT dtype {dtype}")
    return table[dtype]


class TensorRTPart:
    """One engine: checks inputs against it, launches it on ``stream``. Its context has no
    scratch memory of its own until ``use_scratch`` gives it the shared buffer."""

    def __init__(self, trt, runtime, path: Path, device: torch.device,
                 axis_names: dict[str, list], stream: torch.cuda.Stream) -> None:
        self.name = path.stem
        self.path = path
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path} (built by another "
                              "TensorRT version or for another GPU? delete it to rebuild)")
        self.context = _context_without_scratch(trt, self.engine)
        if self.context is None:
            raise EngineError(f"{self.name}: could not create an execution context "
                              "(out of GPU memory?)")
        self.stream = stream
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [self._input_spec(trt, n, axis_names.get(n)) for n in names if is_input[n]]
        self.outputs = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n))
                        for n in names if not is_input[n]}
        self._live: tuple = ()  # buffers of the latest launch

    @property
    def scratch_bytes(self) -> int:
        """Device scratch memory the engine needs at its largest shapes."""
        size = getattr(self.engine, "device_memory_size_v2", None)  # TensorRT >= 10.1
        return int(self.engine.device_memory_size if size is None else size)

    def use_scratch(self, buffer: torch.Tensor) -> None:
        """Point the context at ``buffer`` (uint8 on the device, at least ``scratch_bytes``)."""
        need = self.scratch_bytes
        if buffer.numel() < need:
            raise EngineError(f"{self.name}: scratch buffer of {buffer.numel()} bytes, the "
                              f"engine needs {need}")
        if need == 0:
            return
        if hasattr(self.context, "set_device_memory"):  # TensorRT >= 10.1
            self.context.set_device_memory(buffer.data_ptr(), buffer.numel())
        else:
            self.context.device_memory = buffer.data_ptr()

    def _input_spec(self, trt, name: str, axes: list | None) -> InputSpec:
        shape = tuple(self.engine.get_tensor_shape(name))
        lo, _opt, hi = self.engine.get_tensor_profile_shape(name, 0) if -1 in shape else (
            shape, shape, shape)
        dims = tuple(d if d >= 0 else (axes[i] if axes else None) for i, d in enumerate(shape))
        return InputSpec(name, _torch_dtype(trt, self.engine.get_tensor_dtype(name)), dims,
                         tuple(zip(tuple(lo), tuple(hi))))

    def run(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs by name -> outputs by name (torch CUDA tensors on ``device``)."""
        check_feed(self.name, self.inputs, feed)
        caller = torch.cuda.current_stream(self.device)
        inputs = {n: t.detach().to(self.device).contiguous() for n, t in feed.items()}
        for name, t in inputs.items():
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise EngineError(f"{self.name}: input {name}: failed to set shape to "
                                  f"{tuple(t.shape)}")
            self._address(name, t)
        outputs = {}
        for name, dtype in self.outputs.items():
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.name}: output {name}: shape {shape} unresolved")
            outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self._address(name, outputs[name])
        self.stream.wait_stream(caller)  # inputs are written on the caller's stream
        for t in (*inputs.values(), *outputs.values()):
            t.record_stream(self.stream)
        self._live = (inputs, outputs)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError(f"{self.name}: execute_async_v3 failed")
        caller.wait_stream(self.stream)
        return outputs

    def _address(self, name: str, t: torch.Tensor) -> None:
        if not self.context.set_tensor_address(name, t.data_ptr()):
            raise EngineError(f"{self.name}: tensor {name}: set_tensor_address failed")


class TensorRTRuntime(GraphRuntime):
    """SAM 2 on TensorRT engines (built by ``tensorrt_build``), glue a small copy on the GPU.

    ``engines``: the engine file of each part (an FP16 build may hold FP32 engines for parts
    that failed its check; see ``tensorrt_build.check_fp16_parts``)."""

    name = "tensorrt"

    def __init__(self, glue: TrackingGlue, exported: ExportedModel, engines: dict[str, Path],
                 device="cuda") -> None:
        trt = import_tensorrt()
        device = require_cuda(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(self._logger)
        self.stream = torch.cuda.Stream(device)
        with torch.cuda.device(device):
            parts = {name: TensorRTPart(trt, self._trt_runtime, Path(path), device,
                                        _axis_names(exported, name), self.stream)
                     for name, path in engines.items()}
        # one scratch buffer for every context: the parts run one at a time on ``stream``
        self.scratch = torch.empty(max((p.scratch_bytes for p in parts.values()), default=0),
                                   dtype=torch.uint8, device=device)
        for part in parts.values():
            part.use_scratch(self.scratch)
        super().__init__(glue.to(device).eval(), parts, exported.capacity, device)


def _context_without_scratch(trt, engine):
    """An execution context that allocates no device scratch memory of its own."""
    strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
    if strategy is not None:  # TensorRT >= 10
        return engine.create_execution_context(strategy.USER_MANAGED)
    return engine.create_execution_context_without_device_memory()


def _axis_names(exported: ExportedModel, part: str) -> dict[str, list]:
    """Dynamic axis names of a part's inputs ("objects", "points"), from its export sidecar."""
    return {name: shape for name, shape, _ in exported.parts[part].info.get("inputs", [])}
