"""The small learned glue between SAM 2's heavy parts: what the tracker and every runtime need
besides the image encoder, prompt encoder + mask decoder, memory encoder and memory attention.

``TrackingGlue`` owns only small tensors (for a 256-d model, about 0.2 M parameters): the
temporal encodings of spatial memories and object pointers, the pointer projection and its
gating by presence, the no-memory and no-object embeddings, the mask-prompt downsampler, and
the mask upsampling. Its parameters carry the names of Meta's checkpoints: ``SAM2Model`` is a
``TrackingGlue`` plus the heavy parts (the same attributes, the same state-dict keys), and
``TrackingGlue.of(model)`` copies the glue out of a model, so that a graph or TensorRT runtime
keeps these tensors on its device and not the whole torch model.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .common import MLP
from .position_encoding import sine_position_encoding_1d

# Logits standing for a binary mask prompt used directly as output: sigmoid(+-10) ~ 1 / 0.
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0

# decode(feat, high_res, point_coords, point_labels, mask_logits, multimask) -> DecoderOutput
Decode = Callable[..., object]


class TrackingGlue(nn.Module):
    """The small learned tensors around the heavy parts, and the computations on them.

    Shapes: B objects, P pointers, S image size, h = S / 16, 256 = d_model, 64 = mem_dim.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._add_glue(cfg)

    def _add_glue(self, cfg: ModelConfig) -> None:
        """Register the glue's modules and parameters (``SAM2Model`` calls this after its heavy
        parts, so its parameters keep the order of Meta's model)."""
        d, m = cfg.d_model, cfg.mem_dim
        # Turns a binary mask prompt (image resolution) into decoder mask logits (stride 4).
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(d, d, d, 3) if cfg.use_mlp_for_obj_ptr_proj else nn.Linear(d, d)
        self.obj_ptr_tpos_proj = nn.Linear(d, m) if cfg.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        # Temporal encodings of spatial memories: index num_maskmem-1 is the prompted frame(s).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))  # in checkpoints, never read
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))

    @classmethod
    def of(cls, model: "TrackingGlue", device=None) -> "TrackingGlue":
        """A copy of ``model``'s glue (a ``SAM2Model`` or a glue), on ``device`` (default: the
        model's), in eval mode; the model itself is left as it is."""
        glue = cls(model.cfg)
        own = glue.state_dict()
        source = model.state_dict()
        glue.load_state_dict({k: source[k] for k in own}, strict=True)
        device = device if device is not None else model.no_mem_embed.device
        return glue.to(device=device, dtype=model.no_mem_embed.dtype).eval()

    # ------------------------------------------------------------ memory in
    def add_no_memory(self, feat: torch.Tensor) -> torch.Tensor:
        """Features of a frame conditioned on nothing (the first prompted frame): (B,256,h,w)."""
        return feat + self.no_mem_embed.view(1, -1, 1, 1)

    def spatial_memory_pos(self, pos: torch.Tensor, t_pos: int) -> torch.Tensor:
        """(B, 64, h, w) memory position encoding + temporal encoding -> (B, hw, 64).

        ``t_pos`` 0 is a prompted frame, 1..num_maskmem-1 the recent frames (1 = oldest)."""
        tpos = self.maskmem_tpos_enc[self.cfg.num_maskmem - t_pos - 1].view(1, 1, -1)
        return pos.flatten(2).transpose(1, 2) + tpos

    def pointer_pos(self, t_diff: torch.Tensor, max_ptrs: int) -> torch.Tensor:
        """Temporal encodings of object pointers: t_diff (P,) frames between pointer and current
        frame (signed in SAM 2.1) -> (P, 64). Zeros where the config adds none (SAM 2)."""
        m = self.cfg.mem_dim
        if not self.cfg.add_tpos_enc_to_obj_ptrs:
            return t_diff.new_zeros(t_diff.shape[0], m, dtype=torch.float32)
        dim = self.cfg.d_model if self.cfg.proj_tpos_enc_in_obj_ptrs else m
        enc = sine_position_encoding_1d(t_diff.float() / max(max_ptrs - 1, 1), dim)
        return self.obj_ptr_tpos_proj(enc)

    def pointer_tokens(self, ptrs: torch.Tensor,
                       ptr_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split pointers into memory tokens: ptrs (B, P, 256), ptr_pos (P, 64) ->
        tokens (B, P*4, 64) and their encodings (B, P*4, 64) (each pointer -> 4 tokens)."""
        b = ptrs.shape[0]
        return self.pointer_tokens_batched(ptrs, ptr_pos[None].expand(b, -1, -1))

    def pointer_tokens_batched(self, ptrs: torch.Tensor,
                               ptr_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pointer_tokens`` with encodings per object: ptrs (B, P, 256), ptr_pos (B, P, 64) ->
        tokens (B, P*4, 64) and their encodings (B, P*4, 64)."""
        b, p, c = ptrs.shape
        split = c // self.cfg.mem_dim
        tokens = ptrs.reshape(b, p * split, self.cfg.mem_dim)  # (B, P, 256) -> (B, 4P, 64)
        return tokens, ptr_pos.repeat_interleave(split, dim=1)  # (B, P, 64) -> (B, 4P, 64)

    # -------------------------------------------------------------- pointers
    def gate_pointer(self, ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Absent objects get the learned no-object pointer: ptr (B,256), present (B,1) in {0,1}."""
        if self.cfg.fixed_no_obj_ptr:
            ptr = present * ptr
        return ptr + (1 - present) * self.no_obj_ptr

    def object_pointer(self, token: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The decoder's object token (B, 256) -> its pointer (B, 256), gated by presence."""
        return self.gate_pointer(self.obj_ptr_proj(token), present.to(token.dtype))

    # ----------------------------------------------------------------- masks
    def upscale_masks(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, M, 4h, 4w) logits -> (B, M, S, S) at the model's input resolution."""
        s = self.cfg.image_size
        return F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)

    def decode_mask_prompt_with(self, decode: Decode, feat: torch.Tensor,
                                high_res: list[torch.Tensor], mask: torch.Tensor):
        """A binary mask prompt (B, 1, S, S) used directly as the output (SAM 2's behaviour);
        ``decode`` (a runtime's or the model's) still runs on it for the object pointer."""
        from .sam2 import DecoderOutput

        mask = mask.float()
        high = mask * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        s = high.shape[-1] // 4
        low = F.interpolate(high, size=(s, s), mode="bilinear", align_corners=False,
                            antialias=True)
        mask_in = self.mask_downsample(mask)  # (B, 1, S, S) -> (B, 1, 4h, 4w)
        ptr = decode(feat, high_res, None, None, mask_in, False).obj_ptr
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        obj_logits = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
        ious = mask.new_ones(mask.shape[0], 1)
        return DecoderOutput(low, ious, low, self.gate_pointer(ptr, present), obj_logits)
