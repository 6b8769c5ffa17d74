"""The Runtime interface on every backend: same calls, same results as SAM2Model; inputs
checked with messages naming the tensor; TensorRT (and onnxruntime CUDA) tested where a GPU
and the package exist, skipped with the reason elsewhere.

Tiny model, 128 px; onnxruntime vs torch max |diff| <= 1e-4 (the fp32 parity bound).
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from engine.runtime import BACKENDS, InputError, Runtime, TorchRuntime
from engine.runtime_factory import make_runtime
from engine.runtime.tensorrt_build import (BuildOptions, EngineKey, TensorRTUnavailable,
                                           engine_mismatch, profile_shapes)
from export_setup import FEAT, HW, SIZE, cache_root, tiny_export, tiny_fixtures
from oracle import ATOL, max_abs_diff

PTR_TOKENS = 4
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()


# torch bf16 vs fp32 over a 12-frame track of the bundled model: measured mean mask IoU 0.936,
# min 0.801, <= 0.67 % of pixels differ. The compact model's small image encoder is what bf16
# moves most (bf16 attention alone: IoU >= 0.96); tracks then drift apart a little. Tracking
# quality is what bf16 must keep: tests/test_quality.py (J&F within 0.02 of fp32).
BF16_MEAN_IOU, BF16_MAX_PIXELS = 0.85, 0.02


_one_thread, model, exported = tiny_fixtures()


@pytest.fixture(scope="module")
def runtimes(model, tmp_path_factory):
    tiny_export(model, tmp_path_factory)  # shared with test_export: usually already cached
    root = cache_root(tmp_path_factory)
    return {"torch": make_runtime("torch", model),
            "onnxruntime": make_runtime("onnxruntime", model, cache_dir=root, threads=1)}


def _features(model, batch):
    feats = model.encode_image(torch.randn(1, 3, SIZE, SIZE)).expand(batch)
    return feats.feat + 0.5 * torch.randn_like(feats.feat), feats.pos, feats.high_res


def _close(label, got, want):
    d = max(max_abs_diff(a, b) for a, b in zip(got, want))
    print(f"\n{label}: max |diff| {d:.2e}")
    assert d <= ATOL


# ------------------------------------------------------------------ the interface

@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_runtime_interface(runtimes, backend):
    rt = runtimes[backend]
    assert isinstance(rt, Runtime) and rt.name == backend and rt.device.type == "cpu"


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_encode_image(model, runtimes, backend):
    image = torch.randn(1, 3, SIZE, SIZE)
    got, want = runtimes[backend].encode_image(image), model.encode_image(image)
    _close(f"{backend} encode_image", [got.feat, got.pos, *got.high_res],
           [want.feat, want.pos, *want.high_res])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("spatial,pointers", [(1, 0), (3, 5), (7, 16)])
def test_attend_memory_variable_length_input(model, runtimes, backend, spatial, pointers):
    """The tracker's variable-length memory goes in as is; graph runtimes pad it."""
    feat, pos, _ = _features(model, 3)
    n = spatial * HW + pointers * PTR_TOKENS
    memory, memory_pos = torch.randn(3, n, 64), torch.randn(3, n, 64)
    valid = torch.ones(3, n, dtype=torch.bool)
    valid[1, HW:spatial * HW] = False  # object 1 holds fewer spatial memories
    args = (feat, pos, memory, memory_pos, pointers * PTR_TOKENS, valid)
    _close(f"{backend} attend_memory s={spatial} p={pointers}",
           [runtimes[backend].attend_memory(*args)], [model.attend_memory(*args)])


def test_torch_cpu_attention_in_object_groups_equals_one_call(model, monkeypatch):
    """On a CPU, large memories go through attention a few objects at a time (cache-sized
    groups); the result is the one-call result, per object, with the validity masks sliced."""
    import engine.runtime.torch_runtime as torch_runtime

    rt = TorchRuntime(model)
    feat, pos, _ = _features(model, 5)
    n = 3 * HW + 4 * PTR_TOKENS
    memory, memory_pos = torch.randn(5, n, 64), torch.randn(5, n, 64)
    valid = torch.ones(5, n, dtype=torch.bool)
    valid[3, HW:3 * HW] = False  # object 3 holds one spatial memory
    args = (feat, pos, memory, memory_pos, 4 * PTR_TOKENS, valid)
    assert rt.objects_per_attention_call(5, n) == 5  # small: one call
    whole = rt.attend_memory(*args)
    per_object = n * model.cfg.d_model * 4
    monkeypatch.setattr(torch_runtime, "CPU_ATTENTION_GROUP_BYTES", 2 * per_object)
    assert rt.objects_per_attention_call(5, n) == 2  # groups of 2, 2 and 1
    _close("torch attend_memory in groups of 2", [rt.attend_memory(*args)], [whole])
    _close("one call vs the model", [whole], [model.attend_memory(*args)])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("prompt", ["none", "points", "points+mask"])
