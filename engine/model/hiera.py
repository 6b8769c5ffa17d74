"""Hiera trunk of the SAM 2 image encoder: a hierarchical ViT with windowed attention.

Layout: a strided 7x7 patch embedding (image / 4), then ``sum(stages)`` transformer blocks in
four stages. The first block of stages 2..4 widens the channels, multiplies the heads and (for
the first ``q_pool`` transitions) halves the resolution by max-pooling its attention queries.
Blocks listed in ``global_att_blocks`` attend over the whole map; all others attend inside
non-overlapping windows (``window_spec``, per stage). Tokens travel channels-last: (B, H, W, C).

Parameter names equal the keys of Meta's checkpoints under ``image_encoder.trunk.``.
All shapes depend only on the input shape, so the module traces to a static graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import HieraConfig
from engine.model.common import MLP


def window_partition(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a map into ``size`` x ``size`` windows, zero-padding bottom/right to a multiple.

    x: (B, H, W, C). Returns windows (B * nH * nW, size, size, C) and the padded (Hp, Wp).
    """
    _, h, w, c = x.shape
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(-1, hp // size, size, wp // size, size, c)  # (B, nH, size, nW, size, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nH, nW, size, size, C)
    return x.reshape(-1, size, size, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, size: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``window_partition``: windows (B * nH * nW, size, size, C) -> (B, H, W, C)."""
    (hp, wp), (h, w) = padded_hw, hw
    c = windows.shape[-1]
    x = windows.reshape(-1, hp // size, wp // size, size, size, c)  # (B, nH, nW, s, s, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)  # (B, nH, s, nW, s, C) -> (B, Hp, Wp, C)
    return x[:, :h, :w, :] if (hp, wp) != (h, w) else x


def max_pool_hw(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Non-overlapping max pooling of a channels-last map: (B, H, W, C) -> (B, H/sh, W/sw, C)."""
    x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    x = F.max_pool2d(x, kernel_size=stride, stride=stride)  # (B, C, H', W'), floor mode
    return x.permute(0, 2, 3, 1)  # (B, H', W', C)


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) -> channels-last tokens (B, H/4, W/4, embed_dim)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, C, H', W') -> (B, H', W', C)


