"""The exported parts of SAM 2: one small ``nn.Module`` per graph, and its I/O as plain data.

Each part wraps ``SAM2Model`` so that its graph has static shapes (apart from the object batch
and the number of clicks), tensors in and out, and no Python-side choices at run time:

=====================  =====================================================================
part                   inputs -> outputs (B = ``objects``, N = ``points``, S = image size,
                       h = S / 16, M = fixed memory capacity in tokens)
=====================  =====================================================================
image_encoder          image (1,3,S,S) -> feat (1,256,h,h), pos (1,256,h,h),
                       high_res_s0 (1,32,4h,4h), high_res_s1 (1,64,2h,2h)
decoder_multimask      feat (B,256,h,h), high_res_s0, high_res_s1 (B,...), point_coords (B,N,2),
decoder_singlemask     point_labels (B,N) int32, mask_input (B,1,4h,4h), has_mask_input (B,)
                       bool -> low_res_multimasks (B,K,4h,4h), ious (B,K), low_res_masks
                       (B,1,4h,4h), obj_ptr (B,256), object_score_logits (B,1); K = 3 / 1
memory_encoder         feat (B,256,h,h), mask_logits_high_res (B,1,S,S), binarize (B,) bool,
                       object_score_logits (B,1) (SAM 2.1 only) -> maskmem_features,
                       maskmem_pos (B,64,h,h)
memory_attention       feat, pos (B,256,h,h), memory, memory_pos (B,M,64), memory_valid (B,M)
                       bool -> conditioned (B,256,h,h)
=====================  =====================================================================

Choices: ``multimask`` changes output shapes and the decoder's selection logic, so both
variants are exported (``decoder_multimask`` / ``decoder_singlemask``) and the runtime picks
one per call. ``has_mask_input`` selects, per object, the dense embedding of ``mask_input``
or the learned no-mask embedding (``torch.where``, both computed). ``binarize`` selects the
memory encoder's mask: sigmoid of the logits (tracked frames) or logits > 0 (prompted frames).

A graph declares exactly the inputs its model reads: SAM 2.0 has no no-object embedding, so
its memory encoder never reads ``object_score_logits`` and the exporter would prune that input;
its signature leaves it out (``part_specs``), and runtimes feed each graph only the inputs it
declares.

The wrappers mirror ``SAM2Model.decode`` / ``encode_memory`` / ``attend_memory`` line for line
where those take Python-side branches (mask or no mask, binarised or not); the tests compare
every exported part with the ``SAM2Model`` method itself.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..model.sam2 import NO_OBJ_SCORE, SAM2Model
from ..memory_layout import MemoryCapacity

OBJECTS, POINTS = "objects", "points"  # names of the dynamic axes
# Additive attention bias of an unused memory slot. Finite and within float16 range (unlike
# finfo(float32).min, which becomes -inf in FP16 engines and 0 * -inf = NaN); exp(-3e4) is
# exactly 0 in float32 and float16, so unused slots get weight 0.
MASKED_SCORE = -30000.0


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


class ImageEncoderPart(nn.Module):
    """image (1, 3, S, S) -> feat, pos, high_res_s0, high_res_s1."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        f = self.model.encode_image(image)
        return f.feat, f.pos, *f.high_res


class DecoderPart(nn.Module):
    """Prompt encoder + mask decoder, as ``SAM2Model.decode`` with a fixed ``multimask``."""

    def __init__(self, model: SAM2Model, multimask: bool) -> None:
        super().__init__()
        self.model = model
        self.multimask = multimask

    def forward(self, feat: Tensor, high_res_s0: Tensor, high_res_s1: Tensor,
                point_coords: Tensor, point_labels: Tensor, mask_input: Tensor,
                has_mask_input: Tensor) -> tuple[Tensor, ...]:
        model, pe = self.model, self.model.sam_prompt_encoder
        sparse, no_mask = pe(point_coords, point_labels, None)  # (B, N+1, C), (B, C, h, w)
        dense = torch.where(has_mask_input[:, None, None, None], pe.embed_mask(mask_input),
                            no_mask)
        # the Fourier position encodings stay float32 in an fp16 model (see half_model)
        sparse, dense_pe = sparse.to(feat.dtype), pe.get_dense_pe().to(feat.dtype)
        masks, ious, tokens, obj_logits = model.sam_mask_decoder(
            feat, dense_pe, sparse, dense, multimask_output=self.multimask,
            repeat_image=False, high_res_features=[high_res_s0, high_res_s1])
        present = obj_logits > 0  # (B, 1)
        masks = torch.where(present[:, :, None, None], masks, torch.full_like(masks, NO_OBJ_SCORE))
        best = ious.argmax(dim=1, keepdim=True)  # (B, 1)
        b, _, hh, ww = masks.shape
        low_res = masks.gather(1, best[:, :, None, None].expand(b, 1, hh, ww))  # (B, 1, 4h, 4w)
        if self.multimask and tokens.shape[1] > 1:
            token = tokens.gather(1, best[:, :, None].expand(b, 1, tokens.shape[2]))[:, 0]
        else:
            token = tokens[:, 0]  # (B, C)
        obj_ptr = model._gate_pointer(model.obj_ptr_proj(token), present.to(token.dtype))
        return masks, ious, low_res, obj_ptr, obj_logits


