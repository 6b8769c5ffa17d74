"""Memory encoder: fuses a frame's image features with its predicted mask into a spatial memory.

mask (B, 1, 16h, 16w) --MaskDownSampler--> (B, 256, h, w) --+
pix_feat (B, 256, h, w) --pix_feat_proj (1x1)---------------+--> Fuser (ConvNeXt blocks)
    --> out_proj (1x1) --> memory features (B, 64, h, w), plus their 2D sine encoding.

Parameter names match Meta's checkpoints under ``memory_encoder.``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.model.common import LayerNorm2d
from engine.model.position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """Strided conv + LayerNorm2d + GELU stages, then a 1x1 conv to ``embed_dim`` channels.

    Each stage shrinks the mask by ``stride`` and widens it by ``stride ** 2`` (1 -> 4 -> 16
    -> 64 -> 256 channels for the published 4 stages of stride 2). Module indices in
    ``encoder`` (conv, norm, act, conv, ...) match the checkpoint keys.
    """

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, total_stride: int = 16) -> None:
        super().__init__()
        num_stages = round(math.log(total_stride, stride))
        if stride**num_stages != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        modules: list[nn.Module] = []
        channels = 1
        for _ in range(num_stages):
            wider = channels * stride**2
            modules += [nn.Conv2d(channels, wider, kernel_size, stride, padding),
                        LayerNorm2d(wider), nn.GELU()]
            channels = wider
        modules.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*modules)

    def forward(self, mask: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, embed_dim, H / total_stride, W / total_stride)."""
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP (x4, GELU), layer scale, residual.
    """

    def __init__(self, dim: int = 256, kernel_size: int = 7, padding: int = 3,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.norm(self.dwconv(x))
        y = y.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C): channels last for Linear
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))  # (B, H, W, C)
        return x + y.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class Fuser(nn.Module):
    """``num_layers`` CXBlocks in a row (the published configs use no input projection)."""

    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode one frame's (image features, mask) into a spatial memory and its position encoding.
    """

    def __init__(self, out_dim: int = 64, in_dim: int = 256, fuser_layers: int = 2) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(embed_dim=in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers)
        self.out_proj = (nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim
                         else nn.Identity())
        self.position_encoding = PositionEmbeddingSine(out_dim)

    def forward(self, pix_feat: Tensor, masks: Tensor,
                skip_mask_sigmoid: bool = False) -> tuple[Tensor, Tensor]:
        """pix_feat: (B, in_dim, h, w) image features; masks: (B, 1, 16h, 16w) mask logits, or
        values already in [0, 1] when ``skip_mask_sigmoid`` (the tracker passes its own scaled
        sigmoid). Returns features (B, out_dim, h, w) and their position encoding (same shape).
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)  # (B, in_dim, h, w)
        x = self.out_proj(self.fuser(x))  # (B, out_dim, h, w)
        return x, self.position_encoding(x)


def build_memory_encoder(cfg: ModelConfig) -> MemoryEncoder:
    """The memory encoder of model ``cfg`` (same for every published size)."""
    return MemoryEncoder(out_dim=cfg.mem_dim, in_dim=cfg.d_model,
                         fuser_layers=cfg.memory_encoder_fuser_layers)
