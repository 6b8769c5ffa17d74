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

import torch
from torch import Tensor, nn

from ..graph_spec import (OBJECTS, PART_NAMES, POINTS, PartSpec, TensorSpec, part_specs,
                          reads_presence_in_memory)
from ..memory_layout import MemoryCapacity
from ..model.fixed_attention import FixedCapacityAttention
from ..model.sam2 import NO_OBJ_SCORE, SAM2Model

# the signatures live in engine/graph_spec.py (shared with the runtimes); named here too
__all__ = ["OBJECTS", "PART_NAMES", "POINTS", "PartSpec", "TensorSpec",
           "build_part", "half_model", "part_specs", "reads_presence_in_memory"]



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
        obj_ptr = model.object_pointer(token, present)
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
        "memory_attention": lambda: FixedCapacityAttention(model, capacity),
    }
    if name not in builders:
        raise KeyError(f"unknown part {name!r}; parts: {', '.join(PART_NAMES)}")
    part = builders[name]().eval()
    dtype = model.no_mem_embed.dtype
    if dtype == torch.float32:
        return part
    keep = (3,) if name.startswith("decoder") else ()  # point_coords
    return Float32IO(part, dtype, keep).eval()
