"""SAM 2's memory attention on a fixed-capacity memory: one shape for every frame.

The exported memory-attention graph (engine/export/parts.py) and the torch runtime's compiled
path (engine/runtime/torch_runtime.py) both run this module, so neither imports the other.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..memory_layout import MemoryCapacity
from .sam2 import SAM2Model

# Additive attention bias of an unused memory slot. Finite and within float16 range (unlike
# finfo(float32).min, which becomes -inf in FP16 engines and 0 * -inf = NaN); exp(-3e4) is
# exactly 0 in float32 and float16, so unused slots get weight 0.
MASKED_SCORE = -30000.0


class FixedCapacityAttention(nn.Module):
    """``SAM2Model.attend_memory`` on the fixed-capacity layout (engine/memory_layout.py):
    memory, memory_pos (B, M, 64) and memory_valid (B, M) of the capacity's M tokens; unused
    tokens get the additive bias ``MASKED_SCORE`` (weight exactly 0)."""

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
