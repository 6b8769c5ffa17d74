"""What of the GPU path a CPU can prove: runtimes that own their glue and not the model, engine
cache keys per part, FP16 safeguards (normalisations and click features pinned to FP32, the
FP16-vs-FP32 check with its per-part fallback, proven with onnxruntime's FP16 and FP32
graphs), the onnxruntime CUDA provider check, and the GPU memory estimate and its refusal.

Tiny SAM 2.1 at 128 px with random weights (shared with test_export / test_runtimes).
"""
from __future__ import annotations

import gc
import json
import re
import weakref
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch

import engine.runtime_factory as factory
from engine.config import MAX_COND_FRAMES, MAX_OBJECTS, get_config
from engine.export import export_model
from engine.memory_layout import MemoryCapacity
from engine.model.glue import TrackingGlue
from engine.model.sam2 import SAM2Model
from engine.runtime.memory_estimate import (GIB, GPUMemoryError, budget_table, check_fits,
                                            estimate_gpu_memory)
from engine.runtime.onnx_runtime import check_session_providers
from engine.runtime.precision_check import check_fp16_parts
from engine.runtime.tensorrt_build import (BuildOptions, engine_key, engine_mismatch,
                                           engine_path, fp32_layers, onnx_layers,
                                           save_engine)
from engine.runtime_factory import make_runtime
from export_setup import SIZE, cache_root, tiny_fixtures, tiny_model

ROOT = Path(__file__).resolve().parents[1]


_one_thread, model, exported = tiny_fixtures()


def _onnx(model, tmp_path_factory, **opts):
    return make_runtime("onnxruntime", model, cache_dir=cache_root(tmp_path_factory), threads=1,
                        log=None, **opts)


# ------------------------------------------------------------------ runtimes own their glue

def test_glue_is_a_small_copy_with_the_checkpoint_names(model):
    glue = TrackingGlue.of(model)
    own = glue.state_dict()
    assert set(own) < set(model.state_dict())  # Meta's names, a subset of the model's
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in own.items())
    small = sum(p.numel() for p in glue.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"\nglue: {small} of {total} parameters ({small / total:.2%})")
    assert small < 0.05 * total
    assert all(p.data_ptr() != q.data_ptr() for p in glue.parameters()
               for q in model.parameters())  # a copy: the model is not reachable through it


def test_graph_runtime_keeps_no_model_and_tracks_without_it(tmp_path_factory):
    """The model given to make_runtime can be freed: the onnxruntime runtime holds graphs and
    the glue copy only, and a tracker built on the runtime alone tracks."""
    from engine.tracker import StreamingTracker

    model = tiny_model(tmp_path_factory)
    alive = weakref.ref(model)
    runtime = _onnx(model, tmp_path_factory)
    del model
    gc.collect()
    assert alive() is None, "the runtime (or something it holds) keeps the torch model"
    assert not isinstance(runtime.glue, SAM2Model)
    tracker = StreamingTracker(runtime=runtime, max_objects=2)
    frame = torch.randint(0, 255, (96, 128, 3), dtype=torch.uint8).numpy()
    tracker.track(frame)
    result = tracker.add_prompt(1, points=[(40, 50)], labels=[1])
    assert result.mask.shape == (96, 128)
    assert 1 in tracker.track(frame).objects


def test_tracker_refuses_a_model_that_is_not_the_runtimes(model, tmp_path_factory):
    from engine.tracker import StreamingTracker

    other = SAM2Model(get_config("sam2.1_hiera_tiny", image_size=64))
    with pytest.raises(ValueError, match="is not the runtime's"):
        StreamingTracker(other, runtime=_onnx(model, tmp_path_factory))
    with pytest.raises(ValueError, match="needs a model or a runtime"):
        StreamingTracker()


# ------------------------------------------------------------------ engine cache keys

def test_image_encoder_engine_is_reused_across_objects_and_capacities(model, exported,
                                                                      tmp_path_factory,
                                                                      tmp_path):
    """The image encoder's ONNX and engine keys do not move with the object count or the
    memory capacity; the memory attention's do, the decoders' with the click range."""
    other = export_model(model, cache_root(tmp_path_factory) / "onnx",
                         capacity=MemoryCapacity.of(model.cfg), log=None)
    assert other.parts["image_encoder"].path == exported.parts["image_encoder"].path
    gpu = ("NVIDIA Orin", "8.7", "10.3.0")
    small = BuildOptions(max_objects=1, max_points=8)
    large = BuildOptions(max_objects=16, max_points=32)
    key = engine_key(exported.parts["image_encoder"], small, *gpu)
    path = engine_path(tmp_path, key)
    save_engine(path, b"engine bytes", key)
    for part, opts in ((exported.parts["image_encoder"], large),
                       (other.parts["image_encoder"], small),
                       (other.parts["image_encoder"], large)):
        again = engine_key(part, opts, *gpu)
        assert engine_path(tmp_path, again) == path and engine_mismatch(path, again) == []
    att = [engine_key(e.parts["memory_attention"], o, *gpu)
           for e in (exported, other) for o in (small, large)]
    assert len({engine_path(tmp_path, k) for k in att}) == 2  # one file per capacity
    assert len(set(att)) == 4  # ... rebuilt for another object range
    dec_small = engine_key(exported.parts["decoder_multimask"], small, *gpu)
    dec_points = engine_key(exported.parts["decoder_multimask"], replace(small, max_points=32),
                            *gpu)
    assert dec_small != dec_points
    enc = exported.parts["memory_encoder"]
    assert engine_key(enc, small, *gpu) == engine_key(enc, replace(small, max_points=32), *gpu)


