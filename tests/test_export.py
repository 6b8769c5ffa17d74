"""ONNX export: every part vs torch in onnxruntime (CPU), the fixed-capacity memory attention
vs the variable-length one at every fill level, constant dedupe, caching, loud failures.

Tiny model, 128 px, fp32; max |diff| <= 1e-4 (the fp32 parity bound) unless stated otherwise.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from engine.export import ExportCheckError, MemoryCapacity, export_model, pad_to_capacity
from engine.config import MAX_COND_FRAMES
from engine.export.parts import build_part, part_specs
from engine.graph_cache import ExportedPart
from engine.config import get_config
from engine.export.steps import check_signature, check_with_onnxruntime, dedupe_initializers
from export_setup import FEAT, HW, MODEL, SIZE, cache_root, tiny_fixtures
from oracle import ATOL, build_oracle, max_abs_diff

C, MEM_DIM, PTR_TOKENS = 256, 64, 4  # each 256-d pointer is 4 memory tokens


_one_thread, model, exported = tiny_fixtures()


@pytest.fixture(scope="module")
def sessions(exported):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return {name: ort.InferenceSession(str(p.path), opts, providers=["CPUExecutionProvider"])
            for name, p in exported.parts.items()}


def _run(session, **feed):
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {k: v.contiguous().numpy() for k, v in feed.items()})
    return {k: torch.from_numpy(v) for k, v in zip(names, outs)}


def _report(label, pairs):
    diffs = {k: max_abs_diff(a, b) for k, (a, b) in pairs.items()}
    print(f"\n{label}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return max(diffs.values())


# ------------------------------------------------------------------ files and sidecars

def test_every_part_written_with_sidecar(exported):
    folder = exported.path("image_encoder").parent
    assert folder.name.startswith(f"{MODEL}-{SIZE}px-fp32-w")
    assert exported.path("memory_attention").name == "memory_attention-m10p19.onnx"
    for name, part in exported.parts.items():
        meta = json.loads(part.sidecar.read_text())
        assert meta["key"]["model"] == MODEL and meta["key"]["image_size"] == SIZE
        worst = max(meta["check"]["max_abs_diff"].values())
        print(f"\n{part.path.name}: {part.size_bytes / 2**20:.1f} MiB, export check {worst:.2e}")
        assert worst <= ATOL


# ------------------------------------------------------------------ parts vs torch

def test_image_encoder(model, sessions):
    image = torch.randn(1, 3, SIZE, SIZE)
    out = _run(sessions["image_encoder"], image=image)
    ref = model.encode_image(image)
    worst = _report("image_encoder", {"feat": (out["feat"], ref.feat), "pos": (out["pos"], ref.pos),
                                      "high_res_s0": (out["high_res_s0"], ref.high_res[0]),
                                      "high_res_s1": (out["high_res_s1"], ref.high_res[1])})
    assert worst <= ATOL


def _features(model, batch):
    feats = model.encode_image(torch.randn(1, 3, SIZE, SIZE)).expand(batch)
    # conditioned features differ per object; high-res features are shared
    return feats.feat + 0.5 * torch.randn_like(feats.feat), feats.high_res


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_decoder(model, sessions, batch, multimask, with_mask):
    feat, high_res = _features(model, batch)
    coords = torch.rand(batch, 3, 2) * SIZE
    labels = torch.tensor([[1, 0, 1], [2, 3, 1], [1, -1, 0]], dtype=torch.int32)[:batch]
    mask = torch.randn(batch, 1, 4 * FEAT, 4 * FEAT) * 5 if with_mask else None
    name = "decoder_multimask" if multimask else "decoder_singlemask"
    out = _run(sessions[name], feat=feat, high_res_s0=high_res[0], high_res_s1=high_res[1],
               point_coords=coords, point_labels=labels,
               mask_input=mask if with_mask else torch.zeros(batch, 1, 4 * FEAT, 4 * FEAT),
               has_mask_input=torch.full((batch,), with_mask))
    ref = model.decode(feat, high_res, coords, labels, mask, multimask)
    worst = _report(f"{name} B={batch} mask={with_mask}",
                    {k: (out[k], getattr(ref, k)) for k in out})
    assert worst <= ATOL


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("binarize", [False, True])
def test_memory_encoder(model, sessions, batch, binarize):
    feat, _ = _features(model, batch)
    logits = torch.randn(batch, 1, SIZE, SIZE) * 4
    scores = torch.tensor([[2.0], [-1.0], [0.5]])[:batch]  # present and absent objects
    out = _run(sessions["memory_encoder"], feat=feat, mask_logits_high_res=logits,
               object_score_logits=scores, binarize=torch.full((batch,), binarize))
    encode = model.encode_prompt_memory if binarize else model.encode_memory
    features, pos = encode(feat, logits, scores)
    worst = _report(f"memory_encoder B={batch} binarize={binarize}",
                    {"maskmem_features": (out["maskmem_features"], features),
                     "maskmem_pos": (out["maskmem_pos"], pos)})
    assert worst <= ATOL


# ------------------------------------------------------------------ fixed-capacity memory

def _bank(batch, spatial, pointers):
    """Variable-length memory as the tracker builds it: (B, spatial*HW + 4*pointers, 64) x2."""
    n = spatial * HW + pointers * PTR_TOKENS
    return torch.randn(batch, n, MEM_DIM), torch.randn(batch, n, MEM_DIM)


def _oracle_attention(oracle, feat, pos, memory, memory_pos, n_ptr_tokens):
    """Meta's memory attention (sequence-first) on one object's variable-length memory."""
    seq = lambda t: t.transpose(0, 1)  # noqa: E731 - (B, L, C) <-> (L, B, C)
    curr = seq(feat.flatten(2).transpose(1, 2))
    curr_pos = seq(pos.flatten(2).transpose(1, 2))
    out = oracle.memory_attention(curr=curr, memory=seq(memory), curr_pos=curr_pos,
                                  memory_pos=seq(memory_pos), num_obj_ptr_tokens=n_ptr_tokens)
    return seq(out).transpose(1, 2).reshape(feat.shape)


@pytest.mark.parametrize("batch", [1, 3])
def test_memory_attention_full_bank(model, sessions, batch):
    feat, _ = _features(model, batch)
    pos = torch.randn_like(feat)
    cap = MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)  # the default export's
    memory, memory_pos = _bank(batch, cap.spatial, cap.pointers)
    valid = torch.ones(memory.shape[:2], dtype=torch.bool)
    out = _run(sessions["memory_attention"], feat=feat, pos=pos, memory=memory,
               memory_pos=memory_pos, memory_valid=valid)["conditioned"]
    ref = model.attend_memory(feat, pos, memory, memory_pos, cap.pointers * PTR_TOKENS)
    assert _report(f"memory_attention full B={batch}", {"conditioned": (out, ref)}) <= ATOL


@pytest.mark.parametrize("spatial", range(1, 8))
def test_fixed_capacity_equals_variable_length(model, sessions, spatial):
    """One batch of 17 objects holding ``spatial`` memories and 0..16 pointers, padded to the
    fixed capacity in one exported call; each object vs its own variable-length torch run
    and Meta's memory attention."""
    oracle = build_oracle(MODEL, SIZE)
    cfg, cap = model.cfg, MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
    feat, _ = _features(model, 17)
    pos = torch.randn_like(feat)
    banks = [_bank(1, spatial, p) for p in range(17)]
    padded = [pad_to_capacity(cfg, cap, m, mp, p * PTR_TOKENS, None)
              for p, (m, mp) in enumerate(banks)]
    memory, memory_pos, valid = (torch.cat(t) for t in zip(*padded))
    out = _run(sessions["memory_attention"], feat=feat, pos=pos, memory=memory,
               memory_pos=memory_pos, memory_valid=valid)["conditioned"]
    vs_torch, vs_oracle = [], []
    for p, (m, mp) in enumerate(banks):
        one = (feat[p:p + 1], pos[p:p + 1], m, mp)
        vs_torch.append(max_abs_diff(out[p:p + 1], model.attend_memory(*one, p * PTR_TOKENS)))
        vs_oracle.append(max_abs_diff(out[p:p + 1],
                                      _oracle_attention(oracle, *one, p * PTR_TOKENS)))
    print(f"\nspatial={spatial}, pointers 0..16: exported fixed vs torch variable "
          f"max {max(vs_torch):.2e}, vs oracle max {max(vs_oracle):.2e}")
    assert max(vs_torch) <= ATOL and max(vs_oracle) <= ATOL