class MultiScaleAttention(nn.Module):
    """Self-attention over the tokens of each input map, optionally max-pooling the queries.

    With ``q_stride`` the output has the pooled resolution (keys and values keep the full one).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int,
                 q_stride: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, h, w, dim) -> (N, h', w', dim_out); h' = h / q_stride (or h)."""
        n, h, w, _ = x.shape
        head_dim = self.dim_out // self.num_heads
        qkv = self.qkv(x).reshape(n, h * w, 3, self.num_heads, head_dim)  # (N, hw, 3, nh, d)
        q, k, v = qkv.unbind(2)  # each (N, hw, nh, d)
        if self.q_stride is not None:
            q = max_pool_hw(q.reshape(n, h, w, self.dim_out), self.q_stride)  # (N, h', w', C)
            h, w = q.shape[1], q.shape[2]
            q = q.reshape(n, h * w, self.num_heads, head_dim)  # (N, h'w', nh, d)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (N, nh, h'w', d)
        out = out.transpose(1, 2).reshape(n, h, w, self.dim_out)  # (N, h', w', C)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block: (windowed) attention then a GELU MLP, both residual.

    ``window_size == 0`` means global attention. When ``dim != dim_out`` the residual path is
    ``proj(norm1(x))``, max-pooled alongside the queries when ``q_stride`` is set.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, window_size: int,
                 q_stride: tuple[int, int] | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2,
                       activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def _residual(self, x_in: torch.Tensor, x_normed: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', dim_out): the skip path around attention."""
        if self.dim == self.dim_out:
            return x_in
        skip = self.proj(x_normed)  # (B, H, W, dim_out)
        return skip if self.q_stride is None else max_pool_hw(skip, self.q_stride)

    def _windowed_attention(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Attention inside windows: (B, H, W, dim) -> (B, H', W', dim_out), H' = out_hw[0].

        Padding tokens are zeros before ``qkv`` and are NOT masked: they act as keys/values
        (and, for pooled queries, enter the max) exactly as in the reference.
        """
        size = self.window_size
        windows, (hp, wp) = window_partition(x, size)  # (B * nW, size, size, dim)
        windows = self.attn(windows)  # (B * nW, size', size', dim_out)
        if self.q_stride is not None:
            sh, sw = self.q_stride
            size, hp, wp = size // sh, hp // sh, wp // sw
        return window_unpartition(windows, size, (hp, wp), out_hw)  # (B, H', W', dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, dim) -> (B, H', W', dim_out)."""
        normed = self.norm1(x)
        shortcut = self._residual(x, normed)  # (B, H', W', dim_out)
        if self.window_size > 0:
            out_hw = (shortcut.shape[1], shortcut.shape[2])
            x = self._windowed_attention(normed, out_hw)
        else:
            x = self.attn(normed)  # the whole map is one window
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class _BlockSpec:
    dim: int
    dim_out: int
    num_heads: int
    window_size: int
    q_stride: tuple[int, int] | None


def _block_specs(embed_dim: int, num_heads: int, stages: tuple[int, ...],
                 global_att_blocks: tuple[int, ...], window_spec: tuple[int, ...],
                 q_pool: int, q_stride: tuple[int, int], dim_mul: float,
                 head_mul: float) -> list[_BlockSpec]:
    """Per-block widths, heads, window and pooling, in block order.

    The first block of a stage still uses the previous stage's window (its input resolution);
    its queries are pooled for the first ``q_pool`` stage transitions.
    """
    specs, dim, heads = [], embed_dim, num_heads
    for stage, depth in enumerate(stages):
        for j in range(depth):
            first = stage > 0 and j == 0
            dim_out = int(dim * dim_mul) if first else dim
            heads = int(heads * head_mul) if first else heads
            window = window_spec[stage - 1] if first else window_spec[stage]
            if len(specs) in global_att_blocks:
                window = 0
            pool = q_stride if first and stage <= q_pool else None
            specs.append(_BlockSpec(dim, dim_out, heads, window, pool))
            dim = dim_out
    return specs


class Hiera(nn.Module):
    """The trunk: image (B, 3, H, W) -> four maps (B, C_i, H/4/2^i, W/4/2^i), i = 0..3."""

    def __init__(self, embed_dim: int, num_heads: int, stages: tuple[int, ...],
                 global_att_blocks: tuple[int, ...], window_spec: tuple[int, ...],
                 window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14),
                 q_pool: int = 3, q_stride: tuple[int, int] = (2, 2), dim_mul: float = 2.0,
                 head_mul: float = 2.0) -> None:
        super().__init__()
        if len(stages) != len(window_spec) or not 0 <= q_pool < len(stages):
            raise ValueError("need one window size per stage and q_pool < number of stages")
        self.patch_embed = PatchEmbed(embed_dim)
        # Background embedding (resized to the map) plus a per-window embedding (tiled).
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        specs = _block_specs(embed_dim, num_heads, tuple(stages), tuple(global_att_blocks),
                             tuple(window_spec), q_pool, tuple(q_stride), dim_mul, head_mul)
        self.blocks = nn.ModuleList(
            MultiScaleBlock(s.dim, s.dim_out, s.num_heads, s.window_size, s.q_stride)
            for s in specs)
        ends = [sum(stages[:i + 1]) - 1 for i in range(len(stages))]
        self.stage_ends = tuple(ends)
        # Output widths, lowest resolution first (the order the neck is configured in).
        self.channel_list = tuple(specs[i].dim_out for i in reversed(ends))

    @classmethod
    def from_config(cls, cfg: HieraConfig) -> Hiera:
        return cls(cfg.embed_dim, cfg.num_heads, cfg.stages, cfg.global_att_blocks,
                   cfg.window_spec, cfg.window_pos_embed_bkg_spatial_size, cfg.q_pool,
                   cfg.q_stride, cfg.dim_mul, cfg.head_mul)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embedding for an (h, w) token map -> (1, h, w, C)."""
        wh, ww = self.pos_embed_window.shape[-2:]
        if h % wh or w % ww:
            raise ValueError(f"token map {h}x{w} is not a multiple of the window {wh}x{ww}")
        bkg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")  # (1, C, h, w)
        tiled = self.pos_embed_window.tile(1, 1, h // wh, w // ww)  # (1, C, h, w)
        return (bkg + tiled).permute(0, 2, 3, 1)  # (1, h, w, C)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) -> [(B, C_i, H_i, W_i)] for the 4 stages, highest resolution first."""
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)  # (B, H_i, W_i, C_i)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))  # (B, C_i, H_i, W_i)
        return outputs
