"""The SAM 2 model: every learned part, named as in Meta's checkpoints, and nothing stateful.

``SAM2Model`` holds the components (image encoder, prompt encoder, mask decoder, memory
encoder, memory attention) and the small learned tensors around them. Its methods are the
per-frame computations the tracker chains together; which memories to attend to, and what to
keep, is the tracker's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .common import MLP
from .image_encoder import build_image_encoder
from .mask_decoder import build_mask_decoder
from .memory_attention import build_memory_attention
from .memory_encoder import build_memory_encoder
from .position_encoding import sine_position_encoding_1d
from .prompt_encoder import build_prompt_encoder

# Logit given to every pixel of an object judged absent (as in SAM 2).
NO_OBJ_SCORE = -1024.0
# Logits standing for a binary mask prompt used directly as output: sigmoid(+-10) ~ 1 / 0.
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0


@dataclass
class ImageFeatures:
    """One frame's features, batch B (usually 1, expanded per object later).

    feat:    (B, 256, h, w)     lowest resolution (stride 16), input to memory attention
    pos:     (B, 256, h, w)     its sine position encoding
    high_res: [(B, 32, 4h, 4w), (B, 64, 2h, 2w)] strides 4 and 8, already projected by the
             decoder's conv_s0 / conv_s1
    """

    feat: torch.Tensor
    pos: torch.Tensor
    high_res: list[torch.Tensor]

    def expand(self, n: int) -> "ImageFeatures":
        """The same features repeated for ``n`` objects (views, no copy)."""
        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.expand(n, *t.shape[1:])
        return ImageFeatures(rep(self.feat), rep(self.pos), [rep(t) for t in self.high_res])


@dataclass
class DecoderOutput:
    """The mask decoder's result for B objects.

    low_res_multimasks: (B, M, 4h, 4w) logits, M = 3 (multimask) or 1
    ious:               (B, M) predicted IoU of each candidate
    low_res_masks:      (B, 1, 4h, 4w) logits of the chosen candidate (highest IoU)
    obj_ptr:            (B, 256) object pointer of the chosen candidate
    object_score_logits:(B, 1) presence logit
    """

    low_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor

    @property
    def best_iou(self) -> torch.Tensor:
        """(B,) predicted IoU of the chosen mask."""
        return self.ious.max(dim=1).values


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1 with the parameter names of Meta's checkpoints."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, m = cfg.d_model, cfg.mem_dim
        self.image_encoder = build_image_encoder(cfg)
        self.sam_prompt_encoder = build_prompt_encoder(cfg)
        self.sam_mask_decoder = build_mask_decoder(cfg)
        self.memory_encoder = build_memory_encoder(cfg)
        self.memory_attention = build_memory_attention(cfg)
        # Turns a binary mask prompt (image resolution) into decoder mask logits (stride 4).
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(d, d, d, 3) if cfg.use_mlp_for_obj_ptr_proj else nn.Linear(d, d)
        self.obj_ptr_tpos_proj = nn.Linear(d, m) if cfg.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        # Temporal encodings of spatial memories: index num_maskmem-1 is the prompted frame(s).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        self.no_obj_embed_spatial = (nn.Parameter(torch.zeros(1, m))
                                     if cfg.no_obj_embed_spatial else None)

    # ----------------------------------------------------------------- image
    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        """image (B, 3, S, S) normalised RGB at cfg.image_size -> its features."""
        features, pos = self.image_encoder(image)
        dec = self.sam_mask_decoder
        high_res = [dec.conv_s0(features[0]), dec.conv_s1(features[1])]
        return ImageFeatures(feat=features[-1], pos=pos[-1], high_res=high_res)

    # ------------------------------------------------------------ memory in
    def add_no_memory(self, feat: torch.Tensor) -> torch.Tensor:
        """Features of a frame conditioned on nothing (the first prompted frame): (B,256,h,w)."""
        return feat + self.no_mem_embed.view(1, -1, 1, 1)

    def attend_memory(self, feat: torch.Tensor, pos: torch.Tensor, memory: torch.Tensor,
                      memory_pos: torch.Tensor, num_obj_ptr_tokens: int,
                      memory_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Condition frame features on the memory bank.

        feat, pos: (B, 256, h, w); memory, memory_pos: (B, M, 64) with the object-pointer tokens
        last; memory_valid: optional (B, M) bool. Returns (B, 256, h, w).
        """
        b, c, h, w = feat.shape
        # (B, C, h, w) -> (B, hw, C)
        curr = feat.flatten(2).transpose(1, 2)
        curr_pos = pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(curr, curr_pos, memory, memory_pos,
                                    num_obj_ptr_tokens=num_obj_ptr_tokens,
                                    memory_valid=memory_valid)
        # (B, hw, C) -> (B, C, h, w)
        return out.transpose(1, 2).reshape(b, c, h, w)

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

    def pointer_tokens(self, ptrs: torch.Tensor, ptr_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split pointers into memory tokens: ptrs (B, P, 256), ptr_pos (P, 64) ->
        tokens (B, P*4, 64) and their encodings (B, P*4, 64) (each pointer -> 4 tokens)."""
        b, p, c = ptrs.shape
        split = c // self.cfg.mem_dim
        tokens = ptrs.reshape(b, p * split, self.cfg.mem_dim)  # (B, P, 256) -> (B, 4P, 64)
        pos = ptr_pos.repeat_interleave(split, dim=0)  # (P, 64) -> (4P, 64)
        return tokens, pos[None].expand(b, -1, -1)

    # -------------------------------------------------------------- decoder
    def decode(self, feat: torch.Tensor, high_res: list[torch.Tensor],
               point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
               mask_logits: torch.Tensor | None, multimask: bool) -> DecoderOutput:
        """Prompt encoder + mask decoder on (memory-conditioned) features.

        feat (B,256,h,w); point_coords (B,N,2) in model-input pixels and point_labels (B,N)
        (1 positive, 0 negative, 2/3 box corners, -1 padding), or None for no points;
        mask_logits (B,1,4h,4w) dense mask prompt or None.
        """
        return self.decode_candidates(feat, high_res, point_coords, point_labels, mask_logits,
                                      multimask)[0]

    def decode_candidates(self, feat: torch.Tensor, high_res: list[torch.Tensor],
                          point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                          mask_logits: torch.Tensor | None,
                          multimask: bool) -> tuple[DecoderOutput, torch.Tensor, torch.Tensor]:
        """``decode``, plus what training needs: every candidate's raw logits (B, M, 4h, 4w),
        before absent objects are gated to "nothing here", and the chosen candidate (B,)."""
        b = feat.shape[0]
        if point_coords is None:
            point_coords = feat.new_zeros(b, 1, 2)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=feat.device)
        sparse, dense = self.sam_prompt_encoder(point_coords, point_labels, mask_logits)
        raw, ious, tokens, obj_logits = self.sam_mask_decoder(
            feat, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
            multimask_output=multimask, repeat_image=False, high_res_features=high_res)
        present = obj_logits > 0  # (B, 1)
        # An absent object's masks are hard-set to "nothing here".
        masks = torch.where(present[:, :, None, None], raw, torch.full_like(raw, NO_OBJ_SCORE))
        best = ious.argmax(dim=1)  # (B,)
        rows = torch.arange(b, device=feat.device)
        low_res = masks[rows, best].unsqueeze(1)
        token = tokens[rows, best] if multimask and tokens.shape[1] > 1 else tokens[:, 0]
        obj_ptr = self._gate_pointer(self.obj_ptr_proj(token), present.to(token.dtype))
        return DecoderOutput(masks, ious, low_res, obj_ptr, obj_logits), raw, best

    def decode_mask_prompt(self, feat: torch.Tensor, high_res: list[torch.Tensor],
                           mask: torch.Tensor) -> DecoderOutput:
        """A binary mask prompt (B, 1, S, S) used directly as the output (SAM 2's behaviour);
        the decoder still runs on it to produce the object pointer."""
        mask = mask.float()
        high = mask * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        s = high.shape[-1] // 4
        low = F.interpolate(high, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        ptr = self.decode(feat, high_res, None, None, self.mask_downsample(mask), False).obj_ptr
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        obj_logits = MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS
        ious = mask.new_ones(mask.shape[0], 1)
        return DecoderOutput(low, ious, low, self._gate_pointer(ptr, present), obj_logits)

    def _gate_pointer(self, ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Absent objects get the learned no-object pointer: ptr (B,256), present (B,1) in {0,1}."""
        if self.cfg.fixed_no_obj_ptr:
            ptr = present * ptr
        return ptr + (1 - present) * self.no_obj_ptr

    def upscale_masks(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, M, 4h, 4w) logits -> (B, M, S, S) at the model's input resolution."""
        s = self.cfg.image_size
        return F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)

    # ----------------------------------------------------------- memory out
    def encode_memory(self, feat: torch.Tensor, mask_logits_high_res: torch.Tensor,
                      object_score_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A new spatial memory from a frame's (un-conditioned) features and its predicted mask.

        feat (B,256,h,w), mask_logits_high_res (B,1,S,S), object_score_logits (B,1) ->
        features (B,64,h,w) and position encoding (B,64,h,w).
        """
        return self.encode_memory_from_probs(feat, torch.sigmoid(mask_logits_high_res),
                                             object_score_logits)

    def encode_memory_from_probs(self, feat: torch.Tensor, mask_prob: torch.Tensor,
                                 object_score_logits: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory of a mask given as values in [0, 1] (B, 1, S, S); absent objects
        (object_score_logits (B, 1) <= 0) get the no-object embedding where the config has one."""
        cfg = self.cfg
        mask = mask_prob * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(feat, mask, skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).to(features.dtype)  # (B, 1)
            embed = self.no_obj_embed_spatial[:, :, None, None]  # (1, 64, 1, 1)
            features = features + absent[:, :, None, None] * embed
        return features, pos

    # --- tracker helpers
    def encode_prompt_memory(self, feat: torch.Tensor, mask_logits_high_res: torch.Tensor,
                             object_score_logits: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_memory`` for a frame the user prompted: the mask is binarised (> 0) rather
        than passed through a sigmoid, so the memory holds exactly the mask the user saw (SAM 2's
        video predictor sets ``binarize_mask_from_pts_for_mem_enc``). Same shapes as
        ``encode_memory``."""
        return self.encode_memory_from_probs(feat, (mask_logits_high_res > 0).float(),
                                             object_score_logits)

    def pointer_tokens_batched(self, ptrs: torch.Tensor,
                               ptr_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pointer_tokens`` with encodings per object: ptrs (B, P, 256), ptr_pos (B, P, 64) ->
        tokens (B, P*4, 64) and their encodings (B, P*4, 64)."""
        b, p, c = ptrs.shape
        split = c // self.cfg.mem_dim
        tokens = ptrs.reshape(b, p * split, self.cfg.mem_dim)  # (B, P, 256) -> (B, 4P, 64)
        return tokens, ptr_pos.repeat_interleave(split, dim=1)  # (B, P, 64) -> (B, 4P, 64)