def test_other_capacity_reexports_only_the_memory_attention(model, exported, tmp_path_factory):
    """SAM 2's own bank (7 spatial memories, 16 pointers) next to the default one (4 prompted
    frames: 10 and 19): only the memory attention is exported again and serves its capacity;
    the image encoder and every other part are the same files, reused."""
    cap = MemoryCapacity.of(model.cfg)
    assert (cap.spatial, cap.pointers) == (7, 16) and exported.capacity != cap
    logs = []
    other = export_model(model, cache_root(tmp_path_factory) / "onnx", capacity=cap,
                         log=logs.append)
    part = other.parts["memory_attention"]
    assert part.path.name == "memory_attention-m7p16.onnx"
    for name in ("image_encoder", "decoder_multimask", "decoder_singlemask", "memory_encoder"):
        assert other.parts[name].path == exported.parts[name].path
        assert other.parts[name].sha256 == exported.parts[name].sha256
    assert not [line for line in logs if "memory_attention" not in line], logs
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(part.path), opts, providers=["CPUExecutionProvider"])
    feat, _ = _features(model, 1)
    pos = torch.randn_like(feat)
    for spatial, pointers in ((1, 0), (6, 15), (7, 16)):
        m, mp = _bank(1, spatial, pointers)
        memory, memory_pos, valid = pad_to_capacity(model.cfg, cap, m, mp, pointers * PTR_TOKENS,
                                                    None)
        out = _run(session, feat=feat, pos=pos, memory=memory, memory_pos=memory_pos,
                   memory_valid=valid)["conditioned"]
        ref = model.attend_memory(feat, pos, m, mp, pointers * PTR_TOKENS)
        assert max_abs_diff(out, ref) <= ATOL