def test_one_default_object_count_and_capacity_everywhere(model, exported):
    """The node, ``sam2-engine build``, ``python -m engine.export``, make_runtime and the
    exporter share one object count and one capacity, so engines built ahead are used."""
    from engine.cli import build_parser
    from sam2_ros.config import NodeConfig

    assert BuildOptions().max_objects == MAX_OBJECTS
    assert exported.capacity == MemoryCapacity.for_bank(model.cfg, MAX_COND_FRAMES)
    args = build_parser().parse_args(["build", "x.pt"])
    assert (args.max_objects, args.max_cond_frames) == (MAX_OBJECTS, MAX_COND_FRAMES)
    node = NodeConfig()
    assert (node.max_objects, node.max_cond_frames) == (MAX_OBJECTS, MAX_COND_FRAMES)
    yaml = (ROOT / "config" / "sam2.yaml").read_text()
    assert re.search(rf"max_objects: {MAX_OBJECTS}\b", yaml)
    assert re.search(rf"max_cond_frames: {MAX_COND_FRAMES}\b", yaml)


# ------------------------------------------------------------------ FP16 safeguards

def _nodes(path: Path):
    return list(onnx.load(str(path), load_external_data=False).graph.node)


def test_normalisations_export_as_layer_normalization(exported):
    """Every LayerNorm (LayerNorm2d included) is one LayerNormalization node, which the
    TensorRT builder keeps in FP32; no ReduceMean/Pow/Sqrt chain is left to overflow (the
    Sqrt nodes left are attention's scale, 1/sqrt(head width), on a shape)."""
    for name in ("image_encoder", "decoder_multimask", "memory_encoder", "memory_attention"):
        ops = [n.op_type for n in _nodes(exported.path(name))]
        assert "LayerNormalization" in ops, name
        assert "ReduceMean" not in ops and "Pow" not in ops, (name, sorted(set(ops)))


def test_click_fourier_features_are_pinned_to_fp32(exported):
    """The rule the builder applies to TensorRT layers, applied to the ONNX nodes they come
    from: the LayerNorms, and the click Fourier features (sin, cos and the arithmetic of their
    angles, from the click coordinates on: scale, 2x - 1, @ G, 2 pi), nothing else."""
    graph = onnx.load(str(exported.path("decoder_multimask")), load_external_data=False).graph
    ops = {n.name: n.op_type for n in graph.node}
    pinned = fp32_layers(onnx_layers(graph))
    kinds = sorted(ops[n] for n in pinned)
    print(f"\npinned to FP32 in decoder_multimask: {kinds}")
    assert kinds.count("LayerNormalization") == list(ops.values()).count("LayerNormalization")
    assert {"Sin", "Cos", "MatMul", "Div", "Mul", "Sub"} <= set(kinds)
    # one projection on G per encoding (the clicks', the dense grid's), not the transformer's
    assert kinds.count("MatMul") == kinds.count("Sin") == 2
    feeds_angles = {t for n in graph.node if n.name in pinned for t in n.input}
    assert "point_coords" in feeds_angles  # the walk reaches the clicks themselves


def test_fp16_check_on_real_inputs(model, tmp_path_factory):
    """onnxruntime's FP16 graphs vs its FP32 graphs, part by part, on the probe frame: every
    part within the stated tolerance; a tolerance below the errors fails every part (the check
    can fail)."""
    fp16 = _onnx(model, tmp_path_factory, precision="fp16", check_fp16=False)
    fp32 = _onnx(model, tmp_path_factory)
    checks = check_fp16_parts(fp16, fp32)
    for c in checks.values():
        print(f"\n{c.describe()}: " + ", ".join(f"{k} {v:.1e}" for k, v in c.errors.items()))
    assert set(checks) == set(fp32.parts)
    assert all(c.passed for c in checks.values())
    assert all(c.worst[1] > 0 for c in checks.values())  # FP16 did change something
    strict = check_fp16_parts(fp16, fp32, tolerance=1e-6)
    assert not any(c.passed for c in strict.values())