@pytest.mark.parametrize("multimask", [True, False])
def test_decode(model, runtimes, backend, prompt, multimask):
    feat, _, high_res = _features(model, 3)
    coords = labels = mask = None
    if prompt != "none":
        coords = torch.rand(3, 2, 2) * SIZE
        labels = torch.tensor([[1, 0], [2, 3], [1, 1]], dtype=torch.int32)
    if prompt == "points+mask":
        mask = torch.randn(3, 1, 4 * FEAT, 4 * FEAT) * 5
    got = runtimes[backend].decode(feat, high_res, coords, labels, mask, multimask)
    want = model.decode(feat, high_res, coords, labels, mask, multimask)
    _close(f"{backend} decode {prompt} multimask={multimask}", list(vars(got).values()),
           list(vars(want).values()))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_decode_mask_prompt(model, runtimes, backend):
    feat, _, high_res = _features(model, 2)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[0, :, 20:70, 30:90] = 1  # object 1: an empty mask (absent)
    got = runtimes[backend].decode_mask_prompt(feat, high_res, mask)
    want = model.decode_mask_prompt(feat, high_res, mask)
    _close(f"{backend} decode_mask_prompt", list(vars(got).values()), list(vars(want).values()))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("method", ["encode_memory", "encode_prompt_memory"])
def test_encode_memory(model, runtimes, backend, method):
    feat, _, _ = _features(model, 3)
    logits = torch.randn(3, 1, SIZE, SIZE) * 4
    scores = torch.tensor([[1.0], [-2.0], [0.3]])
    got = getattr(runtimes[backend], method)(feat, logits, scores)
    _close(f"{backend} {method}", got, getattr(model, method)(feat, logits, scores))


# ------------------------------------------------------------------ through the tracker

def _track(runtime, frames, clicks):
    from engine.tracker import StreamingTracker

    tracker = StreamingTracker(max_objects=4, runtime=runtime)
    results = []
    for t, frame in enumerate(frames):
        out = tracker.track(frame)
        for obj_id, xy in clicks.get(t, {}).items():
            out.objects[obj_id] = tracker.add_prompt(obj_id, points=[xy], labels=[1])
        results.append(out.objects)
    return results


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_tracker_same_masks_on_torch_and_onnxruntime(runtimes):
    """Eight frames, two objects prompted on frame 0, a refinement click on frame 3."""
    from engine.tools.synthetic import Scene, click_inside

    frames, masks = zip(*Scene(width=160, height=120, num_objects=2, seed=3).frames(8))
    ids = sorted(masks[0])[:2]
    clicks = {0: {i: click_inside(masks[0][i]) for i in ids},
              3: {ids[0]: click_inside(masks[3][ids[0]])}}
    worst_iou, _, worst_logit = _tracks(*(_track(runtimes[b], frames, clicks)
                                          for b in ("torch", "onnxruntime")))
    print(f"\ntracker torch vs onnxruntime: min mask IoU {worst_iou:.4f}, "
          f"max presence-logit diff {worst_logit:.2e}")
    assert worst_iou >= 0.99 and worst_logit <= 1e-3


def _tracks(results_a, results_b, min_area=0.0):
    """Worst mask IoU (over masks covering at least ``min_area`` of the frame), worst fraction
    of the frame's pixels that differ, worst presence-logit difference between two tracks."""
    worst_iou, worst_pixels, worst_logit = 1.0, 0.0, 0.0
    for r, g in zip(results_a, results_b):
        assert r.keys() == g.keys()
        for i in r:
            a, b = r[i].mask, g[i].mask
            if max(a.mean(), b.mean()) >= min_area:
                worst_iou = min(worst_iou, _iou(a, b))
            worst_pixels = max(worst_pixels, float((a != b).mean()))
            worst_logit = max(worst_logit, abs(r[i].presence_logit - g[i].presence_logit))
    return worst_iou, worst_pixels, worst_logit