class MemoryEncoderPart(nn.Module):
    """``SAM2Model.encode_memory`` (binarize False) or ``encode_prompt_memory`` (True), per
    object. ``object_score_logits`` only for models that read it (``reads_presence_in_memory``)."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, feat: Tensor, mask_logits_high_res: Tensor, binarize: Tensor,
                object_score_logits: Tensor | None = None) -> tuple[Tensor, Tensor]:
        soft = torch.sigmoid(mask_logits_high_res)
        hard = (mask_logits_high_res > 0).to(soft.dtype)
        mask = torch.where(binarize[:, None, None, None], hard, soft)  # (B, 1, S, S)
        return self.model.encode_memory_from_probs(feat, mask, object_score_logits)


class MemoryAttentionPart(nn.Module):
    """``SAM2Model.attend_memory`` on the fixed-capacity layout (see ``engine.memory_layout``)."""

    def __init__(self, model: SAM2Model, capacity: MemoryCapacity) -> None:
        super().__init__()
        self.model = model
        self.num_ptr_tokens = capacity.pointer_tokens(model.cfg)

    def forward(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                memory_valid: Tensor) -> Tensor:
        attn = self.model.memory_attention
        b, c, h, w = feat.shape
        curr = feat.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, hw, C)
        curr_pos = pos.flatten(2).transpose(1, 2)
        x = curr + 0.1 * curr_pos if attn.pos_enc_at_input else curr
        bias = torch.where(memory_valid, 0.0, MASKED_SCORE).to(x.dtype)[:, None, None, :]
        for layer in attn.layers:  # (B, 1, 1, M) bias broadcast over heads and queries
            x = layer(x, curr_pos, memory, memory_pos, self.num_ptr_tokens, bias)
        out = attn.norm(x).transpose(1, 2).reshape(b, c, h, w)  # (B, hw, C) -> (B, C, h, w)
        return out


def half_model(model: SAM2Model) -> SAM2Model:
    """A float16 copy of ``model`` for the fp16 export, on CPU. The prompt encoder's random
    Fourier features stay float32: sin/cos of 2*pi*(coordinates @ G) lose whole periods in
    float16. (RoPE already rotates in float32.)"""
    half = copy.deepcopy(model).cpu().half().eval()
    half.sam_prompt_encoder.pe_layer.float()
    return half


class Float32IO(nn.Module):
    """Float inputs cast to the part's float dtype on the way in (except the inputs at
    ``keep``: click coordinates stay float32, float16 steps are 0.5 px near 1024), outputs to
    float32 on the way out: an fp16 graph with the same float32 interface as the fp32 one."""

    def __init__(self, part: nn.Module, dtype: torch.dtype, keep: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.part = part
        self.dtype = dtype
        self.keep = keep

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...] | Tensor:
        cast = [x.to(self.dtype) if x.is_floating_point() and i not in self.keep else x
                for i, x in enumerate(inputs)]
        out = self.part(*cast)
        return out.float() if isinstance(out, Tensor) else tuple(t.float() for t in out)


def build_part(model: SAM2Model, name: str, capacity: MemoryCapacity) -> nn.Module:
    """The wrapper module of part ``name`` (one of ``PART_NAMES``), in eval mode; for an fp16
    ``model`` (``half_model``) wrapped in ``Float32IO``."""
    builders = {
        "image_encoder": lambda: ImageEncoderPart(model),
        "decoder_multimask": lambda: DecoderPart(model, multimask=True),
        "decoder_singlemask": lambda: DecoderPart(model, multimask=False),
        "memory_encoder": lambda: MemoryEncoderPart(model),
        "memory_attention": lambda: MemoryAttentionPart(model, capacity),
    }
    if name not in builders:
        raise KeyError(f"unknown part {name!r}; parts: {', '.join(PART_NAMES)}")
    part = builders[name]().eval()
    dtype = model.no_mem_embed.dtype
    if dtype == torch.float32:
        return part
    keep = (3,) if name.startswith("decoder") else ()  # point_coords
    return Float32IO(part, dtype, keep).eval()
