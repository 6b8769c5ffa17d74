"""Real-valued 2D axial rotary position encoding (RoPE) and the attention that uses it.

The memory attention turns each query and key vector by angles that depend on the token's cell
(x, y) on the square feature grid. Meta writes this with complex numbers; here it is plain cos/sin
arithmetic so an exported graph (ONNX / TensorRT) holds only real-valued ops.

Layout of one head of width D (D divisible by 4):

* channels form adjacent pairs (2j, 2j + 1); each pair is one 2D vector turned by one angle;
* pairs j = 0 .. D/4 - 1 turn with the column x, pairs j = D/4 .. D/2 - 1 with the row y;
* pair j (taken modulo D/4) turns at frequency ``theta ** (-4j / D)`` radians per cell;
* tokens are numbered row-major over a grid ``end_x`` wide: x = t % end_x, y = t // end_x.

Turning a pair (a, b) by angle phi gives (a cos phi - b sin phi, a sin phi + b cos phi), i.e.
``x * cos + swap(x) * sin`` with swap(a, b) = (-b, a) and cos/sin repeated over both channels.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.model.common import Attention


def axial_rope_tables(head_dim: int, end_x: int, end_y: int, theta: float = 10000.0,
                      device=None) -> tuple[Tensor, Tensor]:
    """Cos and sin tables for an (end_y rows, end_x columns) grid.

    Returns two float32 tensors of shape (end_x * end_y, head_dim): the angle of channel pair j
    written into both of its channels 2j and 2j + 1.
    """
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head width divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    # Same float32 arithmetic as the reference: exponents 0, 4, 8, ... over head_dim.
    exponents = torch.arange(0, head_dim, 4, device=device)[:quarter].float() / head_dim
    freqs = 1.0 / (theta ** exponents)  # (D/4,)
    t = torch.arange(end_x * end_y, device=device)
    cols = (t % end_x).float()  # (N,)
    rows = torch.div(t, end_x, rounding_mode="floor").float()  # (N,)
    angles = torch.cat((torch.outer(cols, freqs), torch.outer(rows, freqs)), dim=-1)  # (N, D/2)
    # (N, D/2) -> (N, D): each pair's angle on both of its channels.
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def _swap_pairs(x: Tensor) -> Tensor:
    """(..., D) -> (..., D): every channel pair (a, b) becomes (-b, a)."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # (..., D/2, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)  # (..., D)


def turns_table(cos: Tensor, sin: Tensor) -> Tensor:
    """(N, D) cos/sin tables -> (N, D/2) complex64 unit numbers cos + i sin, one per pair."""
    return torch.complex(cos[:, ::2].contiguous(), sin[:, ::2].contiguous())


def _in_graph() -> bool:
    """True while torch traces or compiles (ONNX export, torch.compile): graphs get real ops."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def rotate(x: Tensor, cos: Tensor, sin: Tensor, turns: Tensor | None = None) -> Tensor:
    """Rotate x (..., N, D) by tables cos, sin (N, D); computed in float32 like the reference.

    Eager: one complex multiply per pair (the reference's arithmetic, several times faster than
    the real form on a CPU); ``turns`` is ``turns_table(cos, sin)`` when the caller caches it.
    Traced or compiled: the same products written with real ops (cos/sin arithmetic).
    """
    xf = x.float()
    if _in_graph():
        return (xf * cos + _swap_pairs(xf) * sin).to(x.dtype)
    turns = turns_table(cos, sin) if turns is None else turns
    pairs = torch.view_as_complex(xf.reshape(*xf.shape[:-1], -1, 2))  # (..., N, D/2)
    return torch.view_as_real(pairs * turns).reshape(x.shape).to(x.dtype)


def rotate_tiled(x: Tensor, cos: Tensor, sin: Tensor, turns: Tensor | None = None) -> Tensor:
    """Rotate x (B, heads, r * N, D) with tables (N, D) repeated r times along the tokens.

    Token i uses table row i % N: each block of N tokens (one spatial memory) gets the grid's
    full set of angles. This is the reference's ``rope_k_repeat``.
    """
    b, h, n_tok, d = x.shape
    n = cos.shape[0]
    if n_tok % n:
        raise ValueError(f"{n_tok} rotated keys are not a whole number of {n}-token grids")
    blocks = x.reshape(b, h, n_tok // n, n, d)  # (B, heads, r, N, D)
    return rotate(blocks, cos, sin, turns).reshape(b, h, n_tok, d)  # (B, heads, r * N, D)


class RoPEAttention(Attention):
    """Multi-head attention whose queries and (most) keys carry axial RoPE.

    Queries are one square feature grid, flattened row-major (side = sqrt(Nq)). Keys are
    either the same grid (self-attention) or, with ``rope_k_repeat``, several grids in a row
    followed by ``num_k_exclude_rope`` tokens (object pointers) that are not rotated.
    The cos/sin tables are built once per (grid size, device) and cached; they are not part
    of the state dict.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 dropout: float = 0.0, kv_in_dim: int | None = None,
                 rope_theta: float = 10000.0, rope_k_repeat: bool = False) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._tables: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def rope_tables(self, num_tokens: int, device: torch.device
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Cached (num_tokens, head_dim) cos/sin tables of the square grid with num_tokens
        cells, and their (num_tokens, head_dim / 2) complex form (``turns_table``)."""
        key = (num_tokens, device)
        if key not in self._tables:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"RoPE queries must form a square grid, got {num_tokens} tokens")
            head_dim = self.internal_dim // self.num_heads
            cos, sin = axial_rope_tables(head_dim, side, side, self.rope_theta, device)
            self._tables[key] = (cos, sin, turns_table(cos, sin))
        return self._tables[key]

    def _rotate_keys(self, k: Tensor, tables: tuple[Tensor, Tensor, Tensor],
                     num_k_exclude_rope: int) -> Tensor:
        """k (B, heads, Nk, D): rotate the first Nk - num_k_exclude_rope keys, keep the rest."""
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope == 0:
            return k
        if n_rope != tables[0].shape[0] and not self.rope_k_repeat:
            raise ValueError("keys and queries differ in length but rope_k_repeat is off")
        rotated = rotate_tiled(k[:, :, :n_rope], *tables)  # (B, heads, n_rope, D)
        if num_k_exclude_rope == 0:
            return rotated
        return torch.cat((rotated, k[:, :, n_rope:]), dim=2)  # (B, heads, Nk, D)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0,
                attn_mask: Tensor | None = None) -> Tensor:
        """Attend.

        q: (B, Nq, embedding_dim), Nq = side * side; k, v: (B, Nk, kv_in_dim);
        num_k_exclude_rope: trailing keys left unrotated; attn_mask: None, or a boolean or
        additive mask broadcastable to (B, heads, Nq, Nk). Returns (B, Nq, embedding_dim).
        """
        q = self.split_heads(self.q_proj(q))  # (B, heads, Nq, D)
        k = self.split_heads(self.k_proj(k))  # (B, heads, Nk, D)
        v = self.split_heads(self.v_proj(v))  # (B, heads, Nk, D)
        tables = self.rope_tables(q.shape[-2], q.device)
        q = rotate(q, *tables)
        k = self._rotate_keys(k, tables, num_k_exclude_rope)
        return self.attend(q, k, v, attn_mask)
