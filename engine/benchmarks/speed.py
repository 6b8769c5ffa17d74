"""Speed of the streaming tracker per backend, model, image size and object count, side by side
with Meta's video predictor on the same machine, weights, frames and prompts.

    python -m engine.benchmarks.speed                                # the default grid
    python -m engine.benchmarks.speed --grid tiny:256:1,4 --backends torch --frames 4 \\
        --out /tmp/speed.md
    python -m engine.benchmarks.speed --grid tiny:1024:1,4,8 --grid base_plus:512:1,4,8

Protocol, per case (model, image size S, N objects): a generated scene (``engine.tools.synthetic``)
rendered at S x S (no resizing on either side), every object prompted on frame 0 by one
positive click deep inside it, then tracked. Frames interleave across contestants: on frame
t each backend's tracker and the reference predictor take their turn, in an order that
rotates every frame, so all see the same machine load. The first ``--warmup`` frames fill the
memory bank (7 spatial memories); the next ``--frames`` are timed and the median reported.
Stages are timed by wrapping the runtime (``engine/timing.py``), not inside the
tracker. Our per-frame time includes preprocessing and postprocessing; the reference's
excludes preprocessing (its ``init_state`` prepares the whole video up front). The masks of
both are compared on the timed frames (IoU), so both are known to do the same work.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import get_config
from ..model.sam2 import SAM2Model
from ..timing import FrameTimes, StageClock, TimedRuntime, device_sync
from ..tools.synthetic import Scene, click_inside
from . import reference
from .speed_results import REFERENCE, Case, CaseResult, load_results, merged, save_results

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "engine" / "benchmarks" / "results" / "speed_cpu.md"
DEFAULT_GRID = ("tiny:256,512,1024:1,4,8", "base_plus:256,512:1,4,8")
PROMPTED_FRAMES = 1  # frames on which an object is prompted (frame 0)
SHORT_NAMES = {"tiny": "sam2.1_hiera_tiny", "small": "sam2.1_hiera_small",
               "base_plus": "sam2.1_hiera_base_plus", "large": "sam2.1_hiera_large"}
def parse_grid(specs: list[str]) -> list[Case]:
    """``MODEL:SIZES:OBJECTS`` (e.g. ``tiny:512,1024:1,4,8``) -> the cases, in that order."""
    cases = []
    for spec in specs:
        try:
            model, sizes, objects = spec.split(":")
            name = SHORT_NAMES.get(model, model)
            get_config(name)
            cases += [Case(name, int(s), int(n)) for s in sizes.split(",")
                      for n in objects.split(",")]
        except (ValueError, KeyError) as err:
            raise ValueError(f"bad --grid {spec!r} (want MODEL:SIZES:OBJECTS, e.g. "
                             f"tiny:512,1024:1,4,8): {err}") from err
    return cases


def make_scene(size: int, objects: int, count: int, seed: int = 0
               ) -> tuple[list[np.ndarray], dict[int, tuple[float, float]]]:
    """``count`` frames (size x size RGB) and a click inside each object on frame 0; the first
    seed from ``seed`` on whose frame 0 every object is clearly visible."""
    for s in range(seed, seed + 100):
        scene = Scene(size, size, objects, seed=s, object_size=(size // 8, size // 4))
        rendered = list(scene.frames(count))
        masks = rendered[0][1]
        if all(masks[i].sum() >= (size // 16) ** 2 for i in range(1, objects + 1)):
            clicks = {i: click_inside(masks[i]) for i in range(1, objects + 1)}
            return [f for f, _ in rendered], clicks
    raise RuntimeError(f"no scene with {objects} visible objects at {size} px")


class OursVideo:
    """Our tracker on one backend, prompted like the reference, timed per stage. Objects are
    prompted on one frame only, so the tracker keeps one prompted frame per object
    (``PROMPTED_FRAMES``) and the graph runtimes need no memory slots beyond it."""

    def __init__(self, runtime, frames: list[np.ndarray], clicks: dict[int, tuple],
                 name: str | None = None) -> None:
        from ..tracker import StreamingTracker

        self.name = name or runtime.name
        self.clock = StageClock(device_sync(runtime.device))
        self.tracker = StreamingTracker(max_objects=len(clicks),
                                        max_cond_frames=PROMPTED_FRAMES,
                                        runtime=TimedRuntime(runtime, self.clock),
                                        clock=self.clock)
        self.frames = iter(frames)
        self.tracker.track(next(self.frames))
        for obj_id, point in clicks.items():
            self.tracker.add_prompt(obj_id, points=[point], labels=[1])

    def step(self) -> tuple[FrameTimes, dict[int, np.ndarray]]:
        with self.clock.frame() as record:
            result = self.tracker.track(next(self.frames))
        return record, {i: o.mask for i, o in result.objects.items()}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def build_model(cfg, predictor) -> SAM2Model:
    """Our model with the reference's weights (or seeded random ones without the reference)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SAM2Model(cfg)
    if predictor is not None:
        model.load_state_dict(predictor.state_dict(), strict=True)
    return model.eval()


