"""torch backend: ``SAM2Model`` itself, eager or compiled, on a CPU or a CUDA GPU.

Precisions (``precision``):

* ``fp32``: every product in IEEE fp32 (on CUDA, TF32 is switched off for our calls).
* ``tf32`` (CUDA): fp32 tensors, matrix products and convolutions on TensorFloat-32 cores.
* ``bf16`` / ``fp16``: the image encoder and the memory attention, which hold nearly all the
  arithmetic, run under ``torch.autocast`` in that dtype; their layer norms and softmax stay
  fp32 (autocast's own policy; the attention kernels accumulate in fp32) and RoPE rotates in
  fp32 (``engine.model.rope.rotate``). The mask decoder (with the Fourier click features and
  the presence head), the memory encoder (hand-written LayerNorm2d, the mask sigmoid) and every
  output the tracker keeps stay fp32 (TF32 products on CUDA). fp16 is CUDA only.
  ``autocast_parts`` narrows autocast to some of those two parts (``"image_encoder"``,
  ``"memory_attention"``) and ``tf32=False`` keeps the fp32 parts in IEEE fp32, to find which
  one moves the masks (``engine/benchmarks/gpu.py --ablate``); the defaults are both parts
  and TF32.

bf16 on a CPU is taken only where it is faster: the first bf16 runtime of a process measures
one bfloat16 autocast matrix product of the memory attention's shape against fp32
(``cpu_bf16_probe``, about half a second) and runs fp32 instead, saying so in ``self.note``
and a warning, unless bf16 is at least ``CPU_BF16_MIN_SPEEDUP`` times faster
(``$SAM2_ROS_CPU_BF16``: ``on`` skips the probe, ``off`` never runs bf16 on a CPU). Measured
figures per CPU: engine/benchmarks/results/cpu_bf16.md.

``compile=True`` (or a backend name of ``COMPILE_BACKENDS``) compiles the per-frame tracking
step, four static graphs: the image encoder,
the memory attention at a fixed memory layout (a bucket, below), the mask decoder without
prompts and the memory encoder (``torch.compile``, ``fullgraph``, no dynamic shapes; on CUDA
with mode "reduce-overhead", i.e. CUDA graphs; outputs are cloned, since a graph's output
buffers are overwritten by its next replay and the tracker keeps features across calls).
Prompted decodes and prompt memories stay eager: their shapes vary with the clicks. Tables
built on first use (RoPE, sine position encodings) are built eagerly before the first
compiled call, so nothing is recompiled once every shape has been seen; ``compiled_graphs()``
counts the graphs compiled so far in this process.

Memory buckets (compiled only): the memory attention's cost grows with the memories attended
to, so a compiled runtime does not pad every frame to the full capacity. ``memory_slots``
tells the tracker the layout to assemble: the spatial memories rounded up to the next bucket
of ``memory_layout.spatial_buckets`` (num_maskmem, then the capacity), the pointers to
``max_obj_ptrs`` or the capacity. A bank with one prompted frame attends to exactly its 7
memories once full (the full capacity of the node's default, 4 prompted frames, is 10:
43% more work); the frames that fill a new bank are padded to 7 rather than each compiling a
graph. Padded slots carry attention weight exactly 0 (see ``engine.memory_layout``), so a
bucket gives what the full capacity gives.

On a CPU, eager memory attention takes the objects in groups whose projected keys stay within
``CPU_ATTENTION_GROUP_BYTES``: 4 at a time at 256 px, 2 at 384 px, one by one from 512 px up
(the reference runs objects one by one at every size). Past a few MB per call, the passes
around the attention kernel (projection biases, RoPE, ReLU, copies) run from main memory instead
of cache. Tiny, 8 objects, 1 thread, best of 3 on a 2-core AMD EPYC: 512 px 5.35 s in one call,
5.04 s one by one; 384 px 2.52 s in one call, 2.16 s in pairs; 256 px no clear difference. On
a GPU the whole batch goes in one call.
"""
from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backends import TABLE, check_backend
from ..config import MAX_COND_FRAMES
from ..errors import InputError
from ..memory_layout import MemoryCapacity, bucket_for, pad_to_capacity
from ..model.rope import RoPEAttention
from ..model.sam2 import DecoderOutput, ImageFeatures, SAM2Model


