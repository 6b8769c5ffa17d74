"""Parity of the memory encoder, RoPE and memory attention with Meta's reference (sam2==1.1.0)."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import get_config
from engine.model.memory_attention import build_memory_attention
from engine.model.memory_encoder import build_memory_encoder
from engine.model.rope import RoPEAttention, axial_rope_tables, rotate, rotate_tiled
from oracle import ATOL, build_oracle, max_abs_diff, sub_state_dict

MODELS = ["sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2_hiera_base_plus", "sam2.1_hiera_base_plus"]
IMAGE_SIZE = 256
FEAT = IMAGE_SIZE // 16  # 16x16 feature grid
HW = FEAT * FEAT
C, MEM_DIM = 256, 64
CAPACITY = 7  # spatial memories in a full bank
PTRS, TOKENS_PER_PTR = 16, C // MEM_DIM  # each 256-d pointer becomes 4 tokens of 64


def _ours_encoder(name):
    oracle = build_oracle(name, IMAGE_SIZE)
    ours = build_memory_encoder(get_config(name, image_size=IMAGE_SIZE)).eval()
    ours.load_state_dict(sub_state_dict(oracle.state_dict(), "memory_encoder"), strict=True)
    return oracle, ours


def _ours_attention(name):
    oracle = build_oracle(name, IMAGE_SIZE)
    ours = build_memory_attention(get_config(name, image_size=IMAGE_SIZE)).eval()
    ours.load_state_dict(sub_state_dict(oracle.state_dict(), "memory_attention"), strict=True)
    return oracle, ours


# ---------------------------------------------------------------- memory encoder

@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
def test_memory_encoder_parity(name, batch, skip_mask_sigmoid):
    oracle, ours = _ours_encoder(name)
    pix_feat = torch.randn(batch, C, FEAT, FEAT)
    masks = torch.randn(batch, 1, IMAGE_SIZE, IMAGE_SIZE) * 4
    if skip_mask_sigmoid:  # the tracker's own scaled sigmoid
        masks = torch.sigmoid(masks * 20.0 - 10.0)
    ref = oracle.memory_encoder(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    feats, pos = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    d_feat = max_abs_diff(feats, ref["vision_features"])
    d_pos = max_abs_diff(pos, ref["vision_pos_enc"][0])
    print(f"\n{name} B={batch} skip={skip_mask_sigmoid}: features {d_feat:.2e} pos {d_pos:.2e}")
    assert d_feat < ATOL and d_pos < ATOL


# ---------------------------------------------------------------- memory attention

def _spatial(batch, n):
    """n spatial memories, sequence-first as the reference concatenates them: (n*HW, B, 64) x2."""
    feats = torch.randn(n, batch, MEM_DIM, FEAT, FEAT)
    pos = torch.randn(n, batch, MEM_DIM, FEAT, FEAT)
    # each (B, 64, h, w) -> flatten(2) (B, 64, HW) -> permute (HW, B, 64); memories in a row
    mem = torch.cat([f.flatten(2).permute(2, 0, 1) for f in feats], dim=0)
    mem_pos = torch.cat([p.flatten(2).permute(2, 0, 1) for p in pos], dim=0)
    return mem, mem_pos


def _pointers(batch, n):
    """n object pointers split like the reference: (n*4, B, 64) tokens and positions."""
    ptrs = torch.randn(n, batch, C)  # (P, B, 256)
    ptr_pos = torch.randn(n, batch, MEM_DIM)  # (P, B, 64)
    # (P, B, 256) -> (P, B, 4, 64) -> (P, 4, B, 64) -> (4P, B, 64): pointer-major, chunks inside
    tokens = ptrs.reshape(n, batch, TOKENS_PER_PTR, MEM_DIM).permute(0, 2, 1, 3).flatten(0, 1)
    return tokens, ptr_pos.repeat_interleave(TOKENS_PER_PTR, dim=0)


def _bf(x):
    """Sequence-first (L, B, C) -> batch-first (B, L, C)."""
    return x.transpose(0, 1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("num_mem,num_ptrs", [(1, 0), (7, 16)])
def test_memory_attention_parity(name, batch, num_mem, num_ptrs):
    oracle, ours = _ours_attention(name)
    curr = torch.randn(HW, batch, C)
    curr_pos = torch.randn(HW, batch, C)
    mem, mem_pos = _spatial(batch, num_mem)
    n_ptr_tok = 0
    if num_ptrs:
        tok, tok_pos = _pointers(batch, num_ptrs)
        mem, mem_pos = torch.cat([mem, tok]), torch.cat([mem_pos, tok_pos])
        n_ptr_tok = tok.shape[0]
    ref = oracle.memory_attention(curr=curr, memory=mem, curr_pos=curr_pos, memory_pos=mem_pos,
                                  num_obj_ptr_tokens=n_ptr_tok)
    out = ours(_bf(curr), _bf(curr_pos), _bf(mem), _bf(mem_pos), num_obj_ptr_tokens=n_ptr_tok)
    d = max_abs_diff(out, _bf(ref))
    print(f"\n{name} B={batch} mem={num_mem} ptr_tokens={n_ptr_tok}: {d:.2e}")
    assert d < ATOL


# ---------------------------------------------------------------- fixed-capacity bank mask

def _bank(batch, fill, num_ptrs, ptr_capacity=PTRS):
    """Unpadded memory (fill spatial + num_ptrs pointers) and its padded fixed-capacity form.

    Padded layout: [fill valid | CAPACITY - fill unused spatial] [num_ptrs valid | unused
    pointer tokens]; returns batch-first tensors and the (B, M) validity mask.
    """
    mem, mem_pos = _spatial(batch, fill)
    tok, tok_pos = _pointers(batch, num_ptrs)
    pad_sp = (CAPACITY - fill) * HW
    pad_ptr = (ptr_capacity - num_ptrs) * TOKENS_PER_PTR
    junk = lambda n: torch.randn(n, batch, MEM_DIM) * 3  # noqa: E731 - finite garbage
    small = (torch.cat([mem, tok]), torch.cat([mem_pos, tok_pos]))
    big = (torch.cat([mem, junk(pad_sp), tok, junk(pad_ptr)]),
           torch.cat([mem_pos, junk(pad_sp), tok_pos, junk(pad_ptr)]))
    valid = torch.cat([torch.ones(fill * HW), torch.zeros(pad_sp),
                       torch.ones(num_ptrs * TOKENS_PER_PTR), torch.zeros(pad_ptr)]).bool()
    valid = valid[None].expand(batch, -1)
    return [_bf(t) for t in small], [_bf(t) for t in big], valid


@pytest.mark.parametrize("fill", range(1, CAPACITY + 1))
def test_memory_valid_padding_is_ignored(fill):
    _, ours = _ours_attention("sam2.1_hiera_tiny")
    curr, curr_pos = torch.randn(1, HW, C), torch.randn(1, HW, C)
    num_ptrs = round(fill * PTRS / CAPACITY)  # pointer section partly filled too (full at 7)
    (mem, mem_pos), (big, big_pos), valid = _bank(1, fill, num_ptrs)
    ref = ours(curr, curr_pos, mem, mem_pos, num_obj_ptr_tokens=num_ptrs * TOKENS_PER_PTR)
    out = ours(curr, curr_pos, big, big_pos, num_obj_ptr_tokens=PTRS * TOKENS_PER_PTR,
               memory_valid=valid)
    d = max_abs_diff(out, ref)
    print(f"\nfill={fill} ptrs={num_ptrs}: padded vs unpadded {d:.2e}")
    assert d < 1e-5


def test_memory_valid_per_batch_item():
    """Two batch items at different fill levels each match their own unpadded run."""
    _, ours = _ours_attention("sam2.1_hiera_tiny")
    curr, curr_pos = torch.randn(2, HW, C), torch.randn(2, HW, C)
    runs = [_bank(1, fill, n_ptr) for fill, n_ptr in ((2, 3), (6, 16))]
    big = torch.cat([r[1][0] for r in runs])
    big_pos = torch.cat([r[1][1] for r in runs])
    valid = torch.cat([r[2] for r in runs])
    out = ours(curr, curr_pos, big, big_pos, num_obj_ptr_tokens=PTRS * TOKENS_PER_PTR,
               memory_valid=valid)
    for i, ((mem, mem_pos), _, v) in enumerate(runs):
        n_ptr_tok = int(v[0, CAPACITY * HW:].sum())
        ref = ours(curr[i:i + 1], curr_pos[i:i + 1], mem, mem_pos, num_obj_ptr_tokens=n_ptr_tok)
        assert max_abs_diff(out[i:i + 1], ref) < 1e-5


@pytest.mark.parametrize("name", ["sam2_hiera_tiny", "sam2.1_hiera_base_plus"])
def test_all_valid_mask_equals_none(name):
    oracle, ours = _ours_attention(name)
    curr, curr_pos = torch.randn(HW, 2, C), torch.randn(HW, 2, C)
    _, (mem, mem_pos), _ = _bank(2, CAPACITY, PTRS)
    n_tok = PTRS * TOKENS_PER_PTR
    valid = torch.ones(mem.shape[:2], dtype=torch.bool)
    plain = ours(_bf(curr), _bf(curr_pos), mem, mem_pos, num_obj_ptr_tokens=n_tok)
    masked = ours(_bf(curr), _bf(curr_pos), mem, mem_pos, num_obj_ptr_tokens=n_tok,
                  memory_valid=valid)
    ref = oracle.memory_attention(curr=curr, memory=_bf(mem), curr_pos=curr_pos,
                                  memory_pos=_bf(mem_pos), num_obj_ptr_tokens=n_tok)
    d_none, d_ref = max_abs_diff(masked, plain), max_abs_diff(masked, _bf(ref))
    print(f"\n{name}: all-valid vs None {d_none:.2e}, vs reference {d_ref:.2e}")
    assert d_none < 1e-6 and d_ref < ATOL


# ---------------------------------------------------------------- RoPE vs complex numbers

def _complex_rope(x, end_x, theta, q_len=None):
    """Independent float64 complex-number RoPE of x (..., N, D); key i sits at cell i % q_len."""
    n, d = x.shape[-2:]
    q_len = q_len or n
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())  # (..., N, D/2)
    out = torch.empty_like(z)
    for i in range(n):
        cell = i % q_len
        px, py = cell % end_x, cell // end_x
        for j in range(d // 2):
            pos, jj = (px, j) if j < d // 4 else (py, j - d // 4)
            angle = pos * theta ** (-4.0 * jj / d)
            out[..., i, j] = z[..., i, j] * complex(math.cos(angle), math.sin(angle))
    return torch.stack((out.real, out.imag), dim=-1).flatten(-2)  # (..., N, D)


@pytest.fixture(params=["eager", "graph"])
def rope_mode(request, monkeypatch):
    """Both forms of the rotation: complex products (eager) and real cos/sin ops (what a traced
    or compiled graph gets)."""
    from engine.model import rope

    monkeypatch.setattr(rope, "_in_graph", lambda: request.param == "graph")
    return request.param


@pytest.mark.parametrize("end_x,end_y,head_dim", [(3, 3, 8), (4, 2, 16), (5, 5, 12)])
def test_rope_tables_match_complex_rotation(end_x, end_y, head_dim, rope_mode):
    theta = 100.0  # a small theta turns the later pairs noticeably too
    x = torch.randn(2, 3, end_x * end_y, head_dim)
    cos, sin = axial_rope_tables(head_dim, end_x, end_y, theta)
    d = max_abs_diff(rotate(x, cos, sin), _complex_rope(x, end_x, theta))
    assert d < 1e-5, d


def test_rope_tiled_keys_match_complex_rotation(rope_mode):
    """rope_k_repeat: key i uses the query grid's cell i % Nq (grid tiled, not interleaved)."""
    end, head_dim, reps, theta = 3, 8, 4, 10.0
    k = torch.randn(2, 1, reps * end * end, head_dim)
    cos, sin = axial_rope_tables(head_dim, end, end, theta)
    d = max_abs_diff(rotate_tiled(k, cos, sin), _complex_rope(k, end, theta, q_len=end * end))
    assert d < 1e-5, d