def test_fp16_part_failing_its_check_falls_back_to_fp32(model, tmp_path_factory, monkeypatch):
    """A tolerance between the parts' errors: the parts above it run their FP32 graphs, the
    log says which and why, the verdict is recorded (no second check), and it tracks."""
    fp16 = _onnx(model, tmp_path_factory, precision="fp16", check_fp16=False)
    errors = sorted(c.worst[1] for c in check_fp16_parts(fp16, _onnx(model, tmp_path_factory))
                    .values())
    cut = (errors[1] + errors[2]) / 2  # the two best pass, the others fail
    monkeypatch.setattr(factory, "FP16_TOLERANCE", cut)
    logs = []
    rt = make_runtime("onnxruntime", model, cache_dir=cache_root(tmp_path_factory), threads=1,
                      precision="fp16", log=logs.append)
    fell_back = [line for line in logs if line.endswith("runs in FP32")]
    print("\n" + "\n".join(logs))
    assert len(fell_back) == 3 and any("checking each FP16 part" in line for line in logs)
    folders = {name: p.path.parent.name for name, p in rt.parts.items()}
    used_fp32 = [name for name, f in folders.items() if "-fp32-" in f]
    assert len(used_fp32) == 3, folders
    logs2 = []
    make_runtime("onnxruntime", model, cache_dir=cache_root(tmp_path_factory), threads=1,
                 precision="fp16", log=logs2.append)
    assert not any("checking" in line for line in logs2)  # the recorded verdict is used
    assert sum(line.endswith("runs in FP32") for line in logs2) == 3
    image = torch.randn(1, 3, SIZE, SIZE)
    assert rt.encode_image(image).feat.dtype == torch.float32


# ------------------------------------------------------------------ onnxruntime CUDA

def test_session_without_the_cuda_provider_is_refused(exported):
    """onnxruntime lists the CUDA provider even when its libraries fail to load, then runs on
    the CPU: what a session really uses is checked, here a CPU session asked to be CUDA."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.path("image_encoder")),
                                   providers=["CPUExecutionProvider"])
    check_session_providers(session, torch.device("cpu"), "image_encoder")
    with pytest.raises(RuntimeError, match=r"image_encoder: device cuda:0 asked for, but "
                                           r"onnxruntime's CUDAExecutionProvider did not load "
                                           r"\(the session runs on \['CPUExecutionProvider'\]\)"):
        check_session_providers(session, torch.device("cuda:0"), "image_encoder")


# ------------------------------------------------------------------ GPU memory estimate

def test_memory_estimate_grows_with_objects_and_capacity():
    cfg = get_config("sam2.1_hiera_tiny")
    cap = MemoryCapacity.for_bank(cfg, MAX_COND_FRAMES)
    one, eight = (estimate_gpu_memory(cfg, n, cap) for n in (1, 8))
    assert one.low < eight.low and one.high < eight.high and eight.low <= eight.high
    assert estimate_gpu_memory(cfg, 8, MemoryCapacity.for_bank(cfg, 1)).high < eight.high
    # the unfused score matrix at 16 objects, 1024 px, fp16: 16 x 4096 x 41036 x 2 bytes
    sixteen = estimate_gpu_memory(cfg, 16, cap)
    assert sixteen.scratch_high - sixteen.scratch_low == 16 * 4096 * cap.tokens(cfg) * 2
    fp32 = estimate_gpu_memory(cfg, 8, cap, "fp32")
    assert 1.99 < fp32.weights / eight.weights <= 2 and fp32.scratch_high == 2 * eight.scratch_high


def test_refusal_names_the_parameter_to_lower():
    cfg = get_config("sam2.1_hiera_tiny")
    cap = MemoryCapacity.for_bank(cfg, MAX_COND_FRAMES)
    need = estimate_gpu_memory(cfg, 16, cap)
    assert check_fits(cfg, 16, cap, "fp16", need.low) == need
    four = estimate_gpu_memory(cfg, 4, cap).low
    with pytest.raises(GPUMemoryError, match=r"16 objects.*lower max_objects to 4 or less"):
        check_fits(cfg, 16, cap, "fp16", four)
    with pytest.raises(GPUMemoryError, match="lower image_size"):
        check_fits(cfg, 16, cap, "fp16", GIB // 2)


def test_readme_jetson_budget_is_the_estimate():
    """The README's memory budget for an 8 GB Orin is this estimate's output, not typed."""
    table = budget_table(get_config("sam2.1_hiera_tiny"), (1, 2, 4, 8, 16), (1, 2, 4))
    assert table in (ROOT / "README.md").read_text()


def test_engine_sidecar_is_json(tmp_path, exported):
    """The engine sidecar holds the per-part key as plain JSON (what the node compares)."""
    key = engine_key(exported.parts["memory_encoder"], BuildOptions(), "GPU", "9.0", "10.8.0")
    path = save_engine(tmp_path / "memory_encoder.engine", b"x", key)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["max_points"] == 0 and meta["max_objects"] == MAX_OBJECTS


def test_tensorrt_older_than_8_6_is_refused_with_the_reason(monkeypatch):
    """JetPack 5's TensorRT 8.5 (a stand-in module of that version: none is installed here)."""
    import sys
    import types

    from engine.runtime.tensorrt_build import TensorRTUnavailable, import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.5.2.2"))
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 8.5.2.2 found; backend 'tensorrt' "
                                                  r"needs >= 8.6.*JetPack 5 ships 8.5"):
        import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    assert import_tensorrt().__version__ == "10.3.0"