def test_fp16_graphs_track_like_fp32(model, runtimes, tmp_path_factory):
    """The fp16 export (TensorRT 11's FP16 input) in onnxruntime vs torch fp32 over 8 frames:
    mask IoU >= 0.98 (the FP16 bound) on masks of at least 1% of the frame, a CPU
    stand-in for the FP16 engines."""
    from engine.tools.synthetic import Scene, click_inside

    fp16 = make_runtime("onnxruntime", model, cache_dir=cache_root(tmp_path_factory),
                        precision="fp16", threads=1)
    frames, masks = zip(*Scene(width=160, height=120, num_objects=2, seed=3).frames(8))
    ids = sorted(masks[0])[:2]
    clicks = {0: {i: click_inside(masks[0][i]) for i in ids},
              3: {ids[0]: click_inside(masks[3][ids[0]])}}
    worst_iou, worst_pixels, worst_logit = _tracks(_track(runtimes["torch"], frames, clicks),
                                                   _track(fp16, frames, clicks), min_area=0.01)
    print(f"\ntracker torch fp32 vs onnxruntime fp16 graphs: min mask IoU {worst_iou:.4f} "
          f"(masks >= 1% of the frame), <= {worst_pixels:.2%} of pixels differ, "
          f"max presence-logit diff {worst_logit:.2e}")
    # random weights make tiny blob masks (~50 px) where 4 boundary pixels cost IoU 0.07
    assert worst_iou >= 0.98 and worst_pixels <= 0.005 and worst_logit <= 0.05


def test_torch_bf16_tracks_like_fp32():
    """torch with the image encoder and memory attention in bfloat16, on the bundled model
    (real masks, not random-weight blobs), 12 frames of a generated scene, two objects: the
    masks stay close to fp32 and the outputs the tracker keeps are fp32."""
    from engine.checkpoint import bundled_checkpoint, load_model
    from engine.tools.synthetic import Scene, click_inside

    model = load_model(bundled_checkpoint("sam2_ros_compact"), "sam2_ros_compact")
    bf16 = make_runtime("torch", model, precision="bf16")
    feats = bf16.encode_image(torch.zeros(1, 3, 192, 192))
    assert feats.feat.dtype == feats.pos.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is untouched
    frames, masks = zip(*Scene(width=320, height=240, num_objects=3, seed=4).frames(12))
    ids = sorted(masks[0])[:2]
    clicks = {0: {i: click_inside(masks[0][i]) for i in ids}}
    a, b = _track(TorchRuntime(model), frames, clicks), _track(bf16, frames, clicks)
    ious = [_iou(x[i].mask, y[i].mask) for x, y in zip(a, b) for i in x]
    worst_iou, worst_pixels, worst_logit = _tracks(a, b, min_area=0.01)
    print(f"\ntracker torch fp32 vs bf16: mean mask IoU {np.mean(ious):.4f}, min {worst_iou:.4f}, "
          f"<= {worst_pixels:.2%} of pixels differ, max presence-logit diff {worst_logit:.2e}")
    assert np.mean(ious) >= BF16_MEAN_IOU and worst_pixels <= BF16_MAX_PIXELS


def test_torch_precision_is_checked(model):
    with pytest.raises(ValueError, match="precision 'fp16' is not supported by the torch "
                                         "backend on cpu; use one of fp32, bf16"):
        TorchRuntime(model, precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8' is not supported by the torch "
                                         "runtime; use one of fp32, tf32, bf16, fp16"):
        TorchRuntime(model, precision="int8")


# ------------------------------------------------------------------ input checks

def test_wrong_image_size_names_the_tensor(runtimes):
    with pytest.raises(InputError, match=r"image_encoder: input image: expected float32 "
                                         r"\(1, 3, 128, 128\), received float32 \(1, 3, 64, 64\)"):
        runtimes["onnxruntime"].encode_image(torch.randn(1, 3, 64, 64))


def test_wrong_dtype_names_the_tensor(runtimes):
    with pytest.raises(InputError, match=r"input image: expected float32 .*received float64"):
        runtimes["onnxruntime"].encode_image(torch.randn(1, 3, SIZE, SIZE, dtype=torch.float64))


def test_object_counts_must_agree(model, runtimes):
    feat, _, _ = _features(model, 3)
    with pytest.raises(InputError, match=r"input mask_logits_high_res: expected dimension 0 "
                                         r"\('objects'\) = 3 as in input feat"):
        runtimes["onnxruntime"].encode_memory(feat, torch.randn(2, 1, SIZE, SIZE),
                                              torch.randn(3, 1))