@pytest.mark.parametrize("num_exclude", [0, 5, 32])
def test_rope_attention_matches_reference_module(num_exclude, rope_mode):
    """Our RoPEAttention vs the reference's (complex) RoPEAttention on a 4x4 grid, 2 heads."""
    from sam2.modeling.sam.transformer import RoPEAttention as RefRoPEAttention

    ref = RefRoPEAttention(64, 2, kv_in_dim=16, rope_theta=10000.0, rope_k_repeat=True,
                           feat_sizes=(4, 4)).eval()
    ours = RoPEAttention(64, 2, kv_in_dim=16, rope_theta=10000.0, rope_k_repeat=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    q, k = torch.randn(3, 16, 64), torch.randn(3, 3 * 16 + num_exclude, 16)
    v = torch.randn_like(k)
    out = ours(q, k, v, num_k_exclude_rope=num_exclude)
    d = max_abs_diff(out, ref(q, k, v, num_k_exclude_rope=num_exclude))
    assert d < 1e-5, d
    assert ours.rope_tables(16, q.device)[0] is ours.rope_tables(16, q.device)[0]  # cached


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_eager_and_graph_rotations_agree():
    """The two forms compute the same products: equal to float32 rounding."""
    from engine.model import rope

    cos, sin = axial_rope_tables(32, 6, 6)
    x = torch.randn(2, 1, 3 * 36, 32)
    eager = rope.rotate_tiled(x, cos, sin)
    with torch.no_grad():
        traced = torch.jit.trace(lambda t: rope.rotate_tiled(t, cos, sin), (x,))
    assert "complex" not in str(traced.graph)  # ONNX has no complex numbers
    assert max_abs_diff(eager, traced(x)) < 1e-6