def run_case(case: Case, runtimes: dict, predictor, warmup: int, timed: int,
             profile: bool = False, log=print) -> CaseResult:
    """Track one case with every contestant, frames interleaved; keep the timed frames."""
    frames, clicks = make_scene(case.image_size, case.objects, 1 + warmup + timed + profile)
    videos = [OursVideo(rt, frames, clicks, label) for label, rt in runtimes.items()]
    if predictor is not None:
        videos.append(reference.ReferenceVideo(predictor, frames, clicks))
    result = CaseResult(case, {v.name: [] for v in videos if v.name != REFERENCE},
                        min_iou={v.name: 1.0 for v in videos if v.name != REFERENCE},
                        load=os.getloadavg(), threads=torch.get_num_threads(),
                        date=datetime.datetime.now().astimezone().isoformat(timespec="minutes"))
    label = f"{case.model} {case.image_size}px {case.objects} obj"
    for t in tqdm(range(1, 1 + warmup + timed), desc=label, unit="frame", file=sys.stdout):
        turn = t % len(videos)
        masks = {}
        for video in videos[turn:] + videos[:turn]:
            record, masks[video.name] = video.step()
            if t > warmup:
                _keep(result, video.name, record)
        if t > warmup and REFERENCE in masks:
            _compare(result, masks)
    log(_summary_line(label, result))
    if profile:
        result.profiles = {v.name: _profile_step(v) for v in videos
                           if v.name in ("torch", REFERENCE)}
    return result


def _keep(result: CaseResult, name: str, record: FrameTimes) -> None:
    result.frames(name).append(record)


def _compare(result: CaseResult, masks: dict) -> None:
    ref = masks[REFERENCE]
    for name, ours in masks.items():
        if name != REFERENCE:
            worst = min(mask_iou(ours[i], ref[i]) for i in ref)
            result.min_iou[name] = min(result.min_iou[name], worst)


def _summary_line(label: str, result: CaseResult) -> str:
    names = list(result.ours) + ([REFERENCE] if result.reference else [])
    return f"  {label}: " + ", ".join(f"{n} {result.median_total(n):.2f} s/frame" for n in names)


