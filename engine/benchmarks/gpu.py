"""One command that proves the GPU path: fidelity, recompilations and speed on one device.

    make gpu-bundle                                   # once, where the package registry is
    python -m engine.benchmarks.gpu                   # on the GPU machine (make gpu-check)
    python -m engine.benchmarks.gpu --device cpu --quick --out /tmp/check.md   # same code, CPU

It needs torch and numpy only (no OpenCV, no ROS, nothing fetched). Meta's predictor (the
reference) and its pure-Python needs come from the folder ``make gpu-bundle`` builds
(``.gpu_bundle/`` at the repository root, or ``--bundle``), appended to ``sys.path`` so that
packages already installed win. Without it the reference rows say why they are missing.

What it does, in this order, within ``--budget-s`` (rows past the budget say so):

(a) Fidelity. Device fp32 vs CPU fp32 on tiny at 256 px and on the bundled sam2_ros_compact
    (its own 192 px), twice: with fp32 memories (the device's arithmetic alone: mask logits of
    every object on the prompted frame and the next tracked frames within 1e-3 absolute, the
    logits' scale reported, and mask IoU >= 0.999), then with the bfloat16 memories the tracker
    ships (``engine.tracker.MEMORY_DTYPE``): rounding each memory to bfloat16 turns ~1e-6
    differences into whole bfloat16 steps on the few elements near a rounding boundary (see
    tests/test_tracker_parity.py), so there only the mask IoU >= 0.999 is held and the logit
    difference is reported.
    Then each fast setting (tf32, bf16, fp16, eager and compiled) vs device fp32: mask IoU >=
    0.98 on non-trivial masks (1% to 99% of the frame) on sam2_ros_compact, whose weights are
    real (trained, bundled); tiny's are reported too, marked random unless a real checkpoint
    was found (tiny compiles bf16 only: compile time). Compiled settings also count the graphs
    compiled once warm: must be 0.
(b) Speed at 1024 px, tiny and base_plus, 1 and 8 objects (``--quick``: tiny at 128 px, 1
    and 2 objects, fidelity at 128 px, only the compact model compiled): ours in each
    setting and Meta's predictor in fp32 and bf16 autocast, same weights and frames: median
    ms/frame once the bank is full, FPS, peak GPU memory beyond the weights, warm-up seconds
    (compilation included), and the mask IoU of each against Meta's fp32.
(c) TensorRT (FP16 and FP32 through ``engine.runtime.make_runtime``) when ``tensorrt``
    imports; otherwise a row saying it is absent.

Weights: Meta's checkpoints are looked up in ``--checkpoints`` (default ``checkpoints/``
and ``$SAM2_ROS_CHECKPOINTS``) as their published file names (``sam2.1_hiera_tiny.pt``; fetch
them with ``python -m engine.download``); when absent, the rows use seeded random weights of
the same architecture (the same arithmetic, so the same speed) and say so. Random-weight
masks are never used as evidence of fidelity.

The frames are generated here with numpy (textured discs and boxes drifting over a textured
background), clicks at object centres on frame 0. Writes ``--out`` (default
engine/benchmarks/results/speed_gpu.md on a GPU) and exits 1 when a fidelity or
recompilation check fails.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / ".gpu_bundle"
RESULTS = ROOT / "engine" / "benchmarks" / "results"
SHORT = {"tiny": "sam2.1_hiera_tiny", "base_plus": "sam2.1_hiera_base_plus"}
LOGIT_TOL, CPU_IOU, FAST_IOU = 1e-3, 0.999, 0.98
NONTRIVIAL = (0.01, 0.99)  # mask area fraction for the fast-setting IoU check

# (label, precision, compile): the settings of ours; fp32 eager is the baseline.
GPU_SETTINGS = (("fp32", "fp32", False), ("tf32", "tf32", False), ("bf16", "bf16", False),
                ("fp16", "fp16", False), ("fp32+compile", "fp32", True),
                ("bf16+compile", "bf16", True), ("fp16+compile", "fp16", True))
CPU_SETTINGS = (("fp32", "fp32", False), ("bf16", "bf16", False),
                ("fp32+compile", "fp32", True))
# --quick on a CPU compiles with backend aot_eager: the same graph capture, guards and
# recompilation count, without inductor's C++ compilation (minutes per graph on small CPUs).
QUICK_CPU_COMPILE = "aot_eager"
# Speed rows in priority order (the budget may stop the list).
GPU_SPEED = ("fp32", "bf16", "bf16+compile", "tf32", "fp16", "fp16+compile", "fp32+compile")
CPU_SPEED = ("fp32", "bf16")


def use_bundle(path: Path) -> bool:
    """Append the bundle folder to sys.path (installed packages win); True if it exists."""
    if path.is_dir():
        if str(path) not in sys.path:
            sys.path.append(str(path))
        return True
    return False


# ----------------------------------------------------------------------------- frames
def make_frames(size: int, objects: int, count: int, seed: int = 0
                ) -> tuple[list[np.ndarray], dict[int, tuple[float, float]]]:
    """``count`` (size, size, 3) uint8 frames: textured discs and boxes drifting over a
    textured background; a click at each object's centre on frame 0 (objects do not overlap
    there)."""
    rng = np.random.default_rng(seed)
    cells = max(size // 32, 2)
    coarse = rng.uniform(40, 200, (cells, cells, 3))
    reps = -(-size // cells)
    background = np.kron(coarse, np.ones((reps, reps, 1)))[:size, :size]
    background += rng.normal(0, 8, background.shape)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    grid = int(np.ceil(np.sqrt(objects)))
    step = size / grid
    shapes = []
    for i in range(objects):
        cy, cx = (i // grid + 0.5) * step, (i % grid + 0.5) * step
        r = step * rng.uniform(0.22, 0.32)
        color = rng.uniform(0, 255, 3)
        velocity = rng.uniform(-1, 1, 2) * size / 200
        shapes.append((cy, cx, r, color, velocity, i % 2))
    frames = []
    for t in range(count):
        img = background.copy()
        for cy, cx, r, color, (vy, vx), box in shapes:
            y, x = cy + vy * t, cx + vx * t
            inside = ((np.abs(yy - y) < r) & (np.abs(xx - x) < r * 0.8) if box
                      else (yy - y) ** 2 + (xx - x) ** 2 < r * r)
            stripes = 25 * np.sin((xx + yy) / max(r / 3, 1))
            img[inside] = (color + stripes[inside, None]).clip(0, 255)
        frames.append(img.clip(0, 255).astype(np.uint8))
    clicks = {i + 1: (float(s[1]), float(s[0])) for i, s in enumerate(shapes)}
    return frames, clicks


# ------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """One contestant over one video: per-frame times after the warm-up, masks of every
    frame (prompted frame first), mask logits (when asked), graphs compiled after warm-up."""

    times: list[float] = field(default_factory=list)
    masks: list[dict[int, np.ndarray]] = field(default_factory=list)
    logits: list[dict[int, np.ndarray]] = field(default_factory=list)
    warmup_s: float = 0.0
    recompiles: int | None = None
    peak_mib: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3 if self.times else float("nan")


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _memory_start(device) -> float:
    import torch

    if torch.device(device).type != "cuda":
        return 0.0
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _memory_peak(device, start: float) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


def run_ours(runtime, frames, clicks, warmup: int, with_logits: bool = False,
             memory_dtype=None) -> Run:
    """Our tracker: frame 0 prompted, ``warmup`` frames untimed, the rest timed (memories
    stored as ``memory_dtype``, default the tracker's)."""
    from ..runtime.torch_runtime import compiled_graphs
    from ..tracker import MEMORY_DTYPE, StreamingTracker

    run = Run()
    start_mem = _memory_start(runtime.device)
    begin = time.perf_counter()
    tracker = StreamingTracker(max_objects=len(clicks), max_cond_frames=1, runtime=runtime,
                               memory_dtype=memory_dtype or MEMORY_DTYPE)
    tracker.track(frames[0])
    first = {i: tracker.add_prompt(i, points=[p], labels=[1]).mask for i, p in clicks.items()}
    run.masks.append(first)
    if with_logits:
        run.logits.append({i: tracker.mask_logits(i) for i in clicks})
    graphs = None
    for t, frame in enumerate(frames[1:], start=1):
        if t == warmup + 1:
            _sync(runtime.device)
            run.warmup_s = time.perf_counter() - begin
            graphs = compiled_graphs()
        _sync(runtime.device)
        start = time.perf_counter()
        result = tracker.track(frame)
        _sync(runtime.device)
        if t > warmup:
            run.times.append(time.perf_counter() - start)
        run.masks.append({i: o.mask for i, o in result.objects.items()})
        if with_logits:
            run.logits.append({i: tracker.mask_logits(i) for i in clicks})
    if graphs is not None and getattr(runtime, "compiled", False):
        run.recompiles = compiled_graphs() - graphs
    run.peak_mib = _memory_peak(runtime.device, start_mem)
    return run


def run_reference(predictor, frames, clicks, warmup: int, autocast: str | None) -> Run:
    from . import reference

    run = Run()
    start_mem = _memory_start(predictor.device)
    begin = time.perf_counter()
    video = reference.ReferenceVideo(predictor, frames, clicks, autocast=autocast)
    run.masks.append({})
    for t in range(1, len(frames)):
        if t == warmup + 1:
            run.warmup_s = time.perf_counter() - begin
        record, masks = video.step()
        if t > warmup:
            run.times.append(record.total)
        run.masks.append(masks)
    run.peak_mib = _memory_peak(predictor.device, start_mem)
    return run


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_masks(a: Run, b: Run, nontrivial: bool) -> tuple[float, int]:
    """(min IoU, masks compared) over frames both have; with ``nontrivial`` only masks
    covering 1% to 99% of the frame in either run."""
    worst, n = 1.0, 0
    for ma, mb in zip(a.masks, b.masks):
        for i in set(ma) & set(mb):
            if nontrivial and not any(NONTRIVIAL[0] <= m.mean() <= NONTRIVIAL[1]
                                      for m in (ma[i], mb[i])):
                continue
            worst, n = min(worst, mask_iou(ma[i], mb[i])), n + 1
    return worst, n


def worst_mask(a: Run, b: Run) -> str:
    """Where the lowest IoU of ``compare_masks(a, b, nontrivial=True)`` is: frame, object and
    the mask's area in pixels in ``b``."""
    worst = None
    for t, (ma, mb) in enumerate(zip(a.masks, b.masks)):
        for i in sorted(set(ma) & set(mb)):
            if not any(NONTRIVIAL[0] <= m.mean() <= NONTRIVIAL[1] for m in (ma[i], mb[i])):
                continue
            iou = mask_iou(ma[i], mb[i])
            if worst is None or iou < worst[0]:
                worst = (iou, t, i, int(mb[i].sum()))
    return "none" if worst is None else f"frame {worst[1]}, object {worst[2]}, {worst[3]} px"


def compare_logits(a: Run, b: Run) -> tuple[float, float]:
    """(max |a - b|, max |a|) over every object's mask logits on every frame."""
    diff = scale = 0.0
    for la, lb in zip(a.logits, b.logits):
        for i in la:
            diff = max(diff, float(np.abs(la[i] - lb[i]).max()))
            scale = max(scale, float(np.abs(la[i]).max()))
    return diff, scale


# ---------------------------------------------------------------------------- models
@dataclass
class Weights:
    state: dict | None  # None: seeded random weights
    source: str


def find_checkpoint(name: str, dirs: list[Path]) -> Path | None:
    from ..config import get_config

    file = get_config(name).checkpoint_name
    for d in dirs:
        if (d / file).is_file():
            return d / file
    return None


def load_weights(name: str, dirs: list[Path]) -> Weights:
    from ..checkpoint import read_state_dict

    path = find_checkpoint(name, dirs)
    if path is None:
        from ..config import get_config

        file = get_config(name).checkpoint_name
        return Weights(None, f"RANDOM weights (seeded; no {file} in "
                             f"{', '.join(str(d) for d in dirs)}: carry it there for real "
                             "masks)")
    return Weights(read_state_dict(path), f"real weights ({path.name})")


def build_ours(name: str, size: int, weights: Weights):
    """Our SAM2Model on the CPU: the checkpoint's weights, or the reference's seeded random
    ones (``reference.build_predictor``) when it is available, else our own seeded init."""
    import torch

    from ..config import get_config
    from ..model.sam2 import SAM2Model
    from . import reference

    cfg = get_config(name, image_size=size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SAM2Model(cfg)
    if weights.state is not None:
        model.load_state_dict(weights.state, strict=True)
    elif cfg.name in SHORT.values() and reference.available():
        model.load_state_dict(reference.build_predictor(cfg).state_dict(), strict=True)
    return model.eval()


def bundled_compact():
    from ..checkpoint import bundled_checkpoint, load_model

    return load_model(bundled_checkpoint("sam2_ros_compact"), "sam2_ros_compact")


def make_torch(model, device, precision: str, compiled: bool, autocast_parts=None,
               tf32: bool | None = None):
    from ..memory_layout import MemoryCapacity
    from ..runtime_factory import make_runtime

    return make_runtime("torch", model, device=device, precision=precision, compile=compiled,
                        capacity=MemoryCapacity.for_bank(model.cfg, 1),
                        autocast_parts=autocast_parts, tf32=tf32)


# --ablate: (label, precision, autocast parts, TF32 on the fp32 parts)
ABLATIONS = (("tf32", "tf32", None, True), ("{p}", "{p}", None, True),
             ("{p}, TF32 off", "{p}", None, False),
             ("{p} image encoder only", "{p}", ("image_encoder",), True),
             ("{p} memory attention only", "{p}", ("memory_attention",), True),
             ("{p} neither part (TF32 only)", "{p}", (), True))


def ablate(rep: Report, precisions: tuple[str, ...]) -> None:
    """Which part of a fast setting moves the compact model's masks: each low precision with
    autocast on one part only, on neither, and with TF32 off, against device fp32 (eager), on
    the fast-setting rows' frames. Rows: min IoU over every mask, where, and the largest
    logit difference there."""
    import torch

    device = rep.device
    model = _copy_to(bundled_compact(), device)
    warm = model.cfg.num_maskmem + 1
    frames, clicks = make_frames(model.cfg.image_size, 2, warm + 3, seed=2)
    base = run_ours(make_torch(model, device, "fp32", False), frames, clicks, warm, True)
    rep.add("## Ablation: which part moves the masks (sam2_ros_compact, eager)")
    rep.add("")
    rep.add("| setting | min IoU vs fp32 | where | max logit diff | frame-0 min IoU |")
    rep.add("| --- | --- | --- | --- | --- |")
    done = set()
    for p in precisions:
        for label, precision, parts, tf32 in ABLATIONS:
            label, precision = label.format(p=p), precision.format(p=p)
            if label in done or (precision != "fp32" and not device.startswith("cuda")
                                 and precision in ("tf32", "fp16")):
                continue
            done.add(label)
            runtime = make_torch(model, device, precision, False, parts, tf32)
            run = run_ours(runtime, frames, clicks, warm, True)
            iou = compare_masks(run, base, nontrivial=False)[0]
            first = min(mask_iou(run.masks[0][i], base.masks[0][i]) for i in base.masks[0])
            diff = compare_logits(run, base)[0]
            rep.add(f"| {label} | {iou:.4f} | {worst_mask(run, base)} | {diff:.3f} | "
                    f"{first:.4f} |")
            del runtime
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    rep.add("")


def _copy_to(model, device):
    import copy

    return copy.deepcopy(model).to(device)


# ---------------------------------------------------------------------------- report
class Report:
    def __init__(self, args, device: str) -> None:
        self.args, self.device = args, device
        self.lines: list[str] = []
        self.failures: list[str] = []
        self.start = time.monotonic()

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def add(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)
        self.write()

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return "pass" if ok else "**FAIL**"

    def write(self) -> None:
        out = self.args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(self.lines + self._footer()) + "\n")

    def _footer(self) -> list[str]:
        verdict = ("all checks passed" if not self.failures
                   else "FAILED: " + "; ".join(self.failures))
        return ["", f"Result: {verdict} ({time.monotonic() - self.start:.0f} s)."]


def device_line(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA "
                f"{torch.version.cuda}, torch {torch.__version__}, host CPU {cpu}")
    return f"CPU {cpu} ({torch.get_num_threads()} threads), torch {torch.__version__}"


# ----------------------------------------------------------------------------- parts
def fidelity(rep: Report, settings, quick: bool, dirs: list[Path],
             which=("compact", "tiny")) -> None:
    import torch

    device = rep.device
    rep.add("## (a) Fidelity")
    rep.add("")
    rep.add("| model | weights | what | compared | figure | bound | result |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- |")
    cases = [("sam2_ros_compact", None, "real weights (bundled)")] * ("compact" in which)
    cases += [(SHORT["tiny"], 128 if quick else 256, None)] * ("tiny" in which)
    for name, size, source in cases:
        if name == "sam2_ros_compact":
            model = bundled_compact()
        else:
            weights = load_weights(name, dirs)
            source = weights.source
            model = build_ours(name, size, weights)
        real = not source.startswith("RANDOM")
        size = model.cfg.image_size
        frames, clicks = make_frames(size, 2, 3 if quick else 6, seed=1)
        short = name.replace("sam2.1_hiera_", "")
        dev_model = _copy_to(model, device)
        for memories, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            cpu_run = run_ours(make_torch(_copy_to(model, "cpu"), "cpu", "fp32", False),
                               frames, clicks, warmup=len(frames), with_logits=True,
                               memory_dtype=dtype)
            base = run_ours(make_torch(dev_model, device, "fp32", False), frames, clicks,
                            warmup=len(frames), with_logits=True, memory_dtype=dtype)
            diff, scale = compare_logits(cpu_run, base)
            iou, n = compare_masks(cpu_run, base, nontrivial=False)
            held = memories == "fp32"  # bf16 memories: the logit difference is reported only
            ok = (diff <= LOGIT_TOL or not held) and iou >= CPU_IOU
            bound = f"{LOGIT_TOL:.1e}, {CPU_IOU}" if held else f"IoU {CPU_IOU}"
            rep.add(f"| {short} {size}px | {source} | {device} fp32 vs cpu fp32, {memories} "
                    f"memories | {n} masks, {len(frames)} frames | logits max diff {diff:.2e} "
                    f"(scale {scale:.1f}), min IoU {iou:.4f} | {bound} | "
                    f"{rep.check(ok, f'{short} {device} vs cpu ({memories} memories)')} |")
        warm = 2 if quick else model.cfg.num_maskmem + 1
        frames, clicks = make_frames(size, 2, warm + 3, seed=2)
        base = run_ours(make_torch(dev_model, device, "fp32", False), frames, clicks, warm)
        for label, precision, compiled in settings:
            if label == "fp32" or (compiled and name != "sam2_ros_compact"
                                   and (quick or label != "bf16+compile")):
                continue  # compile time: tiny compiles bf16 only (none with --quick)
            if rep.left() < 30:
                rep.add(f"| {short} {size}px | {source} | {label} | - | not run: time budget "
                        "spent | | |")
                continue
            try:
                run = run_ours(make_torch(dev_model, device, precision, compiled), frames,
                               clicks, warm)
            except Exception as err:  # noqa: BLE001 - a setting that breaks is a row
                rep.add(f"| {short} {size}px | {source} | {label} | - | error: "
                        f"{_one_line(err)} | | {rep.check(False, f'{short} {label} ran')} |")
                traceback.print_exc()
                continue
            iou, n = compare_masks(run, base, nontrivial=True)
            figure = f"min IoU {iou:.4f} ({worst_mask(run, base)})" if n else \
                "no non-trivial masks"
            if run.recompiles is not None:
                figure += f", {run.recompiles} graphs compiled after warm-up"
            verdicts = []
            if real:
                verdicts.append(rep.check(n > 0 and iou >= FAST_IOU, f"{short} {label} IoU"))
            else:
                verdicts.append("IoU reported only (random weights)")
            if run.recompiles is not None:
                verdicts.append(rep.check(run.recompiles == 0, f"{short} {label} recompiled"))
            verdict = ", ".join(verdicts)
            rep.add(f"| {short} {size}px | {source} | {device} {label} vs {device} fp32 | "
                    f"{n} masks, {len(frames) - warm - 1} timed frames | {figure} | "
                    f"IoU >= {FAST_IOU}, 0 recompiles | {verdict} |")
        del dev_model
        _free()
    rep.add("")


def speed(rep: Report, args, speed_settings, settings, dirs: list[Path]) -> None:
    """Pass 1: Meta fp32 / bf16 and our first settings in every case; pass 2: the rest, so
    that a budget spent early still leaves every case its main rows."""
    from . import reference

    device = rep.device
    size = 128 if args.quick else 1024
    objects = (1, 2) if args.quick else (1, 8)
    models = ("tiny",) if args.quick else ("tiny", "base_plus")
    warm, timed = (2, 2) if args.quick else (8, 10)
    have_ref = reference.available()
    full = "" if args.quick else " once the bank is full"
    rep.add(f"## (b) Speed at {size} px: median of {timed} frames after {warm}{full}")
    rep.add("")
    if not have_ref:
        rep.add("Meta's predictor: not importable (sam2 / hydra missing: build the bundle "
                "with `make gpu-bundle` and carry `.gpu_bundle/`); its rows are left out.")
        rep.add("")
    rep.add("| model | weights | objects | contestant | ms/frame | FPS | peak GPU MiB beyond "
            "weights | warm-up s | min IoU vs Meta fp32 |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_label = {s[0]: s for s in settings}
    first = [("Meta fp32", None), ("Meta bf16 autocast", "bf16")] if have_ref else []
    first += [(f"ours {label}", label) for label in speed_settings[:3]]
    rest = [(f"ours {label}", label) for label in speed_settings[3:]]
    built: dict[str, tuple] = {}
    ref_fp32: dict[tuple, Run] = {}
    for rows in (first, rest):
        for short in models:
            for n in objects:
                frames, clicks = make_frames(size, n, 1 + warm + timed, seed=3)
                for row, what in rows:
                    if rep.left() < 20:
                        rep.add(f"| {short} | - | {n} | {row} | not run: time budget spent "
                                "| | | | |")
                        continue
                    if short not in built:
                        built[short] = _speed_models(short, size, device, dirs, have_ref)
                    wlabel, model, predictor = built[short]
                    try:
                        if row.startswith("Meta"):
                            run = run_reference(predictor, frames, clicks, warm, what)
                            if what is None:
                                ref_fp32[short, n] = run
                        else:
                            _, precision, compiled = by_label[what]
                            run = run_ours(make_torch(model, device, precision, compiled),
                                           frames, clicks, warm)
                    except Exception as err:  # noqa: BLE001 - a contestant that breaks is a row
                        traceback.print_exc()
                        rep.add(f"| {short} | {wlabel} | {n} | {row} | error: "
                                f"{_one_line(err)} | | | | |")
                        continue
                    finally:
                        _free()
                    iou, ref = "-", ref_fp32.get((short, n))
                    if ref is not None and run is not ref:
                        iou = f"{compare_masks(run, ref, nontrivial=False)[0]:.3f}"
                        if wlabel == "random":  # near-zero logits: any rounding flips pixels
                            iou += " (random weights: not evidence)"
                    peak = "-" if run.peak_mib is None else f"{run.peak_mib:.0f}"
                    rep.add(f"| {short} | {wlabel} | {n} | {row} | {run.median_ms:.1f} | "
                            f"{1e3 / run.median_ms:.1f} | {peak} | {run.warmup_s:.1f} | "
                            f"{iou} |")
    rep.add("")


def _speed_models(short: str, size: int, device: str, dirs: list[Path], have_ref: bool):
    """(weights label, our model on the device, Meta's predictor on the device or None)."""
    from . import reference

    name = SHORT[short]
    weights = load_weights(name, dirs)
    cpu_model = build_ours(name, size, weights)
    model = _copy_to(cpu_model, device)
    predictor = None
    if have_ref:
        predictor = reference.build_predictor(model.cfg, device=device,
                                              state_dict=cpu_model.state_dict())
    return ("real" if weights.state is not None else "random"), model, predictor


def tensorrt_rows(rep: Report, args, dirs: list[Path]) -> None:
    rep.add("## (c) TensorRT")
    rep.add("")
    if importlib.util.find_spec("tensorrt") is None:
        rep.add("TensorRT: not installed here (`import tensorrt` finds nothing): no TensorRT "
                "rows.")
        rep.add("")
        return
    if not rep.device.startswith("cuda"):
        rep.add("TensorRT: installed, but the device is not a GPU: no TensorRT rows.")
        rep.add("")
        return
    import tempfile

    from ..memory_layout import MemoryCapacity
    from ..runtime_factory import make_runtime

    size = 256 if args.quick else 1024
    weights = load_weights(SHORT["tiny"], dirs)
    model = _copy_to(build_ours(SHORT["tiny"], size, weights), rep.device)
    warm, timed = 8, (2 if args.quick else 10)
    frames, clicks = make_frames(size, 1, 1 + warm + timed, seed=3)
    rep.add("| model | precision | ms/frame | FPS | min IoU vs TensorRT FP32 | note |")
    rep.add("| --- | --- | --- | --- | --- | --- |")
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        for precision in ("fp32", "fp16"):
            if rep.left() < 60:
                rep.add(f"| tiny {size}px | {precision} | not run: time budget spent | | | |")
                continue
            try:
                rt = make_runtime("tensorrt", model, device=rep.device, precision=precision,
                                  capacity=MemoryCapacity.for_bank(model.cfg, 1),
                                  cache_dir=Path(cache), log=lambda s: print(s, flush=True))
                runs[precision] = run = run_ours(rt, frames, clicks, warm)
            except Exception as err:  # noqa: BLE001 - reported as a row
                traceback.print_exc()
                rep.add(f"| tiny {size}px | {precision} | error: {_one_line(err)} | | | |")
                continue
            iou = "-"
            if precision == "fp16" and "fp32" in runs:
                iou = f"{compare_masks(run, runs['fp32'], nontrivial=True)[0]:.4f}"
            rep.add(f"| tiny {size}px | {precision} | {run.median_ms:.1f} | "
                    f"{1e3 / run.median_ms:.1f} | {iou} | warm-up (build) "
                    f"{run.warmup_s:.0f} s |")
    rep.add("")


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _one_line(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}".replace("|", "/").replace("\n", " ")
    return text[:300]


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.benchmarks.gpu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few frames, CPU settings: the CI run of the same code")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report (default: engine/benchmarks/results/speed_gpu.md, "
                        "or gpu_check_cpu.md with --device cpu)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget; rows past it are listed as not run (default 450 "
                        "on a GPU, 110 with --quick)")
    p.add_argument("--checkpoints", type=Path, action="append", default=None,
                   help="folder of Meta's checkpoints (repeatable; default checkpoints/ and "
                        "$SAM2_ROS_CHECKPOINTS)")
    p.add_argument("--bundle", type=Path, default=BUNDLE,
                   help="the folder make gpu-bundle builds (default .gpu_bundle/)")
    p.add_argument("--skip-speed", action="store_true", help="fidelity checks only")
    p.add_argument("--ablate", action="store_true",
                   help="only the ablation rows (which part of bf16 / fp16 moves the compact "
                        "model's masks), a minute on a GPU")
    p.add_argument("--cases", default="compact,tiny",
                   help="fidelity models, comma-separated: compact, tiny (default both)")
    p.add_argument("--settings", default=None,
                   help="only these settings, comma-separated labels (e.g. bf16,fp16); fp32 "
                        "always runs (the baseline)")
    args = p.parse_args(argv)
    bundled = use_bundle(args.bundle)
    # every setting runs as asked: bf16 on a CPU even where the runtime's probe would not pick it
    os.environ.setdefault("SAM2_ROS_CPU_BF16", "on")

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {device}: torch {torch.__version__} sees no CUDA device; run with "
                "--device cpu --quick to check the code on a CPU")
    if args.budget_s is None:
        args.budget_s = 110.0 if args.quick else 450.0
    if args.out is None:
        args.out = RESULTS / ("speed_gpu.md" if device.startswith("cuda")
                              else "gpu_check_cpu.md")
    dirs = args.checkpoints or [ROOT / "checkpoints"] + (
        [Path(os.environ["SAM2_ROS_CHECKPOINTS"])] if os.environ.get("SAM2_ROS_CHECKPOINTS")
        else [])
    on_gpu = device.startswith("cuda")
    settings = GPU_SETTINGS if on_gpu else CPU_SETTINGS
    speed_settings = GPU_SPEED if on_gpu else CPU_SPEED
    if args.quick and on_gpu:
        settings = tuple(s for s in settings if s[0] in ("fp32", "bf16", "bf16+compile"))
        speed_settings = ("fp32", "bf16+compile")
    if args.quick and not on_gpu:
        settings = tuple((label, p, QUICK_CPU_COMPILE if c else c) for label, p, c in settings)
    if args.settings:
        wanted = set(args.settings.split(",")) | {"fp32"}
        unknown = wanted - {label for label, _, _ in settings}
        if unknown:
            p.error(f"--settings: {', '.join(sorted(unknown))} not among "
                    f"{', '.join(label for label, _, _ in settings)} on {device}")
        settings = tuple(s for s in settings if s[0] in wanted)
        speed_settings = tuple(s for s in speed_settings if s in wanted)
    cases = args.cases.split(",")
    if not cases or set(cases) - {"compact", "tiny"}:
        p.error(f"--cases takes compact and/or tiny, got {args.cases!r}")
    rep = Report(args, device)
    rep.add(f"# GPU check: {device_line(device)}")
    rep.add("")
    rep.add(f"Run `python -m engine.benchmarks.gpu {' '.join(argv or sys.argv[1:])}` on "
            f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}; "
            f"bundle {'on the path' if bundled else 'absent'}; budget {args.budget_s:.0f} s. "
            "ms/frame: one `track` call, frame in (uint8) to masks, scores and boxes on the "
            "host; Meta's predictor: one step of `propagate_in_video` (its frames were "
            "loaded and normalised up front) and its masks copied to the host.")
    if args.quick and not on_gpu:
        rep.add("")
        rep.add(f"--quick on a CPU: compiled settings use torch.compile backend "
                f"{QUICK_CPU_COMPILE} (graph capture, guards, recompilations; no inductor "
                "code generation).")
    rep.add("")
    if args.ablate:
        ablate(rep, tuple(label for label in ("bf16", "fp16")
                          if label in {s[0] for s in settings}))
        rep.write()
        print(f"wrote {args.out}")
        return 0
    fidelity(rep, settings, args.quick, dirs, cases)
    if not args.skip_speed:
        speed(rep, args, speed_settings, settings, dirs)
        tensorrt_rows(rep, args, dirs)
    rep.write()
    print(f"wrote {args.out}")
    if rep.failures:
        print("FAILED: " + "; ".join(rep.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
