"""Fixed sine position encodings: 2D for feature maps, 1D for temporal offsets.

Both depend only on shapes (and integer offsets), so they are computed once per shape and
cached; under export they become constants.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _frequencies(num_feats: int, temperature: float, device=None) -> torch.Tensor:
    # Pairs of channels share a frequency: temperature ** (2 * (i // 2) / num_feats).
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    # (..., F) angles -> (..., F): even channels sin, odd channels cos (of their own angle).
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_encoding_2d(height: int, width: int, num_pos_feats: int,
                              temperature: float = 10000.0, device=None) -> torch.Tensor:
    """Normalised 2D sine encoding of a (height, width) grid -> (num_pos_feats, H, W).

    The first half of the channels encodes the row (y), the second half the column (x);
    positions run 1..H (1..W) scaled to (0, 2*pi].
    """
    half = num_pos_feats // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    freqs = _frequencies(half, temperature, device)
    pos_y = _interleave_sin_cos(y[:, None] / freqs)  # (H, half)
    pos_x = _interleave_sin_cos(x[:, None] / freqs)  # (W, half)
    pos = torch.cat((pos_y[:, None, :].expand(height, width, half),
                     pos_x[None, :, :].expand(height, width, half)), dim=-1)
    return pos.permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


class PositionEmbeddingSine(nn.Module):
    """2D sine encoding for a (B, C, H, W) feature map: returns (B, num_pos_feats, H, W).

    Has no parameters; tables are cached per (H, W, device).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        key = (h, w, x.device)
        if key not in self._cache:
            self._cache[key] = sine_position_encoding_2d(h, w, self.num_pos_feats,
                                                         self.temperature, x.device)
        pe = self._cache[key].to(dtype=x.dtype)
        return pe[None].expand(x.shape[0], -1, -1, -1)


def sine_position_encoding_1d(positions: torch.Tensor, dim: int,
                              temperature: float = 10000.0) -> torch.Tensor:
    """1D sine encoding of (...,) float positions -> (..., dim): [sin(p / f), cos(p / f)]."""
    freqs = _frequencies(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)
