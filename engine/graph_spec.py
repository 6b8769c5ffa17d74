"""The exported graphs' signatures, as plain data shared by the exporter and the runtimes.

Each part of SAM 2 becomes one graph with static shapes apart from the object batch
(``objects``) and the number of clicks (``points``); ``part_specs`` gives every part's inputs
and outputs (names, dtypes, shapes) for a model and a memory capacity. The exporter
(engine/export/) traces graphs to these signatures; the runtimes (engine/runtime/) allocate
outputs, check feeds and set TensorRT profiles from them, without importing the exporter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ModelConfig
from .memory_layout import MemoryCapacity

OBJECTS, POINTS = "objects", "points"  # names of the dynamic axes


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype, shape (ints, or axis names for dynamic dims)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype = torch.float32
    # Picked by a discrete choice (argmax of IoUs, stability threshold): may flip between
    # precisions on near-ties, so fp16 checks report it without holding it to the tolerance.
    selected: bool = False

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape for the given dynamic sizes, e.g. {"objects": 3}."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class PartSpec:
    """A part's graph signature."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The exporter's ``dynamic_axes``: {tensor: {axis: axis name}}."""
        axes = {}
        for t in (*self.inputs, *self.outputs):
            named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if named:
                axes[t.name] = named
        return axes

    def random_inputs(self, sizes: dict[str, int], gen: torch.Generator) -> tuple[Tensor, ...]:
        """Random inputs of every dtype: normal floats, labels in -1..3, random flags."""
        out = []
        for t in self.inputs:
            shape = t.resolve(sizes)
            if t.dtype == torch.bool:
                out.append(torch.rand(shape, generator=gen) > 0.5)
            elif t.dtype == torch.int32:
                out.append(torch.randint(-1, 4, shape, generator=gen, dtype=torch.int32))
            else:
                out.append(torch.randn(shape, generator=gen) * 2)
        if self.name == "memory_attention":  # every object keeps at least one valid token
            out[-1][:, 0] = True
        return tuple(out)


def part_specs(cfg: ModelConfig, capacity: MemoryCapacity) -> dict[str, PartSpec]:
    """Every part's signature for model ``cfg`` (image size included) and memory ``capacity``."""
    s, h, d, m = cfg.image_size, cfg.feat_size, cfg.d_model, cfg.mem_dim
    b, n = OBJECTS, POINTS
    f32, i32, flag = torch.float32, torch.int32, torch.bool
    feat = TensorSpec("feat", (b, d, h, h))
    high_res = (TensorSpec("high_res_s0", (b, d // 8, 4 * h, 4 * h)),
                TensorSpec("high_res_s1", (b, d // 4, 2 * h, 2 * h)))
    specs = [
        PartSpec("image_encoder", (TensorSpec("image", (1, 3, s, s)),),
                 (TensorSpec("feat", (1, d, h, h)), TensorSpec("pos", (1, d, h, h)),
                  *(TensorSpec(t.name, (1, *t.shape[1:])) for t in high_res))),
        PartSpec("memory_encoder",
                 (feat, TensorSpec("mask_logits_high_res", (b, 1, s, s)),
                  TensorSpec("binarize", (b,), flag),
                  *((TensorSpec("object_score_logits", (b, 1)),)
                    if reads_presence_in_memory(cfg) else ())),
                 (TensorSpec("maskmem_features", (b, m, h, h)),
                  TensorSpec("maskmem_pos", (b, m, h, h)))),
        PartSpec("memory_attention",
                 (feat, TensorSpec("pos", (b, d, h, h)),
                  TensorSpec("memory", (b, capacity.tokens(cfg), m)),
                  TensorSpec("memory_pos", (b, capacity.tokens(cfg), m)),
                  TensorSpec("memory_valid", (b, capacity.tokens(cfg)), flag)),
                 (TensorSpec("conditioned", (b, d, h, h)),)),
    ]
    for name, k in (("decoder_multimask", 3), ("decoder_singlemask", 1)):
        specs.append(PartSpec(
            name,
            (feat, *high_res, TensorSpec("point_coords", (b, n, 2), f32),
             TensorSpec("point_labels", (b, n), i32),
             TensorSpec("mask_input", (b, 1, 4 * h, 4 * h)),
             TensorSpec("has_mask_input", (b,), flag)),
            (TensorSpec("low_res_multimasks", (b, k, 4 * h, 4 * h), selected=k == 1),
             TensorSpec("ious", (b, k), selected=k == 1),
             TensorSpec("low_res_masks", (b, 1, 4 * h, 4 * h), selected=True),
             TensorSpec("obj_ptr", (b, d), selected=k > 1),
             TensorSpec("object_score_logits", (b, 1)))))
    return {p.name: p for p in specs}


def reads_presence_in_memory(cfg: ModelConfig) -> bool:
    """Whether the memory encoder reads the presence logits: only models with a no-object
    embedding (SAM 2.1) add it to the memories of absent objects."""
    return cfg.no_obj_embed_spatial


PART_NAMES = ("image_encoder", "decoder_multimask", "decoder_singlemask", "memory_encoder",
              "memory_attention")
