"""Parity of our prompt encoder + mask decoder with Meta's ``sam_prompt_encoder``/``sam_mask_decoder``.

Prompts are fed to the reference exactly as SAM 2's ``_forward_sam_heads`` does: clicks (boxes as
corner clicks labelled 2/3) with ``boxes=None``, int32 labels, and a lone label -1 click when there
are no clicks; the reference then appends its padding click, which our encoder does with
``pad=True``.
"""
from __future__ import annotations

import pytest
import torch

from engine.model.mask_decoder import MaskDecoder, build_mask_decoder, select_stable_or_best
from engine.model.prompt_encoder import PromptEncoder, build_prompt_encoder
from oracle import ATOL, build_oracle, max_abs_diff, oracle_config, sub_state_dict

IMAGE_SIZE = 256
FEAT = IMAGE_SIZE // 16  # 16
MODELS = ["sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2_hiera_base_plus", "sam2.1_hiera_base_plus"]


@pytest.fixture(scope="module", params=MODELS)
def heads(request):
    ref = build_oracle(request.param, IMAGE_SIZE)
    cfg = oracle_config(request.param, IMAGE_SIZE)
    state = ref.state_dict()
    pe, md = build_prompt_encoder(cfg).eval(), build_mask_decoder(cfg).eval()
    pe.load_state_dict(sub_state_dict(state, "sam_prompt_encoder"), strict=True)
    md.load_state_dict(sub_state_dict(state, "sam_mask_decoder"), strict=True)
    return request.param, ref, pe, md


def _features(batch: int, seed: int = 1):
    """Random stride-16 embedding and raw stride-4 / stride-8 backbone levels (256 channels)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, 256, FEAT, FEAT, generator=g)
    s0 = torch.randn(batch, 256, 4 * FEAT, 4 * FEAT, generator=g)
    s1 = torch.randn(batch, 256, 2 * FEAT, 2 * FEAT, generator=g)
    return emb, s0, s1


def _clicks(labels: list[list[int]], seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    b, n = len(labels), len(labels[0])
    coords = torch.rand(b, n, 2, generator=g) * IMAGE_SIZE
    return coords, torch.tensor(labels, dtype=torch.int32)


def _mask(batch: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 4 * FEAT, 4 * FEAT, generator=g) * 4.0


def _run_reference(ref, coords, labels, mask, emb, s0, s1, multimask, repeat_image):
    dec = ref.sam_mask_decoder
    sparse, dense = ref.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
    outs = dec(image_embeddings=emb, image_pe=ref.sam_prompt_encoder.get_dense_pe(),
               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
               multimask_output=multimask, repeat_image=repeat_image,
               high_res_features=[dec.conv_s0(s0), dec.conv_s1(s1)])
    return (sparse, dense, *outs)


def _run_ours(pe: PromptEncoder, md: MaskDecoder, coords, labels, mask, emb, s0, s1, multimask,
              repeat_image):
    sparse, dense = pe(coords, labels, mask, pad=True)
    outs = md(emb, pe.get_dense_pe(), sparse, dense, multimask_output=multimask,
              repeat_image=repeat_image, high_res_features=[md.conv_s0(s0), md.conv_s1(s1)])
    return (sparse, dense, *outs)


OUTPUT_NAMES = ("sparse", "dense", "masks", "iou", "sam_tokens", "obj_score")
NO_CLICK = [[-1]]  # what _forward_sam_heads feeds when there are no clicks
CASES = {
    # name: (labels per batch entry, with mask prompt, multimask_output, repeat_image)
    "points_multi": ([[1, 0, 1]], False, True, False),
    "points_single": ([[1, 0, 1]], False, False, False),
    "box_single": ([[2, 3]], False, False, False),
    "box_multi": ([[2, 3]], False, True, False),
    "mask_only": (NO_CLICK, True, False, False),
    "mask_and_point": ([[1]], True, True, False),
    "box_and_point": ([[2, 3, 1]], False, False, False),
    "batch2_mixed": ([[1, 0, -1], [2, 3, 0]], False, False, False),
    "batch2_mixed_multi_mask": ([[1, -1, -1], [2, 3, 1]], True, True, False),
    "batch2_repeat_image": ([[1, 0], [2, 3]], False, False, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sam_heads_parity(heads, case):
    name, ref, pe, md = heads
    labels, with_mask, multimask, repeat_image = CASES[case]
    b = len(labels)
    coords, labels = _clicks(labels)
    emb, s0, s1 = _features(1 if repeat_image else b)
    if repeat_image:  # high-res features are per prompt set, as in the decoder's add
        s0, s1 = s0.expand(b, -1, -1, -1), s1.expand(b, -1, -1, -1)
    mask = _mask(b) if with_mask else None
    args = (coords, labels, mask, emb, s0, s1, multimask, repeat_image)
    theirs = _run_reference(ref, *args)
    ours = _run_ours(pe, md, *args)

    n_tokens = coords.shape[1] + 1  # the padding click
    assert ours[0].shape == (b, n_tokens, 256)
    assert ours[2].shape == (b, 3 if multimask else 1, 4 * FEAT, 4 * FEAT)
    diffs = {k: max_abs_diff(o, t) for k, o, t in zip(OUTPUT_NAMES, ours, theirs)}
    print(f"\n{name} {case}: " + " ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= ATOL, diffs


def test_high_res_projection_and_dense_pe(heads):
    _, ref, pe, md = heads
    _, s0, s1 = _features(2)
    dec = ref.sam_mask_decoder
    assert max_abs_diff(md.conv_s0(s0), dec.conv_s0(s0)) <= ATOL
    assert max_abs_diff(md.conv_s1(s1), dec.conv_s1(s1)) <= ATOL
    assert max_abs_diff(pe.get_dense_pe(), ref.sam_prompt_encoder.get_dense_pe()) <= ATOL


def test_labels_dtype_does_not_matter(heads):
    _, _, pe, _ = heads
    coords, labels = _clicks([[1, 0, 2, 3, -1]])
    as_int32, _ = pe(coords, labels)
    as_int64, _ = pe(coords, labels.long())
    as_float, _ = pe(coords, labels.float())
    assert torch.equal(as_int32, as_int64) and torch.equal(as_int32, as_float)


def test_stability_fallback_matches_reference():
    """Stable, unstable, empty-union and tied-IoU rows against the reference's own selection."""
    dec = build_oracle("sam2.1_hiera_tiny", IMAGE_SIZE).sam_mask_decoder
    g = torch.Generator().manual_seed(4)
    b, hw = 6, 4 * FEAT
    masks = torch.randn(b, 4, hw, hw, generator=g)  # row 0: noisy, unstable
    masks[1, 0] = torch.where(masks[1, 0] > 0, 8.0, -8.0)  # crisp: stable
    masks[2, 0] = -5.0  # empty union: stable by definition
    masks[3, 0] = 5.0  # full mask: stable
    masks[4, 0, :, : hw // 2] = 0.01  # half the pixels inside (-delta, delta]: unstable
    iou = torch.rand(b, 4, generator=g)
    iou[5, 1:] = 0.5  # tie: the first candidate wins
    ours = select_stable_or_best(masks, iou, dec.dynamic_multimask_stability_delta,
                                 dec.dynamic_multimask_stability_thresh)
    theirs = dec._dynamic_multimask_via_stability(masks, iou)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    picked_single = (ours[0] == masks[:, :1]).flatten(1).all(1)
    assert picked_single.tolist() == [False, True, True, True, False, False]
