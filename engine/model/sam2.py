"""The SAM 2 model: every learned part, named as in Meta's checkpoints, and nothing stateful.

``SAM2Model`` holds the components (image encoder, prompt encoder, mask decoder, memory
encoder, memory attention) on top of the small learned tensors around them, which it inherits
from ``TrackingGlue`` (engine/model/glue.py: what every runtime keeps). Its methods are the
per-frame computations the tracker chains together; which memories to attend to, and what to
keep, is the tracker's business.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .glue import MASK_AS_OUTPUT_BIAS, MASK_AS_OUTPUT_SCALE, TrackingGlue
from .image_encoder import build_image_encoder
from .mask_decoder import build_mask_decoder
from .memory_attention import build_memory_attention
from .memory_encoder import build_memory_encoder
from .prompt_encoder import build_prompt_encoder

# Logit given to every pixel of an object judged absent (as in SAM 2).
NO_OBJ_SCORE = -1024.0
__all__ = ["DecoderOutput", "ImageFeatures", "MASK_AS_OUTPUT_BIAS", "MASK_AS_OUTPUT_SCALE",
           "NO_OBJ_SCORE", "SAM2Model"]


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


class SAM2Model(TrackingGlue):
    """SAM 2 / SAM 2.1 with the parameter names of Meta's checkpoints: the heavy parts here,
    the small glue (temporal encodings, pointer projection, no-memory embeddings, mask
    up/downsampling) inherited from ``TrackingGlue``."""

    def __init__(self, cfg: ModelConfig) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        self.image_encoder = build_image_encoder(cfg)
        self.sam_prompt_encoder = build_prompt_encoder(cfg)
        self.sam_mask_decoder = build_mask_decoder(cfg)
        self.memory_encoder = build_memory_encoder(cfg)
        self.memory_attention = build_memory_attention(cfg)
        self._add_glue(cfg)
        # Added to the memories of absent objects (SAM 2.1); read by the memory encoder only.
        self.no_obj_embed_spatial = (nn.Parameter(torch.zeros(1, cfg.mem_dim))
                                     if cfg.no_obj_embed_spatial else None)

    # ----------------------------------------------------------------- image
    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        """image (B, 3, S, S) normalised RGB at cfg.image_size -> its features."""
        features, pos = self.image_encoder(image)
        dec = self.sam_mask_decoder
        high_res = [dec.conv_s0(features[0]), dec.conv_s1(features[1])]
        return ImageFeatures(feat=features[-1], pos=pos[-1], high_res=high_res)

    # ------------------------------------------------------------ memory in
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
        obj_ptr = self.object_pointer(token, present)
        return DecoderOutput(masks, ious, low_res, obj_ptr, obj_logits), raw, best

    def decode_mask_prompt(self, feat: torch.Tensor, high_res: list[torch.Tensor],
                           mask: torch.Tensor) -> DecoderOutput:
        """A binary mask prompt (B, 1, S, S) used directly as the output (SAM 2's behaviour);
        the decoder still runs on it to produce the object pointer."""
        return self.decode_mask_prompt_with(self.decode, feat, high_res, mask)

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