def test_pad_to_capacity_refuses_overflow(model):
    memory, memory_pos = _bank(1, 8, 0)
    with pytest.raises(ValueError, match="does not fit the exported capacity 7 spatial"):
        pad_to_capacity(model.cfg, MemoryCapacity(), memory, memory_pos, 0, None)


# ------------------------------------------------------------------ dedupe, cache, failures

def test_rope_tables_stored_once(exported):
    part = exported.parts["memory_attention"]
    dedupe = part.info["dedupe"]
    graph = onnx.load(str(part.path)).graph
    large = [numpy_helper.to_array(t) for t in graph.initializer if np.prod(t.dims) >= 1024]
    distinct = {(a.dtype.str, a.shape, a.tobytes()) for a in large}
    constants = [n for n in graph.node if n.op_type == "Constant"
                 and np.prod(n.attribute[0].t.dims) >= 1024]
    print(f"\nmemory_attention: {dedupe['bytes_before'] / 2**20:.2f} MiB -> "
          f"{dedupe['bytes_after'] / 2**20:.2f} MiB, {dedupe['merged_tensors']} tensors merged")
    assert len(distinct) == len(large) and not constants
    assert dedupe["merged_tensors"] >= 2 and dedupe["bytes_after"] < dedupe["bytes_before"]


def test_dedupe_merges_identical_constants(tmp_path):
    table = numpy_helper.from_array(np.arange(2048, dtype=np.float32).reshape(32, 64))
    nodes = [helper.make_node("Constant", [], [f"c{i}"], value=table) for i in range(3)]
    nodes += [helper.make_node("Add", [a, f"c{i}"], [b])
              for i, (a, b) in enumerate((("x", "y0"), ("y0", "y1"), ("y1", "y")))]
    io = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [32, 64])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [io("x")], [io("y")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    report = dedupe_initializers(path)
    model = onnx.load(str(path))
    assert report.merged == 2 and len(model.graph.initializer) == 1
    x = np.ones((32, 64), np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, x + 3 * numpy_helper.to_array(table))


def test_cached_parts_are_reused(model, exported, tmp_path_factory):
    logs = []
    again = export_model(model, cache_root(tmp_path_factory) / "onnx", log=logs.append)
    assert logs == [] and again.path("memory_encoder") == exported.path("memory_encoder")


def test_stale_sidecar_is_not_trusted(exported, tmp_path):
    part = exported.parts["memory_encoder"]
    assert ExportedPart.load_if_valid(part.path, part.key) is not None
    meta = json.loads(part.sidecar.read_text())
    meta["key"]["format"] = -1  # written by another version of the exporter
    copy = tmp_path / part.path.name
    copy.write_bytes(part.path.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(meta))
    assert ExportedPart.load_if_valid(copy, part.key) is None


def test_check_fails_loudly(model, exported):
    spec = part_specs(model.cfg, MemoryCapacity())["memory_encoder"]

    class Off(torch.nn.Module):  # torch side off by 1e-3
        def __init__(self):
            super().__init__()
            self.part = build_part(model, "memory_encoder", MemoryCapacity())

        def forward(self, *args):
            features, pos = self.part(*args)
            return features + 1e-3, pos

    with pytest.raises(ExportCheckError, match=r"output maskmem_features max \|diff\| .* > "
                                               r"tolerance 0\.000\d+"):
        check_with_onnxruntime(exported.path("memory_encoder"), Off(), spec,
                               {"objects": 2, "points": 1}, tolerance=1e-4)


def test_signature_check_names_an_input_the_graph_pruned(model, exported):
    """A part whose model never reads an input loses it in the exported graph (SAM 2.0's memory
    encoder and the presence logits): a signature that still lists it is refused at export,
    saying so, rather than failing every feed by name later."""
    spec = part_specs(model.cfg, MemoryCapacity())["memory_encoder"]
    check_signature(exported.path("memory_encoder"), spec)  # the real signature matches
    extra = replace(spec, inputs=(*spec.inputs, replace(spec.inputs[0], name="unused")))
    with pytest.raises(ExportCheckError, match=r"the model does not read \['unused'\]"):
        check_signature(exported.path("memory_encoder"), extra)


@pytest.mark.parametrize("name, reads", [("sam2_hiera_tiny", False), ("sam2.1_hiera_tiny", True),
                                         ("sam2_ros_compact", True)])
def test_memory_encoder_declares_presence_only_where_read(name, reads):
    names = [t.name for t in part_specs(get_config(name, image_size=SIZE),
                                        MemoryCapacity())["memory_encoder"].inputs]
    assert ("object_score_logits" in names) == reads
