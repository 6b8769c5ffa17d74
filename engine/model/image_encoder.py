"""SAM 2 image encoder: the Hiera trunk, a small FPN neck and the 2D sine position encodings.

Output: the neck's feature maps and their position encodings, highest resolution first, with the
``scalp`` lowest-resolution levels dropped (SAM 2 keeps strides 4, 8 and 16 of 4, 8, 16, 32).
Parameter names equal the keys of Meta's checkpoints under ``image_encoder.``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig
from engine.model.hiera import Hiera
from engine.model.position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """1x1 lateral convs to ``d_model`` plus a nearest-neighbour top-down pathway.

    ``backbone_channel_list`` lists the trunk widths lowest resolution first, so ``convs[0]``
    projects the lowest-resolution map. Only the levels in ``fpn_top_down_levels`` (indexed
    highest resolution first) add the upsampled coarser level; the others are lateral only.
    """

    def __init__(self, d_model: int, backbone_channel_list: tuple[int, ...],
                 fpn_top_down_levels: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = tuple(backbone_channel_list)
        self.fpn_top_down_levels = tuple(fpn_top_down_levels)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, d_model, kernel_size=1)))
            for dim in self.backbone_channel_list)
        self.position_encoding = PositionEmbeddingSine(d_model)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """xs: trunk maps (B, C_i, H_i, W_i), highest resolution first, H_{i+1} = H_i / 2.

        Returns (features, pos): each a list of (B, d_model, H_i, W_i), same order as ``xs``.
        """
        last = len(self.convs) - 1
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} trunk levels, got {len(xs)}")
        coarse_first: list[torch.Tensor] = []
        for i in range(last, -1, -1):  # lowest resolution first
            out = self.convs[last - i](xs[i])  # (B, d_model, H_i, W_i)
            if coarse_first and i in self.fpn_top_down_levels:
                # previous (coarser) output (B, d_model, H_i / 2, W_i / 2) -> (B, d_model, H_i, W_i)
                out = out + F.interpolate(coarse_first[-1], scale_factor=2.0, mode="nearest")
            coarse_first.append(out)
        features = coarse_first[::-1]
        pos = [self.position_encoding(f).to(f.dtype) for f in features]
        return features, pos


class ImageEncoder(nn.Module):
    """Image (B, 3, S, S) -> (features, pos), two lists of ``4 - scalp`` maps (B, 256, H_i, W_i).

    With ``scalp=1`` at S = 1024 the maps are 256x256, 128x128 and 64x64 (strides 4, 8, 16).
    """

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if tuple(trunk.channel_list) != tuple(neck.backbone_channel_list):
            raise ValueError(f"trunk widths {trunk.channel_list} do not match the neck's "
                             f"{neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x: (B, 3, S, S) normalised image -> (features, pos), highest resolution first."""
        features, pos = self.neck(self.trunk(x))
        keep = len(features) - self.scalp
        return features[:keep], pos[:keep]


def build_image_encoder(cfg: ModelConfig) -> ImageEncoder:
    """The image encoder of model ``cfg`` (random weights; load a checkpoint afterwards)."""
    trunk = Hiera.from_config(cfg.hiera)
    neck = FpnNeck(cfg.d_model, cfg.backbone_channel_list, cfg.fpn_top_down_levels)
    return ImageEncoder(trunk, neck, scalp=1)