# Largest projected key tensor (objects x memory tokens x d_model, fp32) one eager CPU memory
# attention call gets; measured on a 2-core AMD EPYC (see the module docstring).
CPU_ATTENTION_GROUP_BYTES = 9 * 2**20
# bf16 on a CPU must beat fp32 by this factor in ``cpu_bf16_probe`` to be used; the
# environment variable overrides the probe: "on" (always bf16), "off" (never), "auto".
CPU_BF16_MIN_SPEEDUP = 1.1
CPU_BF16_ENV = "SAM2_ROS_CPU_BF16"
# Graphs one compiled function may hold (object counts x memory buckets); torch's default (8)
# would silently fall back to eager past it.
RECOMPILE_LIMIT = 64
LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AUTOCAST_PARTS = ("image_encoder", "memory_attention")  # what bf16 / fp16 run under autocast
# torch.compile backends ``compile`` may name: "inductor" (what True means: generated kernels,
# CUDA graphs on a GPU) and "aot_eager" (graph capture and guards without code generation:
# minutes faster to compile, for checks on machines where inductor's compile is too slow).
COMPILE_BACKENDS = ("inductor", "aot_eager")


@dataclass(frozen=True)
class Bf16Probe:
    """Seconds per call of one (1024 x 256) @ (256 x 2048) product, fp32 and bf16 autocast."""

    threads: int
    fp32_s: float
    bf16_s: float

    @property
    def speedup(self) -> float:
        return self.fp32_s / self.bf16_s

    def describe(self) -> str:
        return (f"bf16 autocast matrix product {self.speedup:.2f}x fp32 "
                f"({self.bf16_s * 1e3:.2f} ms vs {self.fp32_s * 1e3:.2f} ms, "
                f"{self.threads} thread(s))")


_PROBES: dict[int, Bf16Probe] = {}


def cpu_bf16_probe(repeats: int = 7, calls: int = 3) -> Bf16Probe:
    """Time a memory-attention-sized linear layer on this CPU in fp32 and under bf16 autocast
    (best of ``repeats`` runs of ``calls`` calls, after a warm-up); cached per thread count."""
    threads = torch.get_num_threads()
    if threads in _PROBES:
        return _PROBES[threads]
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(1024, 256, generator=gen), torch.randn(2048, 256, generator=gen)

    def once(low: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=low):
            start = time.perf_counter()
            for _ in range(calls):
                F.linear(x, w)
            return (time.perf_counter() - start) / calls

    once(False), once(True)  # warm-up: oneDNN picks and builds its kernels
    # fp32 and bf16 alternate, best of each: a burst of load elsewhere hits both alike
    times = [(once(False), once(True)) for _ in range(repeats)]
    _PROBES[threads] = Bf16Probe(threads, min(t[0] for t in times), min(t[1] for t in times))
    return _PROBES[threads]


def compiled_graphs() -> int:
    """Graphs torch.compile has produced in this process so far (recompilations included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextmanager
def _tf32(device: torch.device, allowed: bool):
    """TF32 matrix products and convolutions on CUDA allowed or not, for the calls inside."""
    if device.type != "cuda":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the allow_tf32 flags are deprecated in newer torch
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _first(t: Tensor) -> Tensor:
    """One frame's features expanded over objects (stride 0) -> their first row, else t."""
    return t[:1] if t.shape[0] > 1 and t.stride(0) == 0 else t


