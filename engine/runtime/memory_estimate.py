"""How much GPU memory a graph runtime needs, estimated before anything is built.

``estimate_gpu_memory`` adds up, for a model, an image size, a precision, an object count and
a memory capacity (engine/memory_layout.py):

* weights: every part's weights once, the prompt encoder + mask decoder twice (two decoder
  engines), at the engine's precision;
* scratch: the largest part's working memory (the execution contexts share one buffer,
  engine/runtime/tensorrt_runtime.py). The memory attention at ``objects`` objects dominates
  at 1024 px: its keys and values (objects x M tokens x 256) and, unless TensorRT fuses the
  attention into one kernel, its score matrix (objects x h*w queries x M keys). ``low`` leaves
  the score matrix out (fused attention), ``high`` counts it once;
* frame tensors: the frame's features, the memory the tracker assembles and the graph runtime
  pads to capacity, the upscaled masks (float32, torch-allocated);
* banks: each object's stored memories (bfloat16) and pointers;
* overhead: the CUDA context and the libraries TensorRT and torch load (cuBLAS, cuDNN),
  ``CONTEXT_OVERHEAD`` (a round figure, not measured here).

These are estimates from the shapes (the activation terms count the large tensors only), meant
to say before a build of minutes whether a configuration can fit and which knob to turn;
``check_fits`` refuses only when even the low estimate exceeds the free memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import MAX_COND_FRAMES, ModelConfig
from ..errors import InputError
from ..memory_layout import MemoryCapacity

GIB = 2**30
CONTEXT_OVERHEAD = GIB  # CUDA context + cuBLAS/cuDNN/TensorRT libraries (round figure)
BYTES = {"fp16": 2, "fp32": 4, "bf16": 2}


class GPUMemoryError(InputError):
    """Settings that cannot fit the GPU's free memory; the message says which to lower."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "gpu_memory")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by kind (see the module docstring); ``low``/``high`` bracket the scratch."""

    weights: int
    scratch_low: int
    scratch_high: int
    frame: int
    banks: int
    overhead: int = CONTEXT_OVERHEAD

    @property
    def low(self) -> int:
        return self.weights + self.scratch_low + self.frame + self.banks + self.overhead

    @property
    def high(self) -> int:
        return self.weights + self.scratch_high + self.frame + self.banks + self.overhead

    def describe(self) -> str:
        g = lambda n: f"{n / GIB:.2f}"  # noqa: E731
        return (f"{g(self.low)}-{g(self.high)} GiB (weights {g(self.weights)}, scratch "
                f"{g(self.scratch_low)}-{g(self.scratch_high)}, frame tensors {g(self.frame)}, "
                f"memory banks {g(self.banks)}, CUDA context and libraries {g(self.overhead)})")


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per component of model ``cfg`` (built on the meta device: no memory)."""
    from ..model.sam2 import SAM2Model

    with torch.device("meta"):
        model = SAM2Model(cfg)
    heavy = ("image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "memory_encoder",
             "memory_attention")
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in heavy}
    counts["glue"] = sum(p.numel() for p in model.parameters()) - sum(counts.values())
    return counts


def estimate_gpu_memory(cfg: ModelConfig, objects: int, capacity: MemoryCapacity,
                        precision: str = "fp16",
                        max_cond_frames: int = MAX_COND_FRAMES) -> MemoryEstimate:
    """The GPU memory of a graph runtime of ``cfg`` (its image size) for ``objects`` objects
    and a memory ``capacity``, engines in ``precision`` (see the module docstring)."""
    e = BYTES[precision]
    s, h, d, m = cfg.image_size, cfg.feat_size, cfg.d_model, cfg.mem_dim
    hw = h * h
    counts = parameter_counts(cfg)
    decoder = counts["sam_prompt_encoder"] + counts["sam_mask_decoder"]
    weights = (sum(counts.values()) + decoder) * e + counts["glue"] * 4  # glue kept fp32
    tokens = capacity.tokens(cfg)
    # memory attention: queries and their MLP (2048 wide), keys and values projected to d
    attention = objects * (hw * (6 * d + cfg.memory_attention_ffn_dim) + 2 * tokens * d
                           + 2 * tokens * m) * e
    scores = objects * hw * tokens * e
    # image encoder: the first stage at stride 4 (qkv, MLP x4, residuals: ~12 copies of the
    # tokens) and the global attention of the third stage (heads x (S/16)^2 x (S/16)^2)
    c0 = cfg.hiera.embed_dim
    heads3 = int(cfg.hiera.num_heads * cfg.hiera.head_mul ** 2)
    image = ((s // 4) ** 2 * c0 * 12 + heads3 * hw * hw) * e
    memory_encoder = objects * s * s * 8 * e  # the mask and its first downsampling convs
    scratch_low = max(attention, image, memory_encoder)
    scratch_high = max(attention + scores, image, memory_encoder)
    features = (2 * d * hw + (d // 8) * 16 * hw + (d // 4) * 4 * hw) * 4
    assembled = 4 * objects * tokens * m * 4  # tokens + positions, then padded copies
    masks = 2 * objects * s * s * 4
    frame = objects * features + assembled + masks
    stored = cfg.num_maskmem + max_cond_frames  # recent + prompted memories, one spare each
    banks = objects * (stored * hw * m * 2 + (cfg.max_obj_ptrs + max_cond_frames) * d * 4)
    return MemoryEstimate(weights, scratch_low, scratch_high, frame, banks)


def check_fits(cfg: ModelConfig, objects: int, capacity: MemoryCapacity, precision: str,
               free_bytes: int, max_cond_frames: int = MAX_COND_FRAMES) -> MemoryEstimate:
    """The estimate, or GPUMemoryError when even its low end exceeds ``free_bytes``, naming
    the parameter to lower (objects first, then the prompted frames kept, then image size)."""
    est = estimate_gpu_memory(cfg, objects, capacity, precision, max_cond_frames)
    if est.low <= free_bytes:
        return est
    fits = [n for n in range(objects - 1, 0, -1)
            if estimate_gpu_memory(cfg, n, capacity, precision, max_cond_frames).low <= free_bytes]
    if fits:
        advice = f"lower max_objects to {fits[0]} or less"
    elif max_cond_frames > 1 and estimate_gpu_memory(
            cfg, 1, MemoryCapacity.for_bank(cfg, 1), precision, 1).low <= free_bytes:
        advice = "lower max_cond_frames (fewer prompted frames kept, a smaller memory capacity)"
    else:
        advice = "lower image_size (e.g. 512) or use a smaller model"
    raise GPUMemoryError(
        f"{cfg.name} at {cfg.image_size} px, {precision}, {objects} objects, memory capacity "
        f"{capacity.tag()} needs about {est.describe()}, but the GPU has "
        f"{free_bytes / GIB:.2f} GiB free: {advice}")


def budget_table(cfg: ModelConfig, objects: tuple[int, ...], cond_frames: tuple[int, ...],
                 precision: str = "fp16") -> str:
    """A Markdown table of ``estimate_gpu_memory`` (low-high GiB) for model ``cfg``: one row
    per number of prompted frames kept (the memory capacity), one column per object count."""
    head = "| prompted frames kept (capacity) | " + " | ".join(
        f"{n} object{'s' if n > 1 else ''}" for n in objects) + " |"
    rows = [head, "|---|" + "---|" * len(objects)]
    for k in cond_frames:
        cap = MemoryCapacity.for_bank(cfg, k)
        cells = []
        for n in objects:
            est = estimate_gpu_memory(cfg, n, cap, precision, k)
            cells.append(f"{est.low / GIB:.1f}-{est.high / GIB:.1f}")
        rows.append(f"| {k} ({cap.tag()}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)