def test_unknown_and_missing_inputs_are_named(runtimes):
    part = runtimes["onnxruntime"].parts["image_encoder"]
    with pytest.raises(InputError, match=r"missing inputs \['image'\], unexpected inputs "
                                         r"\['images'\]"):
        part.run({"images": torch.randn(1, 3, SIZE, SIZE)})
    with pytest.raises(InputError, match="input image: expected a torch.Tensor"):
        part.run({"image": np.zeros((1, 3, SIZE, SIZE), np.float32)})


def test_memory_beyond_capacity_is_refused(model, runtimes):
    feat, pos, _ = _features(model, 1)
    n = 11 * HW  # the default capacity holds 4 prompted + 6 recent spatial memories
    with pytest.raises(ValueError, match="does not fit the exported capacity"):
        runtimes["onnxruntime"].attend_memory(feat, pos, torch.randn(1, n, 64),
                                              torch.randn(1, n, 64), 0)


def test_tracker_refuses_a_runtime_too_small_for_its_banks(model, runtimes):
    from engine.tracker import StreamingTracker

    with pytest.raises(ValueError, match=r"holds 10 spatial memories and 19 object pointers, "
                                         r"but max_cond_frames=5 needs 11 and 20"):
        StreamingTracker(model, max_cond_frames=5, runtime=runtimes["onnxruntime"])
    StreamingTracker(model, max_cond_frames=4, runtime=runtimes["onnxruntime"])


# ------------------------------------------------------------------ choosing a backend

def test_unknown_backend_is_refused(model):
    with pytest.raises(ValueError, match="unknown backend 'tensorrtt'; choose one of "
                                         + ", ".join(BACKENDS)):
        make_runtime("tensorrtt", model)


def test_torch_compile_runs_on_cpu_too(model):
    """compile=True means inductor (CUDA graphs on a GPU only); on a CPU it compiles too
    (slowly: tests/test_torch_fast.py checks compiled against eager)."""
    runtime = TorchRuntime(model, "cpu", compile=True)
    assert runtime.compiled == "inductor" and not runtime._cuda_graphs
    assert runtime.memory_slots(1, 1) == (model.cfg.num_maskmem, model.cfg.max_obj_ptrs)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present: the CPU-only refusal is moot")
def test_onnxruntime_cuda_without_provider_is_refused(model, tmp_path_factory):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
        make_runtime("onnxruntime", model, device="cuda", cache_dir=cache_root(tmp_path_factory))


@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason="TensorRT and a GPU are present")
def test_tensorrt_unavailable_says_why(model, tmp_path_factory):
    with pytest.raises(TensorRTUnavailable, match="TensorRT|CUDA GPU"):
        make_runtime("tensorrt", model, device="cuda", cache_dir=cache_root(tmp_path_factory))


# ------------------------------------------------------------------ engine cache (no GPU)

def _key(**changes):
    base = dict(part="decoder_multimask", model="sam2.1_hiera_tiny", image_size=SIZE,
                precision="fp16", capacity="", onnx_sha256="ab" * 32, gpu="NVIDIA Orin",
                compute_capability="8.7", tensorrt="10.3.0", max_objects=16, max_points=32)
    base.update(changes)
    return EngineKey(**base)


def test_engine_cache_refuses_stale_and_foreign_engines(tmp_path):
    path = tmp_path / "decoder_multimask.engine"
    assert engine_mismatch(path, _key()) == [f"no engine file {path}"]
    path.write_bytes(b"engine")
    assert "foreign" in engine_mismatch(path, _key())[0]
    path.with_suffix(".json").write_text(json.dumps(vars(_key())))
    assert engine_mismatch(path, _key()) == []
    reasons = engine_mismatch(path, _key(tensorrt="10.8.0", image_size=512))
    assert reasons == ["image_size: engine has 128, wanted 512",
                       "tensorrt: engine has '10.3.0', wanted '10.8.0'"]


def test_optimisation_profile_covers_objects_and_points(model, tmp_path_factory):
    exported = tiny_export(model, tmp_path_factory)
    options = BuildOptions(max_objects=8, opt_objects=2, max_points=6)
    dec = profile_shapes(exported.parts["decoder_multimask"], options)
    assert dec["point_coords"] == ((1, 1, 2), (2, 2, 2), (8, 6, 2))
    assert dec["has_mask_input"] == ((1,), (2,), (8,))
    m = exported.capacity.tokens(model.cfg)
    att = profile_shapes(exported.parts["memory_attention"], options)
    assert att["memory_valid"] == ((1, m), (2, m), (8, m))
    assert profile_shapes(exported.parts["image_encoder"], options) == {}
    with pytest.raises(ValueError, match="opt_objects <= max_objects"):
        BuildOptions(max_objects=2, opt_objects=4)


