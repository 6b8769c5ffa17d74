"""The fast torch path, proven on a CPU: compiled equals eager with no recompilation once
warm, memory buckets equal the full capacity, precisions are refused where they cannot run,
bf16 on a CPU only where measured faster, and the GPU check (engine/benchmarks/gpu.py) runs
its own code end to end on a CPU without OpenCV or ROS."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import get_config
from engine.memory_layout import MemoryCapacity, bucket_for, pad_to_capacity, spatial_buckets
from engine.model.sam2 import SAM2Model
from engine.runtime import torch_runtime
from engine.runtime.torch_runtime import TorchRuntime, compiled_graphs
from engine.tracker import StreamingTracker

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128
SLOW = os.environ.get("SAM2_ROS_SLOW_TESTS") == "1"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SAM2Model(get_config("sam2.1_hiera_tiny", image_size=SIZE)).eval()


def _frames(n: int, size: int = SIZE) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return [np.roll(base, 3 * t, axis=1) for t in range(n)]


def _track(runtime, frames, model, count_after: int = 2):
    """Prompt 2 objects on frame 0, track the rest: each object's mask logits per frame and
    the graphs compiled after frame ``count_after``."""
    tracker = StreamingTracker(model, max_objects=2, max_cond_frames=1, runtime=runtime)
    tracker.track(frames[0])
    tracker.add_prompt(1, points=[[40, 40]], labels=[1])
    tracker.add_prompt(2, points=[[90, 70]], labels=[1])
    logits, graphs = [], None
    for t, frame in enumerate(frames[1:], start=1):
        if t == count_after + 1:
            graphs = compiled_graphs()
        tracker.track(frame)
        logits.append({i: tracker.mask_logits(i) for i in (1, 2)})
    return logits, compiled_graphs() - graphs


def _max_diff(a, b) -> float:
    return max(float(np.abs(x[i] - y[i]).max()) for x, y in zip(a, b) for i in x)


@pytest.mark.parametrize("backend", [
    "aot_eager",
    pytest.param("inductor", marks=pytest.mark.skipif(
        not SLOW or shutil.which("gcc") is None,
        reason="inductor compiles C++ kernels for every graph: 4 to 8 minutes on this "
               "2-core machine; set SAM2_ROS_SLOW_TESTS=1 to run it (needs gcc)")),
])
def test_compiled_equals_eager_and_does_not_recompile(model, backend):
    """The compiled per-frame step (fullgraph, static shapes, tables built eagerly first)
    gives eager's logits within 1e-4 over 8 tracked frames, and once warm (the memory in its
    steady bucket from frame 1) compiles nothing more."""
    frames = _frames(9)
    eager, _ = _track(TorchRuntime(model), frames, model)
    runtime = TorchRuntime(model, compile=backend,
                           capacity=MemoryCapacity.for_bank(model.cfg, 1))
    compiled, recompiled = _track(runtime, frames, model)
    diff = _max_diff(eager, compiled)
    print(f"\ncompiled ({backend}) vs eager: max logit diff {diff:.2e}, "
          f"{recompiled} graphs compiled after warm-up")
    assert diff <= 1e-4
    assert recompiled == 0


def test_rope_tables_are_built_before_compiling(model):
    runtime = TorchRuntime(model, compile="aot_eager",
                           capacity=MemoryCapacity.for_bank(model.cfg, 1))
    hw = runtime.cfg.feat_size ** 2
    for layer in runtime.model.memory_attention.layers:
        assert (hw, runtime.device) in layer.cross_attn_image._tables


def test_buckets():
    cfg = get_config("sam2.1_hiera_tiny")
    cap = MemoryCapacity.for_bank(cfg, 4)  # 10 spatial, 19 pointers
    assert spatial_buckets(cfg, cap) == (7, 10)
    assert spatial_buckets(cfg, MemoryCapacity(3, 16)) == (3,)
    assert bucket_for(cfg, cap, 1, 1) == MemoryCapacity(7, 16)
    assert bucket_for(cfg, cap, 7, 16) == MemoryCapacity(7, 16)
    assert bucket_for(cfg, cap, 8, 17) == MemoryCapacity(10, 19)
    with pytest.raises(ValueError, match="does not fit the capacity 10 spatial memories"):
        bucket_for(cfg, cap, 11, 3)


def test_bucketed_capacity_equals_full_capacity(model):
    """One object with 3 spatial memories and 5 pointers, another with 7 and 16: attended in
    the variable-length layout, padded to their bucket (7, 16) and to the full capacity of
    4 prompted frames (10, 19): the same output (padding weighs exactly 0)."""
    cfg, gen = model.cfg, torch.Generator().manual_seed(1)
    hw, split = cfg.feat_size ** 2, cfg.d_model // cfg.mem_dim
    feat = torch.randn(2, cfg.d_model, cfg.feat_size, cfg.feat_size, generator=gen)
    pos = torch.randn(feat.shape, generator=gen)
    n_tok = 7 * hw + 16 * split
    memory, memory_pos = (torch.randn(2, n_tok, cfg.mem_dim, generator=gen) for _ in range(2))
    valid = torch.ones(2, n_tok, dtype=torch.bool)
    valid[0, 3 * hw:7 * hw] = False
    valid[0, 7 * hw + 5 * split:] = False
    memory[~valid], memory_pos[~valid] = 0.0, 0.0
    with torch.inference_mode():
        variable = model.attend_memory(feat, pos, memory, memory_pos, 16 * split, valid)
        out = {}
        for cap in (MemoryCapacity(7, 16), MemoryCapacity.for_bank(cfg, 4)):
            m, p, v = pad_to_capacity(cfg, cap, memory, memory_pos, 16 * split, valid)
            assert m.shape[1] == cap.tokens(cfg)
            out[cap] = model.attend_memory(feat, pos, m, p, cap.pointer_tokens(cfg), v)
    bucket, full = out.values()
    assert torch.allclose(bucket, full, atol=1e-5, rtol=0)
    assert torch.allclose(bucket, variable, atol=1e-5, rtol=0)


def test_compiled_runtime_asks_for_its_bucket(model):
    runtime = TorchRuntime(model, compile="aot_eager",
                           capacity=MemoryCapacity.for_bank(model.cfg, 4))
    assert runtime.memory_slots(3, 5) == (7, 16)
    assert runtime.memory_slots(9, 18) == (10, 19)
    assert TorchRuntime(model).memory_slots(3, 5) is None  # eager: exactly what is filled


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_cuda_only_precisions_are_refused_on_cpu(model, precision):
    with pytest.raises(ValueError, match=rf"precision '{precision}' is not supported by the "
                                         r"torch backend on cpu; use one of fp32, bf16 "
                                         r"\(tf32 needs cuda; fp16 needs cuda\)"):
        TorchRuntime(model, precision=precision)


def test_unknown_compile_backend_is_refused(model):
    with pytest.raises(ValueError, match="compile must be True, False or a torch.compile "
                                         "backend of inductor, aot_eager; got 'fast'"):
        TorchRuntime(model, compile="fast")


def test_cpu_bf16_runs_fp32_where_it_is_slower(model, monkeypatch):
    monkeypatch.setenv("SAM2_ROS_CPU_BF16", "auto")
    slow = torch_runtime.Bf16Probe(threads=1, fp32_s=0.010, bf16_s=0.015)
    monkeypatch.setattr(torch_runtime, "cpu_bf16_probe", lambda: slow)
    with pytest.warns(RuntimeWarning, match=r"bf16 asked for, running fp32: on this CPU bf16 "
                                            r"autocast matrix product 0.67x fp32"):
        runtime = TorchRuntime(model, precision="bf16")
    assert runtime.precision == "fp32" and "0.67x" in runtime.note
    fast = torch_runtime.Bf16Probe(threads=1, fp32_s=0.010, bf16_s=0.005)
    monkeypatch.setattr(torch_runtime, "cpu_bf16_probe", lambda: fast)
    assert TorchRuntime(model, precision="bf16").precision == "bf16"
    monkeypatch.setenv("SAM2_ROS_CPU_BF16", "off")
    with pytest.warns(RuntimeWarning, match="running fp32"):
        assert TorchRuntime(model, precision="bf16").precision == "fp32"
    monkeypatch.setenv("SAM2_ROS_CPU_BF16", "on")
    monkeypatch.setattr(torch_runtime, "cpu_bf16_probe", lambda: slow)
    assert TorchRuntime(model, precision="bf16").precision == "bf16"  # the probe skipped
    monkeypatch.setenv("SAM2_ROS_CPU_BF16", "yes")
    with pytest.raises(ValueError, match=r"\$SAM2_ROS_CPU_BF16 must be auto, on or off"):
        TorchRuntime(model, precision="bf16")


def test_cpu_bf16_probe_measures_both():
    probe = torch_runtime.cpu_bf16_probe()
    assert probe.fp32_s > 0 and probe.bf16_s > 0 and probe.threads == torch.get_num_threads()
    assert torch_runtime.cpu_bf16_probe() is probe  # measured once per thread count


def test_bf16_autocast_keeps_outputs_fp32(model):
    runtime = TorchRuntime(model, precision="bf16")
    with torch.inference_mode():
        f = runtime.encode_image(torch.zeros(1, 3, SIZE, SIZE))
        hw = model.cfg.feat_size ** 2
        out = runtime.attend_memory(f.feat, f.pos, torch.zeros(1, hw + 4, 64),
                                    torch.zeros(1, hw + 4, 64), 4)
    assert {t.dtype for t in (f.feat, f.pos, *f.high_res, out)} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------- the GPU check
NO_CV2_NO_ROS = ("import sys; sys.modules.update(cv2=None, rclpy=None); "
                 "from engine.benchmarks.gpu import main; sys.exit(main(sys.argv[1:]))")


def test_gpu_check_runs_on_cpu_without_opencv_or_ros(tmp_path):
    """``python -m engine.benchmarks.gpu --device cpu --quick``, with cv2, rclpy and tensorrt
    made unimportable (as on the GPU machine): every check passes and the report has each
    part, Meta's predictor included (fp32 and bf16 autocast)."""
    out = tmp_path / "check.md"
    proc = subprocess.run([sys.executable, "-c", NO_CV2_NO_ROS, "--device", "cpu", "--quick",
                           "--out", str(out), "--checkpoints", str(tmp_path),
                           "--budget-s", "1200"],  # every row, however loaded the machine
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = out.read_text() if out.exists() else ""
    print(report or proc.stdout[-3000:] + proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Result: all checks passed" in report
    assert "cpu fp32+compile vs cpu fp32" in report and "graphs compiled after warm-up" in report
    assert "| Meta fp32 |" in report and "| Meta bf16 autocast |" in report
    assert "| ours fp32 |" in report and "RANDOM weights" in report
    assert "TensorRT: not installed here" in report


def _registry_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/sam2/", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _registry_reachable(), reason="the package registry (pypi.org) is "
                    "unreachable from here: make gpu-bundle downloads its packages")
def test_gpu_bundle_builds(tmp_path):
    dest = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "engine.benchmarks.gpu_bundle", "--dest",
                           str(dest)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in ("sam2/sam2_video_predictor.py", "sam2/configs/sam2.1/sam2.1_hiera_t.yaml",
                 "hydra/__init__.py", "omegaconf/__init__.py", "antlr4/__init__.py",
                 "iopath/__init__.py", "yaml/__init__.py", "MANIFEST.txt"):
        assert (dest / path).is_file(), path
    assert not list(dest.rglob("*.cu"))  # no CUDA sources
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    assert size < 60
    assert any(p.name.startswith("_yaml") or "cpython-312" in p.name
               for p in dest.rglob("*.so"))  # the binary parts are CPython 3.12's


def test_autocast_parts_narrow_low_precision_to_the_parts_named(model, monkeypatch):
    """bf16 with autocast on no part is fp32 exactly (the tracked logits equal); on the memory
    attention only, the prompted frame (no memory yet) is fp32 exactly and later frames are
    not; an unknown part is refused."""
    monkeypatch.setenv(torch_runtime.CPU_BF16_ENV, "on")  # bf16 on this CPU whatever its speed
    frames = _frames(4)

    def prompted_and_tracked(**kw):
        rt = TorchRuntime(model, "cpu", precision=kw.pop("precision", "bf16"), **kw)
        tracker = StreamingTracker(model, max_objects=1, max_cond_frames=1, runtime=rt)
        tracker.track(frames[0])
        tracker.add_prompt(1, points=[[40, 40]], labels=[1])
        first = tracker.mask_logits(1)
        for frame in frames[1:]:
            tracker.track(frame)
        return first, tracker.mask_logits(1)

    fp32 = prompted_and_tracked(precision="fp32")
    none = prompted_and_tracked(autocast_parts=())
    assert all(np.array_equal(a, b) for a, b in zip(none, fp32))
    attention = prompted_and_tracked(autocast_parts=("memory_attention",))
    assert np.array_equal(attention[0], fp32[0])
    assert not np.array_equal(attention[1], fp32[1])
    both = prompted_and_tracked()
    assert not np.array_equal(both[0], fp32[0])  # the image encoder in bf16 moves frame 0
    with pytest.raises(ValueError, match="decoder"):
        TorchRuntime(model, "cpu", precision="bf16", autocast_parts=("decoder",))
