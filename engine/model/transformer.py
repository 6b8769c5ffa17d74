"""Two-way transformer of the SAM mask decoder: prompt tokens and image cells attend to each other.

Parameter names follow Meta's checkpoints under ``sam_mask_decoder.transformer.``.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.model.common import MLP, Attention


class TwoWayAttentionBlock(nn.Module):
    """One round of token/image exchange, each step followed by a residual and a LayerNorm.

    1. tokens self-attend (``self_attn``, ``norm1``);
    2. tokens attend to image cells (``cross_attn_token_to_image``, ``norm2``);
    3. token MLP (``mlp``, ``norm3``);
    4. image cells attend to tokens (``cross_attn_image_to_token``, ``norm4``).

    With ``skip_first_layer_pe`` (first block only) step 1 sees no query position encoding and
    its output *replaces* the tokens instead of being added to them.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 attention_downsample_rate: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads,
                                                   downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, Nq, C), keys/key_pe (B, Nk, C) -> updated (queries, keys)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a last token->image attention and LayerNorm on the tokens.

    The original token embeddings serve as the tokens' position encoding in every block.
    """

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the exchange.

        Args:
            image_embedding: (B, C, h, w) image cells.
            image_pe: (B, C, h, w) or (1, C, h, w) their position encoding.
            point_embedding: (B, N, C) tokens (output tokens + prompt tokens).

        Returns:
            tokens (B, N, C) and image cells (B, h*w, C).
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)  # (B, C, h, w) -> (B, h*w, C)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)  # (b, C, h, w) -> (b, h*w, C)
        key_pe = key_pe.expand(keys.shape[0], -1, -1)  # (B, h*w, C)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
