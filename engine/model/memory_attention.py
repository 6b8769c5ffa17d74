"""Memory attention: conditions the current frame's features on the memory bank.

A stack of pre-norm transformer layers over the current frame's tokens: RoPE self-attention,
RoPE cross-attention to the memory (spatial memories then object-pointer tokens), ReLU FFN.
Parameter names match Meta's checkpoints under ``memory_attention.``.

Everything here is batch-first, (B, tokens, channels); Meta's module takes sequence-first input.
Inference only: dropout of the published configs is not applied.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.model.rope import RoPEAttention


def memory_attention_bias(memory_valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, M) bool, True = slot in use -> (B, 1, 1, M) additive bias for the attention scores.

    Unused slots get the most negative finite value, so their softmax weight is exactly 0;
    a finite value (not -inf) keeps a row with no valid slot free of NaN. Unused slots must
    still hold finite numbers (zeros, say): their keys and values enter the products.
    """
    bias = (~memory_valid).to(dtype) * torch.finfo(dtype).min  # (B, M): 0 or most negative
    return bias[:, None, None, :]  # (B, 1, 1, M): broadcast over heads and queries


class MemoryAttentionLayer(nn.Module):
    """One layer: self-attention, cross-attention to memory, feed-forward; each pre-normed.

    ``pos_enc_at_*`` choose where position encodings are added; the defaults are the values
    of every published config (only the cross-attention keys get ``memory_pos``).
    """

    def __init__(self, d_model: int = 256, dim_feedforward: int = 2048, num_heads: int = 1,
                 kv_in_dim: int = 64, rope_theta: float = 10000.0,
                 pos_enc_at_attn: bool = False, pos_enc_at_cross_attn_keys: bool = True,
                 pos_enc_at_cross_attn_queries: bool = False) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads, kv_in_dim=kv_in_dim,
                                              rope_theta=rope_theta, rope_k_repeat=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def _self_attention(self, x: Tensor, x_pos: Tensor) -> Tensor:
        y = self.norm1(x)
        qk = y + x_pos if self.pos_enc_at_attn else y
        return x + self.self_attn(qk, qk, y)

    def _cross_attention(self, x: Tensor, x_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                         num_obj_ptr_tokens: int, bias: Tensor | None) -> Tensor:
        y = self.norm2(x)
        q = y + x_pos if self.pos_enc_at_cross_attn_queries else y
        k = memory + memory_pos if self.pos_enc_at_cross_attn_keys else memory
        return x + self.cross_attn_image(q, k, memory, num_k_exclude_rope=num_obj_ptr_tokens,
                                         attn_mask=bias)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))

    def forward(self, x: Tensor, x_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                num_obj_ptr_tokens: int = 0, bias: Tensor | None = None) -> Tensor:
        """x, x_pos: (B, HW, d_model); memory, memory_pos: (B, M, kv_in_dim);
        bias: None or (B, 1, 1, M) additive. Returns (B, HW, d_model)."""
        x = self._self_attention(x, x_pos)
        x = self._cross_attention(x, x_pos, memory, memory_pos, num_obj_ptr_tokens, bias)
        return self._feed_forward(x)


class MemoryAttention(nn.Module):
    """``num_layers`` copies of ``layer`` (default: a published-config layer) and a final norm."""

    def __init__(self, d_model: int = 256, pos_enc_at_input: bool = True,
                 layer: MemoryAttentionLayer | None = None, num_layers: int = 4) -> None:
        super().__init__()
        layer = layer if layer is not None else MemoryAttentionLayer(d_model)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.d_model = d_model
        self.pos_enc_at_input = pos_enc_at_input

    def forward(self, curr: Tensor, curr_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                num_obj_ptr_tokens: int = 0, memory_valid: Tensor | None = None) -> Tensor:
        """Condition the current frame on the memory.

        curr, curr_pos: (B, HW, d_model) frame tokens (row-major square grid) and their
            sine position encoding.
        memory, memory_pos: (B, M, mem_dim); M = (number of spatial memories) * HW followed by
            ``num_obj_ptr_tokens`` object-pointer tokens, which RoPE leaves unrotated.
        memory_valid: None, or (B, M) bool with False on unused slots of a fixed-capacity bank;
            unused slots are ignored exactly (as if absent).
        Returns (B, HW, d_model).
        """
        x = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        bias = None if memory_valid is None else memory_attention_bias(memory_valid, x.dtype)
        for layer in self.layers:
            x = layer(x, curr_pos, memory, memory_pos, num_obj_ptr_tokens, bias)
        return self.norm(x)


def build_memory_attention(cfg: ModelConfig) -> MemoryAttention:
    """The memory attention of model ``cfg`` (same for every published size)."""
    layer = MemoryAttentionLayer(cfg.d_model, cfg.memory_attention_ffn_dim, num_heads=1,
                                 kv_in_dim=cfg.mem_dim, rope_theta=cfg.rope_theta)
    return MemoryAttention(cfg.d_model, pos_enc_at_input=True, layer=layer,
                           num_layers=cfg.memory_attention_layers)
