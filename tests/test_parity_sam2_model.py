"""SAM2Model's per-frame computations against the reference SAM2Base methods they mirror.

The components are compared one by one in test_parity_*; here the glue around them is:
image features with the decoder's high-res projections, the prompt-to-mask path with presence
gating and object pointers, the mask-prompt-as-output path, new-memory encoding, temporal
encodings of object pointers, and the whole model loaded from an official-format file.
"""
import pytest
import torch

from engine.checkpoint import load_model
from engine.model.sam2 import SAM2Model
from engine.config import MODELS as ALL_MODELS, get_config, reference_config_name
from oracle import ATOL, build_oracle, max_abs_diff, save_official_checkpoint

MODELS = ["sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2_hiera_base_plus", "sam2.1_hiera_base_plus"]
SIZE = 256


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory):
    """(ours, reference) with the same weights, ours loaded from an official-format file."""
    name = request.param
    ref = build_oracle(name, SIZE)
    path = save_official_checkpoint(ref, tmp_path_factory.mktemp(name) / f"{name}.pt")
    return load_model(path, name, image_size=SIZE), ref


def _ref_features(ref, image):
    out = ref.forward_image(image)
    _, feats, pos, sizes = ref._prepare_backbone_features(out)
    b = image.shape[0]
    maps = [f.permute(1, 2, 0).reshape(b, -1, *s) for f, s in zip(feats, sizes)]
    pos_maps = [p.permute(1, 2, 0).reshape(b, -1, *s) for p, s in zip(pos, sizes)]
    return maps, pos_maps


def test_encode_image(pair):
    ours, ref = pair
    image = torch.randn(2, 3, SIZE, SIZE)
    feats = ours.encode_image(image)
    maps, pos_maps = _ref_features(ref, image)
    assert max_abs_diff(feats.feat, maps[-1]) <= ATOL
    assert max_abs_diff(feats.pos, pos_maps[-1]) <= ATOL
    for a, b in zip(feats.high_res, maps[:2]):
        assert max_abs_diff(a, b) <= ATOL


def _prompts(b, n, size):
    coords = torch.rand(b, n, 2) * size
    labels = torch.randint(0, 2, (b, n), dtype=torch.int32)
    return coords, labels


@pytest.mark.parametrize("case", ["click", "clicks", "box", "mask_logits", "none"])
def test_decode_matches_forward_sam_heads(pair, case):
    ours, ref = pair
    torch.manual_seed(1)
    b, h = 2, SIZE // 16
    feat = torch.randn(b, 256, h, h)
    high_res = [torch.randn(b, 32, 4 * h, 4 * h), torch.randn(b, 64, 2 * h, 2 * h)]
    coords = labels = mask = None
    if case in ("click", "clicks"):
        coords, labels = _prompts(b, 1 if case == "click" else 3, SIZE)
    elif case == "box":
        coords = torch.tensor([[[20.0, 30.0], [120.0, 160.0]]] * b)
        labels = torch.tensor([[2, 3]] * b, dtype=torch.int32)
    elif case == "mask_logits":
        coords, labels = _prompts(b, 1, SIZE)
        mask = torch.randn(b, 1, 4 * h, 4 * h) * 5
    multimask = case in ("click", "mask_logits")
    got = ours.decode(feat, high_res, coords, labels, mask, multimask)
    points = None if coords is None else {"point_coords": coords, "point_labels": labels}
    low_multi, _, ious, low, _, ptr, obj = ref._forward_sam_heads(
        feat, points, mask, high_res, multimask_output=multimask)
    for a, e in ((got.low_res_multimasks, low_multi), (got.ious, ious), (got.low_res_masks, low),
                 (got.obj_ptr, ptr), (got.object_score_logits, obj)):
        assert max_abs_diff(a, e) <= ATOL
    assert max_abs_diff(ours.upscale_masks(got.low_res_masks),
                        ref._forward_sam_heads(feat, points, mask, high_res, multimask)[4]) <= ATOL


def test_mask_prompt_used_as_output(pair):
    ours, ref = pair
    b, h = 2, SIZE // 16
    feat = torch.randn(b, 256, h, h)
    high_res = [torch.randn(b, 32, 4 * h, 4 * h), torch.randn(b, 64, 2 * h, 2 * h)]
    mask = torch.zeros(b, 1, SIZE, SIZE, dtype=torch.bool)
    mask[0, :, 40:120, 60:200] = True  # object 0 present, object 1 empty
    got = ours.decode_mask_prompt(feat, high_res, mask)
    low, _, ious, _, _, ptr, obj = ref._use_mask_as_output(feat, high_res, mask)
    for a, e in ((got.low_res_masks, low), (got.ious, ious), (got.obj_ptr, ptr),
                 (got.object_score_logits, obj)):
        assert max_abs_diff(a, e) <= ATOL


def test_encode_memory(pair):
    ours, ref = pair
    b, h = 3, SIZE // 16
    feat = torch.randn(b, 256, h, h)
    masks = torch.randn(b, 1, SIZE, SIZE) * 8
    scores = torch.tensor([[3.0], [-2.0], [0.5]])  # present, absent, present
    got_f, got_p = ours.encode_memory(feat, masks, scores)
    seq = feat.flatten(2).permute(2, 0, 1)  # (hw, B, C) as the reference keeps features
    ref_f, ref_p = ref._encode_new_memory([seq], [(h, h)], masks, scores, is_mask_from_pts=True)
    assert max_abs_diff(got_f, ref_f) <= ATOL
    assert max_abs_diff(got_p, ref_p[-1] if isinstance(ref_p, list) else ref_p) <= ATOL


def test_pointer_temporal_encoding(pair):
    ours, ref = pair
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    t_diff = torch.tensor([0, 3, 1, 2, 5, -1])
    got = ours.pointer_pos(t_diff, max_ptrs=16)
    if ours.cfg.add_tpos_enc_to_obj_ptrs:
        expected = ref.obj_ptr_tpos_proj(get_1d_sine_pe(t_diff / 15, dim=256))
    else:
        expected = torch.zeros(6, 64)
    assert max_abs_diff(got, expected) <= ATOL


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_every_published_model_has_the_reference_keys_and_shapes(name):
    from sam2.build_sam import build_sam2

    cfg = get_config(name, image_size=SIZE)
    ref = build_sam2(reference_config_name(cfg), None, device="cpu",
                     hydra_overrides_extra=[f"++model.image_size={SIZE}"]).state_dict()
    ours = SAM2Model(cfg).state_dict()
    assert ours.keys() == ref.keys()
    assert all(ours[k].shape == ref[k].shape for k in ref)
