"""torch backend: ``SAM2Model`` itself, eager, with optional torch.compile on a CUDA GPU.

``precision="bf16"`` runs the two parts that hold nearly all the arithmetic, the image encoder
and the memory attention, in bfloat16 (a bf16 copy of the model; inputs cast on the way in,
outputs back to fp32 on the way out). The decoder, the memory encoder and everything the tracker
keeps stay fp32. On CPUs with AVX512-BF16 or AMX, oneDNN's bf16 matrix products are 2-3x
faster than fp32 (see engine/benchmarks/results/speed_cpu.md for what it buys end to end, and
tests/test_runtimes.py for the mask agreement with fp32).

``compile=True`` (CUDA only) compiles the image encoder and a fixed-capacity memory attention
with mode "reduce-overhead" (CUDA graphs). The memory is padded to the fixed capacity (as for
the exported graphs), so the attention sees one shape per object count; outputs are cloned,
since a graph's output buffers are overwritten by its next replay and the tracker keeps
features across calls. On CPU it is refused: minutes of compilation for little gain.

On a CPU, eager memory attention takes the objects in groups whose projected keys stay within
``CPU_ATTENTION_GROUP_BYTES``: 4 at a time at 256 px, 2 at 384 px, one by one from 512 px up
(the reference runs objects one by one at every size). Past a few MB per call, the passes
around the attention kernel (projection biases, RoPE, ReLU, copies) run from main memory instead
of cache. Tiny, 8 objects, 1 thread, best of 3 on a 2-core AMD EPYC: 512 px 5.35 s in one call,
5.04 s one by one; 384 px 2.52 s in one call, 2.16 s in pairs; 256 px no clear difference. On
a GPU the whole batch goes in one call.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from ..backends import TABLE
from ..config import MAX_COND_FRAMES
from ..memory_layout import MemoryCapacity, pad_to_capacity
from ..model.sam2 import DecoderOutput, ImageFeatures, SAM2Model


# Largest projected key tensor (objects x memory tokens x d_model, fp32) one eager CPU memory
# attention call gets; measured on a 2-core AMD EPYC (see the module docstring).
CPU_ATTENTION_GROUP_BYTES = 9 * 2**20


class TorchRuntime:
    """SAM 2 in eager torch (the reference backend)."""

    name = "torch"

    PRECISIONS = TABLE["torch"].precisions

    def __init__(self, model: SAM2Model, device=None, compile: bool = False,
                 capacity: MemoryCapacity | None = None, precision: str = "fp32") -> None:
        device = torch.device(device) if device is not None else next(model.parameters()).device
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported by the torch runtime; "
                             f"use one of {', '.join(self.PRECISIONS)}")
        if compile and precision != "fp32":
            raise ValueError("compile=True runs fp32 only; use precision='fp32'")
        if compile and device.type != "cuda":
            raise ValueError(f"compile=True needs a CUDA device (torch.compile and CUDA graphs "
                             f"pay off on GPU only), got device {device}")
        self.model = model.to(device).eval()
        self.glue = self.model  # the model is a TrackingGlue: on this backend, the glue itself
        self.cfg = model.cfg
        self.device = device
        # Eager attention takes any memory length; only the compiled graph has a fixed capacity.
        self.capacity = (capacity or MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
                         if compile else None)
        self.precision = precision
        self._encode = self.model.encode_image
        self._attend_fixed = None
        # bf16: the heavy parts run on a bf16 copy (the fp32 model stays as it is for the rest)
        self._low = (copy.deepcopy(self.model).to(torch.bfloat16)
                     if precision == "bf16" else None)
        if compile:
            self._compile()

    def _compile(self) -> None:
        from ..model.fixed_attention import FixedCapacityAttention

        self._encode = torch.compile(self.model.encode_image, mode="reduce-overhead")
        self._attend_fixed = torch.compile(FixedCapacityAttention(self.model, self.capacity),
                                           mode="reduce-overhead")

    def encode_image(self, image: Tensor) -> ImageFeatures:
        if self._low is not None:
            f = self._low.encode_image(image.to(torch.bfloat16))
            return ImageFeatures(f.feat.float(), f.pos.float(), [t.float() for t in f.high_res])
        if self._attend_fixed is None:
            return self._encode(image)
        f = self._encode(image)
        return ImageFeatures(f.feat.clone(), f.pos.clone(), [t.clone() for t in f.high_res])

    def attend_memory(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                      num_obj_ptr_tokens: int, memory_valid: Tensor | None = None) -> Tensor:
        b = memory.shape[0]
        group = self.objects_per_attention_call(b, memory.shape[1])
        if group == b:
            return self._attend_memory(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                       memory_valid)
        parts = [self._attend_memory(feat[i:i + group], pos[i:i + group], memory[i:i + group],
                                     memory_pos[i:i + group], num_obj_ptr_tokens,
                                     None if memory_valid is None else memory_valid[i:i + group])
                 for i in range(0, b, group)]
        return torch.cat(parts)

    def objects_per_attention_call(self, objects: int, memory_tokens: int) -> int:
        """How many of ``objects`` one memory-attention call takes (see the module docstring)."""
        if self.device.type != "cpu" or self._attend_fixed is not None:
            return objects
        per_object = memory_tokens * self.cfg.d_model * 4  # projected keys, fp32
        return min(objects, max(1, CPU_ATTENTION_GROUP_BYTES // per_object))

    def _attend_memory(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                       num_obj_ptr_tokens: int, memory_valid: Tensor | None) -> Tensor:
        if self._low is not None:
            low = torch.bfloat16
            return self._low.attend_memory(feat.to(low), pos.to(low), memory.to(low),
                                           memory_pos.to(low), num_obj_ptr_tokens,
                                           memory_valid).float()
        if self._attend_fixed is None:
            return self.model.attend_memory(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                            memory_valid)
        memory, memory_pos, valid = pad_to_capacity(self.cfg, self.capacity, memory, memory_pos,
                                                    num_obj_ptr_tokens, memory_valid)
        return self._attend_fixed(feat, pos, memory, memory_pos, valid).clone()

    def decode(self, feat: Tensor, high_res: list[Tensor], point_coords: Tensor | None,
               point_labels: Tensor | None, mask_logits: Tensor | None,
               multimask: bool) -> DecoderOutput:
        return self.model.decode(feat, high_res, point_coords, point_labels, mask_logits,
                                 multimask)

    def decode_mask_prompt(self, feat: Tensor, high_res: list[Tensor],
                           mask: Tensor) -> DecoderOutput:
        return self.model.decode_mask_prompt(feat, high_res, mask)

    def encode_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                      object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode_memory(feat, mask_logits_high_res, object_score_logits)

    def encode_prompt_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                             object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode_prompt_memory(feat, mask_logits_high_res, object_score_logits)