# ------------------------------------------------------------------ on a GPU

needs_trt = pytest.mark.skipif(
    not (HAS_TRT and HAS_CUDA),
    reason=("tensorrt is not installed" if not HAS_TRT else "no CUDA GPU "
            "(torch.cuda.is_available() is False)"))


@pytest.fixture(scope="module")
def trt_runtimes(model, tmp_path_factory):
    root = cache_root(tmp_path_factory)
    return {p: make_runtime("tensorrt", model, device="cuda", cache_dir=root, precision=p,
                            max_objects=4, max_points=8)
            for p in ("fp32", "fp16")}


@needs_trt
def test_tensorrt_fp32_matches_torch(model, trt_runtimes):
    rt = trt_runtimes["fp32"]
    image = torch.randn(1, 3, SIZE, SIZE, device="cuda")
    feats, want = rt.encode_image(image), model.to("cuda").encode_image(image)
    d = max_abs_diff(feats.feat, want.feat)
    out = rt.decode(want.feat, want.high_res, None, None, None, True)
    ref = model.decode(want.feat, want.high_res, None, None, None, True)
    d = max(d, max_abs_diff(out.low_res_masks, ref.low_res_masks))
    print(f"\ntensorrt fp32 vs torch: {d:.2e}")
    assert d <= 1e-3


@needs_trt
def test_tensorrt_fp16_masks(model, trt_runtimes):
    """FP16 engine masks vs torch fp32: IoU >= 0.98."""
    image = torch.randn(1, 3, SIZE, SIZE, device="cuda")
    coords = torch.tensor([[[40.0, 60.0]]], device="cuda")
    labels = torch.ones(1, 1, dtype=torch.int32, device="cuda")
    masks = []
    for rt in (trt_runtimes["fp16"], TorchRuntime(model, "cuda")):
        f = rt.encode_image(image)
        masks.append((rt.decode(f.feat, f.high_res, coords, labels, None, True)
                      .low_res_masks > 0).cpu().numpy())
    assert _iou(*masks) >= 0.98


@needs_trt
def test_tensorrt_parts_share_one_scratch_buffer_and_stream(trt_runtimes):
    """Contexts without scratch of their own, one buffer sized to the largest part, one
    stream; the glue on the GPU and no torch model held."""
    from engine.model.sam2 import SAM2Model

    for rt in trt_runtimes.values():
        parts = list(rt.parts.values())
        assert rt.scratch.numel() == max(p.scratch_bytes for p in parts)
        assert all(p.stream is rt.stream for p in parts)
        assert rt.glue.no_mem_embed.device.type == "cuda"
        assert not any(isinstance(v, SAM2Model) for v in vars(rt).values())


@needs_trt
def test_tensorrt_checks_inputs(trt_runtimes):
    rt = trt_runtimes["fp16"]
    with pytest.raises(InputError, match="input image: expected"):
        rt.encode_image(torch.randn(1, 3, 64, 64, device="cuda"))
    feat = torch.randn(5, 256, FEAT, FEAT, device="cuda")  # 5 objects > max_objects 4
    with pytest.raises(InputError, match=r"input feat: expected dimension 0 in \[1, 4\]"):
        rt.encode_memory(feat, torch.randn(5, 1, SIZE, SIZE, device="cuda"),
                         torch.randn(5, 1, device="cuda"))


@needs_trt
def test_tensorrt_stale_engine_refused_or_rebuilt(model, trt_runtimes, tmp_path_factory):
    from engine.runtime.tensorrt_build import EngineCacheError, build_engine

    exported = tiny_export(model, tmp_path_factory)
    part = exported.parts["memory_encoder"]
    options = BuildOptions(precision="fp32", max_objects=4, max_points=8)
    root = cache_root(tmp_path_factory) / "tensorrt"
    path = build_engine(part, root, options)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["tensorrt"] = "0.0.0"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(EngineCacheError, match="tensorrt: engine has '0.0.0'"):
        build_engine(part, root, options, on_mismatch="refuse")
    logs = []
    assert build_engine(part, root, options, log=logs.append) == path
    assert any("rebuilding" in line for line in logs)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU (torch.cuda.is_available() is False)")
def test_onnxruntime_cuda_matches_torch(model, tmp_path_factory):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    rt = make_runtime("onnxruntime", model, device="cuda", cache_dir=cache_root(tmp_path_factory))
    image = torch.randn(1, 3, SIZE, SIZE, device="cuda")
    d = max_abs_diff(rt.encode_image(image).feat, model.to("cuda").encode_image(image).feat)
    assert d <= 1e-3