class TorchRuntime:
    """SAM 2 in torch (the reference backend); see the module docstring."""

    name = "torch"

    PRECISIONS = TABLE["torch"].precisions

    def __init__(self, model: SAM2Model, device=None, compile: bool | str = False,
                 capacity: MemoryCapacity | None = None, precision: str = "fp32",
                 autocast_parts: tuple[str, ...] = AUTOCAST_PARTS,
                 tf32: bool | None = None) -> None:
        device = torch.device(device) if device is not None else next(model.parameters()).device
        if precision not in self.PRECISIONS:
            raise InputError(f"precision {precision!r} is not supported by the torch runtime; "
                             f"use one of {', '.join(self.PRECISIONS)}")
        check_backend("torch", precision, str(device))
        self.note = ""
        choice = os.environ.get(CPU_BF16_ENV, "auto") if precision == "bf16" else "auto"
        if choice not in ("auto", "on", "off"):
            raise InputError(f"${CPU_BF16_ENV} must be auto, on or off, got {choice!r}")
        if precision == "bf16" and device.type == "cpu" and choice != "on":
            if choice == "off":
                self.note = f"bf16 asked for, running fp32: ${CPU_BF16_ENV}=off"
            else:
                probe = cpu_bf16_probe()
                if probe.speedup < CPU_BF16_MIN_SPEEDUP:
                    self.note = (f"bf16 asked for, running fp32: on this CPU "
                                 f"{probe.describe()}, below the {CPU_BF16_MIN_SPEEDUP}x bf16 "
                                 f"needs to pay off (${CPU_BF16_ENV}=on forces bf16)")
            if self.note:
                warnings.warn(self.note, RuntimeWarning, stacklevel=2)
                precision = "fp32"
        self.model = model.to(device).eval()
        self.glue = self.model  # the model is a TrackingGlue: on this backend, the glue itself
        self.cfg = model.cfg
        self.device = device
        self.precision = precision
        if compile not in (False, True) and compile not in COMPILE_BACKENDS:
            raise InputError(f"compile must be True, False or a torch.compile backend of "
                             f"{', '.join(COMPILE_BACKENDS)}; got {compile!r}")
        self.compiled = "inductor" if compile is True else compile
        self._low = LOW_DTYPES.get(precision)
        unknown = set(autocast_parts) - set(AUTOCAST_PARTS)
        if unknown:
            raise InputError(f"autocast_parts: {', '.join(sorted(unknown))} unknown; use some "
                             f"of {', '.join(AUTOCAST_PARTS)}")
        self.autocast_parts = tuple(autocast_parts)
        # the fast settings use TF32 where they stay fp32 (``tf32=False``: not, for ablations)
        self._tf32 = precision != "fp32" and tf32 is not False
        self._cuda_graphs = self.compiled == "inductor" and device.type == "cuda"
        # Eager attention takes any memory length; the compiled one a bucket of the capacity.
        self.capacity = (capacity or MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
                         if compile else None)
        self._steps = None
        if compile:
            self._compile()

    # ------------------------------------------------------------------ precision
    def _amp(self, part: str):
        """Autocast for the heavy part ``part`` (a no-op in fp32 / tf32, or for a part left
        out of ``autocast_parts``)."""
        return torch.autocast(self.device.type, dtype=self._low or torch.bfloat16,
                              enabled=self._low is not None and part in self.autocast_parts)

    def _mode(self):
        return _tf32(self.device, self._tf32)

    # -------------------------------------------------------------------- compile
    def _compile(self) -> None:
        """Fill the lazily built tables eagerly, then compile the four per-frame steps."""
        import torch._dynamo.config as dynamo_config

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), RECOMPILE_LIMIT))
        s, hw = self.cfg.image_size, self.cfg.feat_size ** 2
        with torch.inference_mode(), self._mode():
            self._encode_eager(torch.zeros(1, 3, s, s, device=self.device))  # sine tables
            for module in self.model.memory_attention.modules():
                if isinstance(module, RoPEAttention):
                    module.rope_tables(hw, self.device)
        mode = "reduce-overhead" if self._cuda_graphs else None
        opts = {"fullgraph": True, "dynamic": False, "backend": self.compiled}
        if self.compiled == "inductor":
            opts["mode"] = mode
        # The steps close over the model and plain values only, so a second runtime on the
        # same model and precision finds the graphs already compiled.
        model, device_type = self.model, self.device.type
        amp_dtype = self._low or torch.bfloat16
        amp_enc = self._low is not None and "image_encoder" in self.autocast_parts
        amp_att = self._low is not None and "memory_attention" in self.autocast_parts

        def encode(image):
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_enc):
                f = model.encode_image(image)
            return f.feat.float(), f.pos.float(), [t.float() for t in f.high_res]

        def attend(feat, pos, memory, memory_pos, valid, num_obj_ptr_tokens: int):
            b = memory.shape[0]
            feat, pos = feat.expand(b, -1, -1, -1), pos.expand(b, -1, -1, -1)
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_att):
                out = model.attend_memory(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                          valid)
            return out.float()

        def decode(feat, high_res0, high_res1, multimask: bool):
            b = feat.shape[0]
            high_res = [high_res0.expand(b, -1, -1, -1), high_res1.expand(b, -1, -1, -1)]
            o = model.decode(feat, high_res, None, None, None, multimask)
            return (o.low_res_multimasks, o.ious, o.low_res_masks, o.obj_ptr,
                    o.object_score_logits)

        def encode_memory(feat, mask_logits_high_res, object_score_logits):
            feat = feat.expand(mask_logits_high_res.shape[0], -1, -1, -1)
            return model.encode_memory(feat, mask_logits_high_res, object_score_logits)

        self._steps = {name: torch.compile(fn, **opts) for name, fn in (
            ("encode", encode), ("attend", attend), ("decode", decode),
            ("encode_memory", encode_memory))}

    def _run_step(self, name: str, *args):
        """One compiled step; its outputs cloned out of the CUDA graph's buffers."""
        out = self._steps[name](*args)
        if not self._cuda_graphs:
            return out
        return torch.utils._pytree.tree_map(
            lambda t: t.clone() if isinstance(t, Tensor) else t, out)

    # ---------------------------------------------------------------- the interface
    def memory_slots(self, spatial: int, pointers: int) -> tuple[int, int] | None:
        """The (spatial, pointer) slots a memory of ``spatial`` memories and ``pointers``
        pointers is assembled into (compiled: its bucket), or None for exactly what it holds."""
        if self._steps is None:
            return None
        bucket = bucket_for(self.cfg, self.capacity, spatial, pointers)
        return bucket.spatial, bucket.pointers

    def _encode_eager(self, image: Tensor) -> ImageFeatures:
        with self._amp("image_encoder"):
            f = self.model.encode_image(image)
        if self._low is None:
            return f
        return ImageFeatures(f.feat.float(), f.pos.float(), [t.float() for t in f.high_res])

    def encode_image(self, image: Tensor) -> ImageFeatures:
        with self._mode():
            if self._steps is None:
                return self._encode_eager(image)
            if self._cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new frame: a new graph step
            feat, pos, high_res = self._run_step("encode", image)
            return ImageFeatures(feat, pos, high_res)

    def attend_memory(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                      num_obj_ptr_tokens: int, memory_valid: Tensor | None = None) -> Tensor:
        with self._mode():
            if self._steps is not None:
                return self._attend_compiled(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                             memory_valid)
            b = memory.shape[0]
            group = self.objects_per_attention_call(b, memory.shape[1])
            if group == b:
                return self._attend_eager(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                          memory_valid)
            parts = [self._attend_eager(feat[i:i + group], pos[i:i + group],
                                        memory[i:i + group], memory_pos[i:i + group],
                                        num_obj_ptr_tokens,
                                        None if memory_valid is None
                                        else memory_valid[i:i + group])
                     for i in range(0, b, group)]
            return torch.cat(parts)

    def objects_per_attention_call(self, objects: int, memory_tokens: int) -> int:
        """How many of ``objects`` one memory-attention call takes (see the module docstring)."""
        if self.device.type != "cpu" or self._steps is not None:
            return objects
        per_object = memory_tokens * self.cfg.d_model * 4  # projected keys, fp32
        return min(objects, max(1, CPU_ATTENTION_GROUP_BYTES // per_object))

    def _attend_eager(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                      num_obj_ptr_tokens: int, memory_valid: Tensor | None) -> Tensor:
        with self._amp("memory_attention"):
            out = self.model.attend_memory(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                           memory_valid)
        return out.float()

    def _attend_compiled(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                         num_obj_ptr_tokens: int, memory_valid: Tensor | None) -> Tensor:
        """Memory in the layout of its bucket (assembled so by the tracker, or padded here)."""
        hw, split = self.cfg.feat_size ** 2, self.cfg.d_model // self.cfg.mem_dim
        spatial = (memory.shape[1] - num_obj_ptr_tokens) // hw
        slots = bucket_for(self.cfg, self.capacity, spatial, -(-num_obj_ptr_tokens // split))
        if (spatial, num_obj_ptr_tokens) != (slots.spatial, slots.pointer_tokens(self.cfg)) \
                or memory.shape[1] != slots.tokens(self.cfg):
            memory, memory_pos, memory_valid = pad_to_capacity(
                self.cfg, slots, memory, memory_pos, num_obj_ptr_tokens, memory_valid)
            num_obj_ptr_tokens = slots.pointer_tokens(self.cfg)
        return self._run_step("attend", _first(feat), _first(pos), memory, memory_pos,
                              memory_valid, num_obj_ptr_tokens)

    def decode(self, feat: Tensor, high_res: list[Tensor], point_coords: Tensor | None,
               point_labels: Tensor | None, mask_logits: Tensor | None,
               multimask: bool) -> DecoderOutput:
        with self._mode():
            if self._steps is not None and point_coords is None and mask_logits is None:
                out = self._run_step("decode", feat, _first(high_res[0]), _first(high_res[1]),
                                     multimask)
                return DecoderOutput(*out)
            return self.model.decode(feat, high_res, point_coords, point_labels, mask_logits,
                                     multimask)

    def decode_mask_prompt(self, feat: Tensor, high_res: list[Tensor],
                           mask: Tensor) -> DecoderOutput:
        with self._mode():
            return self.model.decode_mask_prompt(feat, high_res, mask)

    def encode_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                      object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        with self._mode():
            if self._steps is not None:
                return tuple(self._run_step("encode_memory", _first(feat), mask_logits_high_res,
                                            object_score_logits))
            return self.model.encode_memory(feat, mask_logits_high_res, object_score_logits)

    def encode_prompt_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                             object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        with self._mode():
            return self.model.encode_prompt_memory(feat, mask_logits_high_res,
                                                   object_score_logits)