def _profile_step(video, rows: int = 12) -> str:
    """One more frame under torch.profiler: the ops taking the most CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        video.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows,
                                     max_name_column_width=40)


def make_runtimes(model: SAM2Model, backends: list[str], device: str, threads: int,
                  cache_dir: Path | None, log=print) -> tuple[dict, list[str]]:
    """The runtimes of ``backends`` that can run here, and notes on those that cannot.
    A backend is "name" or "name:precision" (e.g. "torch:bf16", "onnxruntime:fp16"), the
    torch backend optionally compiled with "+compile" ("torch:fp16+compile"); the results name
    it that way."""
    runtimes, notes = {}, []
    for label in backends:
        backend, _, precision = label.partition(":")
        backend, compiled = backend.removesuffix("+compile"), backend.endswith("+compile")
        precision, compiled = precision.removesuffix("+compile"), compiled or \
            precision.endswith("+compile")
        opts = {"threads": threads} if backend == "onnxruntime" else {}
        if precision:
            opts["precision"] = precision
        if compiled:
            opts["compile"] = True
        if backend != "torch":
            opts["log"] = log
        try:
            runtimes[label] = _runtime(backend, model, device, cache_dir, opts, notes, log)
        except (ImportError, RuntimeError, ValueError) as err:
            notes.append(f"{backend}, {_where(model)}: not run: {err}")
            log(f"skipping backend {backend}: {err}")
    return runtimes, notes


def _where(model: SAM2Model) -> str:
    return f"{model.cfg.name} at {model.cfg.image_size} px"


def _runtime(backend: str, model: SAM2Model, device: str, cache_dir: Path | None, opts: dict,
             notes: list[str], log):
    """``make_runtime``; when an export misses its onnxruntime-vs-torch tolerance, the runtime
    on the unchecked export, with a note (its masks are still compared with the reference's,
    case by case, in the results)."""
    from ..export import ExportCheckError, MemoryCapacity, export_model
    from ..graph_cache import default_cache_dir
    from ..runtime_factory import make_runtime

    capacity = MemoryCapacity.for_bank(model.cfg, PROMPTED_FRAMES)
    try:
        return make_runtime(backend, model, device=device, cache_dir=cache_dir,
                            capacity=capacity, **opts)
    except ExportCheckError as err:
        notes.append(f"{backend}, {_where(model)}: export check failed ({err}); benchmarked "
                     "on the unchecked export")
        log(f"{backend}: {err}; exporting without the check")
        export_model(model, (cache_dir or default_cache_dir()) / "onnx", capacity=capacity,
                     check=False, log=log)
        return make_runtime(backend, model, device=device, cache_dir=cache_dir,
                            capacity=capacity, **opts)


def run_grid(cases: list[Case], backends: list[str], device: str = "cpu", threads: int = 2,
             warmup: int = 7, timed: int = 5, with_reference: bool = True,
             cache_dir: Path | None = None, profile: bool = False, log=print,
             on_result=None) -> tuple[list[CaseResult], list[str]]:
    """Every case; models and runtimes built once per (model, image size). ``on_result``
    (results so far, notes) is called after each case (to write partial results)."""
    if with_reference and not reference.available():
        log("the reference (sam2==1.1.0) is not installed: running without it")
        with_reference = False
    results, notes = [], []
    groups: dict[tuple[str, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.model, case.image_size), []).append(case)
    for (name, size), group in groups.items():
        cfg = get_config(name, image_size=size)
        predictor = reference.build_predictor(cfg, device=device) if with_reference else None
        model = build_model(cfg, predictor)
        runtimes, group_notes = make_runtimes(model, backends, device, threads, cache_dir,
                                              log)
        notes += group_notes
        for case in group:
            results.append(run_case(case, runtimes, predictor, warmup, timed,
                                    profile and case is group[0], log))
            if on_result is not None:
                on_result(results, notes)
    return results, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.benchmarks.speed",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args, argv if argv is not None else sys.argv[1:])
    except ValueError as err:
        p.error(str(err))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", action="append", default=None, metavar="MODEL:SIZES:OBJECTS",
                   help=f"cases to run, repeatable (default: {' '.join(DEFAULT_GRID)}); MODEL "
                        f"is tiny|small|base_plus|large or a full name")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma-separated: torch, onnxruntime, tensorrt (skipped where absent), "
                        "each optionally :precision (torch:bf16, onnxruntime:fp16), torch "
                        "compiled with +compile (torch:fp16+compile)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    p.add_argument("--warmup", type=int, default=7, help="untimed frames (fill the bank)")
    p.add_argument("--frames", type=int, default=5, help="timed frames (median reported)")
    p.add_argument("--no-reference", action="store_true", help="skip Meta's video predictor")
    p.add_argument("--profile", action="store_true",
                   help="profile one extra frame (torch backend and reference) per model/size")
    p.add_argument("--cache-dir", type=Path, default=None, help="ONNX/engine cache")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="markdown results (figures also as JSON beside it)")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the results' notes (e.g. why a backend was left out)")
    p.add_argument("--merge", action="store_true",
                   help="keep the cases of an earlier run in --out's JSON that this run does "
                        "not repeat")
    p.add_argument("--plot", type=Path, default=None,
                   help="PNG of FPS vs objects (default: next to --out; 'none' to skip)")


def run_from_args(args, argv: list[str]) -> int:
    """Run the benchmark ``args`` describe and write its tables (shared with the CLI)."""
    from .speed_report import write_results

    torch.set_num_threads(args.threads)
    cases = parse_grid(args.grid or list(DEFAULT_GRID))
    backends = [b for b in args.backends.split(",") if b]
    plot = args.plot or args.out.with_name(args.out.stem + "_fps.png")
    plot = None if str(plot).lower() == "none" else plot
    raw = args.out.with_suffix(".json")
    earlier, earlier_notes = load_results(raw) if args.merge else ([], [])
    own = [f"run: `python -m engine.benchmarks.speed {' '.join(argv)}`"] + list(args.note)

    def write(results, notes):
        every = merged(earlier, results)
        notes = earlier_notes + [n for n in own + notes if n not in earlier_notes]
        save_results(every, notes, raw)
        write_results(every, notes, args, args.out, plot)

    run_grid(cases, backends, args.device, args.threads, args.warmup, args.frames,
             not args.no_reference, args.cache_dir, args.profile,
             log=lambda s: print(s, flush=True), on_result=write)
    print(f"wrote {args.out}, {raw}" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
