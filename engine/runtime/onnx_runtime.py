"""onnxruntime backend: the exported parts in onnxruntime sessions (CPU or CUDA provider).

On CPU, tensors cross as numpy arrays (no copy for contiguous float32 inputs). With the CUDA
provider, inputs and outputs are bound in place to torch CUDA tensors (IOBinding), outputs
allocated by torch with the shapes the part's signature gives.
"""
from __future__ import annotations

import numpy as np
import torch

from ..export.parts import PartSpec
from ..export.pipeline import ExportedModel
from ..model.sam2 import SAM2Model
from .base import GraphRuntime
from .checks import InputSpec, check_feed

_ORT_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
               "tensor(int32)": torch.int32, "tensor(int64)": torch.int64,
               "tensor(bool)": torch.bool}
_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int32: np.int32,
              torch.int64: np.int64, torch.bool: np.bool_}


def providers_for(device: torch.device) -> list:
    """onnxruntime execution providers for a torch device; raises if CUDA is not available."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise ValueError(f"onnxruntime backend runs on cpu or cuda, got device {device}")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(f"device {device} asked for, but this onnxruntime has no "
                           f"CUDAExecutionProvider (available: {available}); install "
                           "onnxruntime-gpu or use device cpu")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxPart:
    """One exported graph in an onnxruntime session; ``run`` checks every input first."""

    def __init__(self, path, spec: PartSpec, device: torch.device, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: shape-merge notes are noise
        if threads:
            options.intra_op_num_threads = threads
        self.name = spec.name
        self.spec = spec
        self.device = device
        self.session = ort.InferenceSession(str(path), options, providers=providers_for(device))
        self.inputs = [InputSpec(i.name, _ORT_DTYPES[i.type], tuple(i.shape))
                       for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

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
        """CUDA provider: bind torch tensors in place (they outlive the synchronous run)."""
        binding = self.session.io_binding()
        dev = self.device.index or 0
        inputs = {k: v.detach().to(self.device).contiguous() for k, v in feed.items()}
        for name, t in inputs.items():
            binding.bind_input(name, "cuda", dev, _NP_DTYPES[t.dtype], tuple(t.shape),
                               t.data_ptr())
        outputs = {o.name: torch.empty(o.resolve(sizes), dtype=o.dtype, device=self.device)
                   for o in self.spec.outputs}
        for name, t in outputs.items():
            binding.bind_output(name, "cuda", dev, _NP_DTYPES[t.dtype], tuple(t.shape),
                                t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written before ORT reads
        self.session.run_with_iobinding(binding)
        return outputs


class OnnxRuntime(GraphRuntime):
    """SAM 2 on onnxruntime: every part an exported graph, glue on ``model``."""

    name = "onnxruntime"

    def __init__(self, model: SAM2Model, exported: ExportedModel, device="cpu",
                 threads: int = 0) -> None:
        from ..export.parts import part_specs

        device = torch.device(device)
        specs = part_specs(model.cfg, exported.capacity)
        parts = {name: OnnxPart(p.path, specs[name], device, threads)
                 for name, p in exported.parts.items()}
        super().__init__(model.to(device).eval(), parts, exported.capacity, device)
