"""onnxruntime backend: the exported parts in onnxruntime sessions (CPU or CUDA provider).

On CPU, tensors cross as numpy arrays (no copy for contiguous float32 inputs). With the CUDA
provider, every session runs on one CUDA stream of the runtime's own (``user_compute_stream``)
and inputs and outputs are bound in place to torch CUDA tensors (IOBinding), outputs allocated
by torch with the shapes the part's signature gives. The stream is ordered after the caller's
stream before a run and the caller's stream after it, and onnxruntime is told not to wait for
the device at the end of a run: no host synchronisation per part. A session whose CUDA provider
did not load (onnxruntime then falls back to the CPU without a word) is refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..graph_cache import ExportedModel
from ..graph_spec import PartSpec, part_specs
from ..model.glue import TrackingGlue
from .base import GraphRuntime
from .checks import InputSpec, check_feed

_ORT_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
               "tensor(int32)": torch.int32, "tensor(int64)": torch.int64,
               "tensor(bool)": torch.bool}
_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int32: np.int32,
              torch.int64: np.int64, torch.bool: np.bool_}
CUDA_PROVIDER = "CUDAExecutionProvider"
# onnxruntime >= 1.16: a run does not wait for the device at its end (outputs stay ordered on
# the session's stream, which the caller's stream waits for).
_NO_END_SYNC = "disable_synchronize_execution_providers"


def providers_for(device: torch.device, stream: "torch.cuda.Stream | None" = None) -> list:
    """onnxruntime execution providers for a torch device; raises if CUDA is not available.
    ``stream``: the CUDA stream the sessions run on (CUDA only)."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise ValueError(f"onnxruntime backend runs on cpu or cuda, got device {device}")
    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        raise RuntimeError(f"device {device} asked for, but this onnxruntime has no "
                           f"{CUDA_PROVIDER} (available: {available}); install "
                           "onnxruntime-gpu or use device cpu")
    options = {"device_id": device.index or 0}
    if stream is not None:
        options["user_compute_stream"] = str(stream.cuda_stream)
    return [(CUDA_PROVIDER, options), "CPUExecutionProvider"]


def check_session_providers(session, device: torch.device, part: str) -> None:
    """Refuse a session that silently fell back to the CPU: onnxruntime lists the CUDA provider
    as available even when its CUDA or cuDNN libraries fail to load, and then runs on the
    CPU. ``session.get_providers()`` says what the session really uses."""
    if device.type != "cuda":
        return
    used = session.get_providers()
    if CUDA_PROVIDER not in used:
        raise RuntimeError(
            f"{part}: device {device} asked for, but onnxruntime's {CUDA_PROVIDER} did not load "
            f"(the session runs on {used}): its CUDA or cuDNN libraries are missing or do not "
            "match this onnxruntime-gpu build (see onnxruntime's log above; the CUDA and cuDNN "
            "versions it needs are listed in its documentation), or use device cpu")


class OnnxPart:
    """One exported graph in an onnxruntime session; ``run`` checks every input first."""

    def __init__(self, path, spec: PartSpec, device: torch.device, threads: int = 0,
                 stream: "torch.cuda.Stream | None" = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: shape-merge notes are noise
        if threads:
            options.intra_op_num_threads = threads
        self.name = spec.name
        self.path = Path(path)
        self.spec = spec
        self.device = device
        self.stream = stream
        self.session = ort.InferenceSession(str(path), options,
                                            providers=providers_for(device, stream))
        check_session_providers(self.session, device, spec.name)
        self.inputs = [InputSpec(i.name, _ORT_DTYPES[i.type], tuple(i.shape))
                       for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run_options = None
        self._live: tuple = ()  # buffers of the latest asynchronous run
        if stream is not None:
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(_NO_END_SYNC, "1")

    def run(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs by name -> outputs by name, torch tensors on ``self.device``."""
        sizes = check_feed(self.name, self.inputs, feed)
        if self.device.type == "cpu":
            arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in feed.items()}
            outs = self.session.run(self.output_names, arrays)
            return {k: torch.from_numpy(v) for k, v in zip(self.output_names, outs)}
        return self._run_bound(feed, sizes)

    def _run_bound(self, feed: dict[str, torch.Tensor], sizes: dict[str, int]
                   ) -> dict[str, torch.Tensor]:
        """CUDA provider: bind torch tensors in place and run on ``self.stream``, ordered after
        the caller's stream; the caller's stream waits for it (no host synchronisation). The
        buffers are recorded on the stream and kept until the next run."""
        binding = self.session.io_binding()
        dev = self.device.index or 0
        caller = torch.cuda.current_stream(self.device)
        inputs = {k: v.detach().to(self.device).contiguous() for k, v in feed.items()}
        for name, t in inputs.items():
            binding.bind_input(name, "cuda", dev, _NP_DTYPES[t.dtype], tuple(t.shape),
                               t.data_ptr())
        outputs = {o.name: torch.empty(o.resolve(sizes), dtype=o.dtype, device=self.device)
                   for o in self.spec.outputs}
        for name, t in outputs.items():
            binding.bind_output(name, "cuda", dev, _NP_DTYPES[t.dtype], tuple(t.shape),
                                t.data_ptr())
        self.stream.wait_stream(caller)  # inputs are written on the caller's stream
        for t in (*inputs.values(), *outputs.values()):
            t.record_stream(self.stream)
        self._live = (inputs, outputs)
        self.session.run_with_iobinding(binding, self._run_options)
        caller.wait_stream(self.stream)
        return outputs


class OnnxRuntime(GraphRuntime):
    """SAM 2 on onnxruntime: every part an exported graph, the glue a small copy of the
    model's on ``device`` (the torch model itself is not kept)."""

    name = "onnxruntime"

    def __init__(self, glue: TrackingGlue, exported: ExportedModel, device="cpu",
                 threads: int = 0) -> None:
        device = torch.device(device)
        providers_for(device)  # refuses a device this onnxruntime cannot serve, first
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        specs = part_specs(glue.cfg, exported.capacity)
        parts = {name: OnnxPart(p.path, specs[name], device, threads, stream)
                 for name, p in exported.parts.items()}
        super().__init__(glue.to(device).eval(), parts, exported.capacity, device)
