"""Parity of our image encoder (Hiera trunk + FPN neck) with Meta's reference, fp32 on CPU.

Each case loads the oracle's randomly perturbed ``image_encoder.*`` weights with strict key
matching, runs the same random image through both, and compares every trunk stage output,
every neck feature level and every position encoding (max |diff| <= ATOL).
Run with ``-s`` to see the measured differences.
"""
from __future__ import annotations

import functools

import pytest
import torch

from engine.config import get_config
from engine.model.image_encoder import build_image_encoder
from oracle import ATOL, build_oracle, max_abs_diff, sub_state_dict

# (model, image size, batch)
CASES = [
    ("sam2_hiera_tiny", 256, 1),
    ("sam2.1_hiera_tiny", 256, 1),
    ("sam2.1_hiera_tiny", 256, 2),
    ("sam2_hiera_base_plus", 256, 1),
    ("sam2.1_hiera_base_plus", 256, 1),
    ("sam2.1_hiera_small", 256, 1),
    ("sam2.1_hiera_large", 256, 1),
    ("sam2.1_hiera_tiny", 1024, 1),
]


def _capture_output(module: torch.nn.Module, store: list):
    return module.register_forward_hook(lambda _m, _i, out: store.append(out))


def _run_with_trunk(encoder: torch.nn.Module, x: torch.Tensor):
    """Run ``encoder(x)`` and also return what its ``trunk`` produced."""
    trunk_out: list = []
    handle = _capture_output(encoder.trunk, trunk_out)
    try:
        out = encoder(x)
    finally:
        handle.remove()
    return out, trunk_out[0]


@functools.lru_cache(maxsize=None)
def measured_diffs(name: str, image_size: int, batch: int) -> dict[str, float]:
    """Max |ours - reference| per output: trunk{i}, feat{i}, pos{i} (level 0 = finest)."""
    oracle = build_oracle(name, image_size)
    ours = build_image_encoder(get_config(name, image_size=image_size)).eval()
    ours.load_state_dict(sub_state_dict(oracle.state_dict(), "image_encoder"), strict=True)

    gen = torch.Generator().manual_seed(1234 + batch)
    x = torch.randn(batch, 3, image_size, image_size, generator=gen)
    with torch.no_grad():
        ref, ref_trunk = _run_with_trunk(oracle.image_encoder, x)
        (feats, pos), our_trunk = _run_with_trunk(ours, x)

    assert len(our_trunk) == len(ref_trunk) == 4
    assert len(feats) == len(ref["backbone_fpn"]) == 3
    assert len(pos) == len(ref["vision_pos_enc"]) == 3
    # max_abs_diff also asserts equal shapes (strides 4, 8, 16 / 32 and widths).
    pairs = {"trunk": (our_trunk, ref_trunk), "feat": (feats, ref["backbone_fpn"]),
             "pos": (pos, ref["vision_pos_enc"])}
    return {f"{kind}{i}": max_abs_diff(a, b)
            for kind, (mine, theirs) in pairs.items()
            for i, (a, b) in enumerate(zip(mine, theirs))}


def _case_id(case) -> str:
    name, size, batch = case
    return f"{name}-{size}-B{batch}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_image_encoder_matches_reference(case, record_property):
    diffs = measured_diffs(*case)
    report = ", ".join(f"{k}={v:.2e}" for k, v in diffs.items())
    print(f"\n{_case_id(case)}: {report}")
    for key, value in diffs.items():
        record_property(key, value)
    assert max(diffs.values()) <= ATOL, f"{_case_id(case)} exceeds ATOL={ATOL}: {report}"


def test_state_dict_keys_match_reference():
    """Key names and shapes equal the reference's under ``image_encoder.`` for every size."""
    for name in ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
                 "sam2.1_hiera_large"):
        ref = sub_state_dict(build_oracle(name, 256).state_dict(), "image_encoder")
        ours = build_image_encoder(get_config(name, image_size=256)).state_dict()
        assert sorted(ours) == sorted(ref), name
        assert all(ours[k].shape == ref[k].shape for k in ours), name
