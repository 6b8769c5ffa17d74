"""Mask decoder of the SAM heads: image embedding + prompt tokens -> mask logits and scores.

Parameter names follow Meta's checkpoints under ``sam_mask_decoder.``.

Output tokens, in order: [obj_score_token (if pred_obj_scores), iou_token, mask_tokens 0..K].
Mask token 0 predicts the single-mask answer, tokens 1..K the K = 3 multimask candidates.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.config import ModelConfig
from engine.model.common import MLP, LayerNorm2d
from engine.model.transformer import TwoWayTransformer


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU of the masks thresholded at +delta and -delta: (B, M, H, W) -> (B, M).

    An empty union (all logits <= -delta) counts as perfectly stable (1.0).
    """
    flat = mask_logits.flatten(-2)  # (B, M, H, W) -> (B, M, H*W)
    inter = (flat > delta).to(torch.float32).sum(-1)
    union = (flat > -delta).to(torch.float32).sum(-1)
    ones = torch.ones_like(union)
    return torch.where(union > 0, inter / union.clamp_min(1.0), ones)


def select_stable_or_best(all_masks: torch.Tensor, all_iou: torch.Tensor, delta: float,
                          thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-mask output with SAM 2's fallback to the best multimask candidate.

    Keeps mask 0 where its stability score is >= ``thresh``; elsewhere takes the candidate among
    masks 1.. with the highest predicted IoU (first one on ties).

    Args:
        all_masks: (B, 1+K, H, W) logits; all_iou: (B, 1+K) predicted IoUs.

    Returns:
        masks (B, 1, H, W) and iou (B, 1).
    """
    b, _, h, w = all_masks.shape
    single_mask, single_iou = all_masks[:, :1], all_iou[:, :1]  # (B, 1, H, W), (B, 1)
    multi_masks, multi_iou = all_masks[:, 1:], all_iou[:, 1:]  # (B, K, H, W), (B, K)
    best = multi_iou.argmax(dim=-1, keepdim=True)  # (B, 1)
    best_iou = multi_iou.gather(1, best)  # (B, 1)
    best_mask = multi_masks.gather(1, best[:, :, None, None].expand(b, 1, h, w))  # (B, 1, H, W)
    stable = stability_scores(single_mask, delta) >= thresh  # (B, 1)
    masks = torch.where(stable[:, :, None, None], single_mask, best_mask)
    iou = torch.where(stable, single_iou, best_iou)
    return masks, iou


class MaskDecoder(nn.Module):
    """Predicts mask logits, IoU estimates, output tokens and an object score.

    Args:
        transformer_dim: token / image-embedding width C (256).
        transformer: the two-way transformer.
        num_multimask_outputs: K candidate masks (3).
        iou_head_depth / iou_head_hidden_dim: IoU-head MLP shape (3 / 256).
        use_high_res_features: add stride-4 / stride-8 features during up-scaling.
        iou_prediction_use_sigmoid: squash IoU predictions into [0, 1].
        dynamic_multimask_via_stability (+ _delta, _thresh): single-mask fallback at inference.
        pred_obj_scores / pred_obj_scores_mlp: object-presence token and its head (MLP or linear).
        use_multimask_token_for_obj_ptr: with multimask output, return the K candidate tokens.
    """

    def __init__(self, *, transformer_dim: int, transformer: nn.Module,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256, use_high_res_features: bool = False,
                 iou_prediction_use_sigmoid: bool = False,
                 dynamic_multimask_via_stability: bool = False,
                 dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98,
                 pred_obj_scores: bool = False, pred_obj_scores_mlp: bool = False,
                 use_multimask_token_for_obj_ptr: bool = False) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        # Two stride-2 transposed convolutions: (C, h, w) -> (C/8, 4h, 4w).
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Project backbone levels 0 / 1 to the up-scaler's widths (applied once per frame
            # by the caller, as SAM 2's forward_image does).
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(c, iou_head_hidden_dim, self.num_mask_tokens,
                                       iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(c, c, 1, 3) if pred_obj_scores_mlp else nn.Linear(c, 1)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def _output_tokens(self, batch: int) -> torch.Tensor:
        """The learned output tokens -> (batch, T, C), T = [1 +] 1 + num_mask_tokens."""
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            parts.insert(0, self.obj_score_token.weight)
        return torch.cat(parts, dim=0).unsqueeze(0).expand(batch, -1, -1)

    def _upscale(self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None
                 ) -> torch.Tensor:
        """(B, C, h, w) -> (B, C/8, 4h, 4w), adding feat_s1 / feat_s0 after each up-step."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features  # (B, C/8, 4h, 4w), (B, C/4, 2h, 2w)
        x = act1(norm1(up1(src) + feat_s1))  # (B, C/4, 2h, 2w)
        return act2(up2(x) + feat_s0)  # (B, C/8, 4h, 4w)

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse: torch.Tensor, dense: torch.Tensor, repeat_image: bool,
                      high_res_features: list[torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 1+K masks before selection: (B, 1+K, 4h, 4w), (B, 1+K), (B, 1+K, C), (B, 1)."""
        b = sparse.shape[0]
        tokens = torch.cat((self._output_tokens(b), sparse), dim=1)  # (B, T + N, C)
        if repeat_image:  # one image shared by all B prompt sets
            image_embeddings = torch.repeat_interleave(image_embeddings, b, dim=0)
        src = image_embeddings + dense  # (B, C, h, w)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)  # (B, T + N, C), (B, h*w, C)
        first = 1 if self.pred_obj_scores else 0  # index of the IoU token
        iou_token = hs[:, first]  # (B, C)
        mask_tokens = hs[:, first + 1:first + 1 + self.num_mask_tokens]  # (B, 1+K, C)

        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, h*w, C) -> (B, C, h, w)
        up = self._upscale(src, high_res_features)  # (B, C/8, 4h, 4w)
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp
                             in enumerate(self.output_hypernetworks_mlps)], dim=1)  # (B, 1+K, C/8)
        _, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)  # (B, 1+K, 4h, 4w)

        iou_pred = self.iou_prediction_head(iou_token)  # (B, 1+K)
        if self.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0])  # (B, 1)
        else:  # no presence head: "object present" with sigmoid(10) ~ 1
            obj_logits = iou_pred.new_full((b, 1), 10.0)
        return masks, iou_pred, mask_tokens, obj_logits

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, repeat_image: bool,
                high_res_features: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode masks for B prompt sets.

        Args:
            image_embeddings: (B, C, h, w), or (1, C, h, w) with ``repeat_image``.
            image_pe: (1, C, h, w) from ``PromptEncoder.get_dense_pe()``.
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (B, C, h, w).
            multimask_output: return the K candidates instead of one mask.
            repeat_image: repeat a single image embedding over the B prompt sets.
            high_res_features: [feat_s0 (B, C/8, 4h, 4w), feat_s1 (B, C/4, 2h, 2w)], already
                projected by ``conv_s0`` / ``conv_s1``.

        Returns:
            masks (B, M, 4h, 4w) low-res logits, iou_pred (B, M), sam_tokens_out (B, M', C),
            object_score_logits (B, 1); M = K if multimask_output else 1, M' = K only when
            multimask_output and use_multimask_token_for_obj_ptr, else 1 (the single-mask token).
        """
        masks, iou_pred, mask_tokens, obj_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            repeat_image, high_res_features)
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = select_stable_or_best(masks, iou_pred,
                                                    self.dynamic_multimask_stability_delta,
                                                    self.dynamic_multimask_stability_thresh)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens[:, 1:]  # (B, K, C)
        else:
            sam_tokens = mask_tokens[:, :1]  # (B, 1, C): always the single-mask token
        return masks, iou_pred, sam_tokens, obj_logits


def build_mask_decoder(cfg: ModelConfig) -> MaskDecoder:
    """The mask decoder SAM 2 builds for ``cfg`` (``_build_sam_heads`` + predictor extras).

    Every published SAM 2 / 2.1 config uses the high-resolution features, so they are on here.
    """
    transformer = TwoWayTransformer(depth=2, embedding_dim=cfg.d_model,
                                    num_heads=cfg.decoder_num_heads, mlp_dim=cfg.decoder_mlp_dim,
                                    attention_downsample_rate=2)
    return MaskDecoder(
        transformer_dim=cfg.d_model, transformer=transformer, num_multimask_outputs=3,
        iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim, use_high_res_features=True,
        iou_prediction_use_sigmoid=cfg.iou_prediction_use_sigmoid,
        dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
        pred_obj_scores=cfg.pred_obj_scores, pred_obj_scores_mlp=cfg.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=cfg.use_multimask_token_for_obj_ptr,
    )
