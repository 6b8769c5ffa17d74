"""Prompt encoder of the SAM heads: clicks and box corners -> sparse tokens, mask -> dense map.

Parameter and buffer names follow Meta's checkpoints under ``sam_prompt_encoder.``.

Padding point
-------------
SAM 2 always hands its prompt encoder clicks and *no* separate box tensor (a box travels as two
corner clicks, labels 2 and 3). In that situation the reference appends one extra "not a point"
token (label -1) to every prompt set. ``PromptEncoder.forward`` therefore takes ``pad=True`` by
default and returns ``N + 1`` sparse tokens for ``N`` input clicks, exactly what SAM 2's
``_forward_sam_heads`` produces. Pass ``pad=False`` if the caller already appended the padding
point (see ``pad_points``) or wants the bare tokens. The padding token's value does not depend
on its coordinates: label -1 replaces the position encoding with ``not_a_point_embed``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from engine.config import ModelConfig
from engine.model.common import LayerNorm2d

# Click labels understood by the encoder.
LABEL_PAD, LABEL_NEG, LABEL_POS, LABEL_BOX_TL, LABEL_BOX_BR = -1, 0, 1, 2, 3


class RandomFourierEncoding(nn.Module):
    """Position encoding by a fixed random Gaussian projection of (x, y) in [0, 1].

    A point becomes ``[sin(2*pi*p), cos(2*pi*p)]`` with ``p = (2*xy - 1) @ G``, ``G`` of shape
    (2, num_feats); the output width is ``2 * num_feats``.
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        # Values come from the checkpoint; randn only gives an untrained model a sensible start.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode_unit(self, xy: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates (x, y) in [0, 1] -> (..., 2 * num_feats)."""
        proj = (2 * xy - 1) @ self.positional_encoding_gaussian_matrix  # (..., F)
        angles = 2 * math.pi * proj
        return torch.cat((angles.sin(), angles.cos()), dim=-1)

    def encode_pixels(self, xy: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """(..., 2) pixel coordinates (x, y) on an image of size (H, W) -> (..., 2 * num_feats)."""
        h, w = image_hw
        scale = torch.tensor([w, h], dtype=torch.float32, device=xy.device)
        return self.encode_unit(xy.to(torch.float32) / scale)

    def grid(self, hw: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (h, w) grid of cells -> (2 * num_feats, h, w)."""
        h, w = hw
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, dtype=torch.float32, device=dev) + 0.5) / h  # (h,)
        xs = (torch.arange(w, dtype=torch.float32, device=dev) + 0.5) / w  # (w,)
        xy = torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), dim=-1)  # (h, w, 2)
        return self.encode_unit(xy).permute(2, 0, 1)  # (h, w, C) -> (C, h, w)


def pad_points(coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append SAM 2's padding click: coords (B, N, 2) -> (B, N+1, 2), labels (B, N) -> (B, N+1).

    The new point sits at (0, 0) with label -1; labels keep their dtype.
    """
    b = coords.shape[0]
    pad_xy = torch.zeros(b, 1, 2, dtype=coords.dtype, device=coords.device)
    pad_label = torch.full((b, 1), LABEL_PAD, dtype=labels.dtype, device=labels.device)
    return torch.cat((coords, pad_xy), dim=1), torch.cat((labels, pad_label), dim=1)


class PromptEncoder(nn.Module):
    """Embeds clicks / box corners into sparse tokens and a low-res mask into a dense map.

    Args:
        embed_dim: token width C (256).
        image_embedding_size: (h, w) of the image embedding (image_size // 16).
        input_image_size: (H, W) of the encoder's input image, the frame of click coordinates.
        mask_in_chans: hidden width of the mask down-scaler (16).
    """

    def __init__(self, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # One learned offset per click label 0..3 (negative, positive, box top-left, bottom-right).
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        quarter = mask_in_chans // 4
        # Two stride-2 convolutions take the mask from 4h x 4w down to h x w.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            nn.GELU(),
            nn.Conv2d(quarter, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of every image-embedding cell -> (1, C, h, w)."""
        return self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords (B, N, 2) pixels (x, y), labels (B, N) -> tokens (B, N, C).

        Label -1 gives ``not_a_point_embed`` alone; labels 0..3 add their learned offset to the
        position encoding of the pixel centre. Selection is by masks, not by Python branching.
        """
        pe = self.pe_layer.encode_pixels(coords + 0.5, self.input_image_size)  # (B, N, C)
        is_pad = (labels == LABEL_PAD).unsqueeze(-1)  # (B, N, 1)
        tokens = torch.where(is_pad, self.not_a_point_embed.weight, pe)
        for label, table in enumerate(self.point_embeddings):
            hit = (labels == label).unsqueeze(-1)  # (B, N, 1)
            tokens = torch.where(hit, tokens + table.weight, tokens)
        return tokens

    def embed_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, 1, 4h, 4w) -> dense embedding (B, C, h, w)."""
        return self.mask_downscaling(masks)

    def no_mask_dense(self, batch: int) -> torch.Tensor:
        """The learned "no mask" embedding broadcast to (batch, C, h, w)."""
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)

    def forward(self, coords: torch.Tensor, labels: torch.Tensor,
                masks: torch.Tensor | None = None, pad: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one prompt set per batch entry.

        Args:
            coords: (B, N, 2) float click positions (x, y) in input-image pixels.
            labels: (B, N) int or float labels: -1 padding, 0 negative, 1 positive,
                2 box top-left, 3 box bottom-right.
            masks: (B, 1, 4h, 4w) mask logits, or None for the learned no-mask embedding.
            pad: append SAM 2's padding click first (see the module docstring).

        Returns:
            sparse: (B, N + pad, C) tokens; dense: (B, C, h, w).
        """
        if pad:
            coords, labels = pad_points(coords, labels)
        sparse = self.embed_points(coords, labels)
        dense = self.no_mask_dense(coords.shape[0]) if masks is None else self.embed_mask(masks)
        return sparse, dense


def build_prompt_encoder(cfg: ModelConfig) -> PromptEncoder:
    """The prompt encoder SAM 2 builds for ``cfg`` (``_build_sam_heads``)."""
    side = cfg.image_size // cfg.backbone_stride
    return PromptEncoder(embed_dim=cfg.d_model, image_embedding_size=(side, side),
                         input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=16)
