"""Tracking quality on the held-out synthetic clips: J&F (DAVIS) and presence, per phenomenon.

    python -m engine.benchmarks.quality                  # bundled model, torch and onnxruntime
    python -m engine.benchmarks.quality --backends torch --per-phenomenon 2 --frames 24
    python -m engine.benchmarks.quality --backends torch,torch@all   # SAM 2's memory rule too
    python -m engine.benchmarks.quality --checkpoint checkpoints/sam2.1_hiera_tiny.pt \\
        --model sam2.1_hiera_tiny --image-size 1024 --out /tmp/quality.md

Protocol: each clip of ``engine.tools.synthetic.evaluation_set`` (fixed seeds, never used in
training) is streamed through ``StreamingTracker`` one frame at a time; object 1 gets a single
positive click on frame 0 (the deepest point of its true mask) and nothing else. Every frame,
the first included, is scored against the exact drawn mask with ``engine.tools.metrics``: J (IoU),
F (boundary F-measure, DAVIS tolerance 0.008 of the diagonal) and presence (probability > 0.5
vs. the object being in view). Clip scores are means over frames; phenomenon and overall
scores are means over clips. "Re-acquired" counts clips where the object vanished completely
(occluded or out of the frame) and, once back in view, reached IoU >= 0.5 within 5 frames.

``--corrections`` adds a second protocol on the first backend: an operator watches and, when
the object is in view but its mask has IoU < 0.5, clicks once on it (positive click at the
deepest point of the true mask; at most once every 5 frames), as a user of the node does with
a refinement click. Reported: J&F with those clicks, clicks per clip, and the mean IoU just
before a click, on the clicked frame and over the 4 frames after (does a correction hold?).
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import BUNDLED_DIR
from ..config import get_config, parse_memory_rule
from ..tools.metrics import (BOUND_TH, ClipScore, Summary, presence_truth, reacquisition,
                       region_similarity, summarize)
from ..tools.synthetic import PHENOMENA, ClipSpec, click_inside, evaluation_set

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "sam2_ros_compact"
DEFAULT_CHECKPOINT = BUNDLED_DIR / get_config(DEFAULT_MODEL).checkpoint_name
DEFAULT_OUT = ROOT / "engine" / "benchmarks" / "results" / "quality.md"
TARGET = 1  # the prompted object of every evaluation clip


def make_tracker_factory(backend: str, model, cache_dir: Path | None = None, threads: int = 1):
    """A function returning a fresh ``StreamingTracker`` on ``backend`` ("name" or
    "name:precision", e.g. "torch:bf16", "onnxruntime:fp16") for ``model``. A suffix
    "@all" stores every tracked frame in memory (SAM 2's rule), "@X" uses ``memory_min_iou``
    X; without one the model's own setting applies."""
    from ..runtime_factory import make_runtime
    from ..tracker import StreamingTracker

    spec, _, memory = backend.partition("@")
    min_iou = parse_memory_rule(memory or "model")
    name, _, precision = spec.partition(":")
    opts = {"precision": precision} if precision else {}
    if name != "torch":
        opts.update(threads=threads, log=lambda s: None)
    runtime = make_runtime(name, model, cache_dir=cache_dir, **opts)
    return lambda: StreamingTracker(model, max_objects=1, runtime=runtime,
                                    memory_min_iou=min_iou)


CORRECT_BELOW = 0.5  # --corrections: the operator clicks when the mask's IoU drops below this
CORRECT_GAP = 5  # ... at most once every this many frames
AFTER = 4  # frames after a click over which the correction is followed


@dataclass
class Correction:
    clip: str
    before: float  # IoU of the tracked mask the operator saw
    at: float  # IoU on the clicked frame, after the click
    after: list[float]  # IoU on the next AFTER frames


def track_clip(new_tracker, clip: ClipSpec, corrections: list[Correction] | None = None
               ) -> tuple[ClipScore, int, float]:
    """Score one clip; returns the score, the frame count and the tracking seconds. With a
    ``corrections`` list, an operator corrects the mask (see the module docstring) and each
    click is appended there."""
    tracker = new_tracker()
    score = ClipScore(clip.name, clip.phenomenon)
    areas, ious, seconds, last_click = [], [], 0.0, -CORRECT_GAP
    for t, (frame, truth) in enumerate(clip.frames()):
        start = time.perf_counter()
        result = tracker.track(frame)
        if t == 0:
            obj = tracker.add_prompt(TARGET, points=[click_inside(truth)], labels=[1])
        else:
            obj = result.objects[TARGET]
        seconds += time.perf_counter() - start
        if corrections is not None and t > 0:
            j = region_similarity(obj.mask, truth)
            if corrections and t - last_click <= AFTER:
                corrections[-1].after.append(j)
            if presence_truth(truth) and j < CORRECT_BELOW and t - last_click >= CORRECT_GAP:
                obj = tracker.add_prompt(TARGET, points=[click_inside(truth)], labels=[1])
                corrections.append(Correction(clip.name, j,
                                              region_similarity(obj.mask, truth), []))
                last_click = t
        score.add(obj.mask, truth, obj.presence)
        areas.append(int(truth.sum()))
        ious.append(score.j[-1])
    score.reacquired = reacquisition(areas, ious)
    return score, len(areas), seconds


@dataclass
class BackendResult:
    backend: str
    scores: list[ClipScore]
    frames: int
    seconds: float
    corrections: list[Correction] | None = None  # None: no operator (the main protocol)

    def summary(self, phenomenon: str | None = None) -> Summary:
        return summarize([s for s in self.scores if phenomenon in (None, s.phenomenon)])


def run(backend: str, model, clips: list[ClipSpec], cache_dir: Path | None = None,
        log=print, corrections: bool = False) -> BackendResult:
    new_tracker = make_tracker_factory(backend, model, cache_dir)
    scores, frames, seconds = [], 0, 0.0
    clicks: list[Correction] | None = [] if corrections else None
    for clip in clips:
        score, n, s = track_clip(new_tracker, clip, clicks)
        scores.append(score)
        frames += n
        seconds += s
        log(f"  {backend:12s} {clip.name:16s} J {score.mean_j:.3f} F {score.mean_f:.3f} "
            f"presence {score.presence_accuracy:.3f} reacquired {score.reacquired}")
    return BackendResult(backend, scores, frames, seconds, clicks)


def corrections_report(r: BackendResult, without: BackendResult) -> list[str]:
    """The operator protocol's section: J&F with clicks next to J&F without, and how well the
    clicks hold."""
    lines = ["", f"## {r.backend} with an operator's corrective clicks", "",
             f"A positive click whenever the object is in view and its IoU < {CORRECT_BELOW} "
             f"(at most every {CORRECT_GAP} frames); see the module docstring.", "",
             "| phenomenon | clips | J&F without clicks | J&F with clicks | clicks per clip |",
             "|---|---|---|---|---|"]
    groups = [p for p in PHENOMENA if r.summary(p).clips] + [None]
    counts = Counter(c.clip for c in r.corrections)
    for p in groups:
        names = [s.name for s in r.scores if p in (None, s.phenomenon)]
        label = p or "**overall**"
        lines.append(f"| {label} | {len(names)} | {without.summary(p).jf:.3f} | "
                     f"**{r.summary(p).jf:.3f}** | "
                     f"{np.mean([counts.get(n, 0) for n in names]):.1f} |")
    full = [c for c in r.corrections if len(c.after) == AFTER]
    if full:
        after = np.mean([c.after for c in full], axis=0)
        lines += ["", f"IoU around a click (mean over {len(full)} clicks followed for {AFTER} "
                  "frames): before " + f"{np.mean([c.before for c in full]):.2f}, on the clicked "
                  f"frame {np.mean([c.at for c in full]):.2f}, then "
                  + ", ".join(f"{v:.2f}" for v in after) + "; "
                  f"{sum(c.after[-1] < 0.2 for c in full)} of {len(full)} lost again "
                  f"(IoU < 0.2 after {AFTER} frames)."]
    return lines


def _row(label: str, s: Summary) -> str:
    re = f"{s.reacquired}/{s.reacquire_cases}" if s.reacquire_cases else "-"
    return (f"| {label} | {s.clips} | {s.j:.3f} | {s.f:.3f} | **{s.jf:.3f}** | "
            f"{s.presence_accuracy:.3f} | {re} |")


def report(results: list[BackendResult], meta: dict,
           corrected: BackendResult | None = None) -> str:
    lines = ["# Tracking quality on held-out synthetic clips", "",
             "Written by `python -m engine.benchmarks.quality` (see its docstring for the "
             "protocol: one click on frame 0, DAVIS J and F, presence accuracy).", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    for r in results:
        lines += ["", f"## {r.backend}", "",
                  f"{r.frames} frames in {r.seconds:.1f} s of tracking "
                  f"({r.frames / max(r.seconds, 1e-9):.1f} frames/s, one object).", "",
                  "| phenomenon | clips | J | F | J&F | presence acc. | re-acquired |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_row(p, r.summary(p)) for p in PHENOMENA if r.summary(p).clips]
        lines.append(_row("**overall**", r.summary()))
    if len(results) > 1:
        base = results[0].summary().jf
        lines += ["", "## Backends compared", ""]
        lines += [f"- J&F {r.backend} - {results[0].backend}: {r.summary().jf - base:+.4f}"
                  for r in results[1:]]
    if corrected is not None:
        lines += corrections_report(corrected, results[0])
    lines += ["", "## Per clip", "", "| clip | " + " | ".join(
        f"{r.backend} J&F / presence" for r in results) + " |",
        "|---|" + "---|" * len(results)]
    for i, s in enumerate(results[0].scores):
        cells = [f"{r.scores[i].jf:.3f} / {r.scores[i].presence_accuracy:.3f}" for r in results]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.benchmarks.quality",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--per-phenomenon", type=int, default=8)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--split", type=int, default=0, help="which held-out set (0 = the benchmark)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache")
    p.add_argument("--corrections", action="store_true",
                   help="also run the first backend with an operator's corrective clicks")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    from ..checkpoint import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, args.model, image_size=args.image_size)
    clips = evaluation_set(args.per_phenomenon, args.frames, split=args.split)
    results = []
    for backend in args.backends.split(","):
        print(f"{backend}: {len(clips)} clips", flush=True)
        results.append(run(backend, model, clips, args.cache_dir,
                           log=lambda s: print(s, flush=True)))
    corrected = None
    if args.corrections:
        backend = results[0].backend
        print(f"{backend} with corrective clicks: {len(clips)} clips", flush=True)
        corrected = run(backend, model, clips, args.cache_dir,
                        log=lambda s: print(s, flush=True), corrections=True)
    try:
        checkpoint = args.checkpoint.resolve().relative_to(ROOT)
    except ValueError:
        checkpoint = args.checkpoint
    meta = {
        "model": f"{args.model} at image_size {model.cfg.image_size}",
        "checkpoint": f"`{checkpoint}` (SHA-256 `{_sha256(args.checkpoint)[:16]}...`)",
        "clips": f"{len(clips)} = {args.per_phenomenon} per phenomenon x {len(PHENOMENA)} "
                 f"({', '.join(PHENOMENA)}), {args.frames} frames each, 320x240, "
                 f"evaluation_set(split={args.split})",
        "boundary tolerance": f"{BOUND_TH} of the diagonal ({int(np.ceil(BOUND_TH * 400))} px)",
        "machine": f"{_cpu_name()}, {args.threads} CPU thread(s) (shared machine), "
                   f"torch {torch.__version__}, Python {platform.python_version()}",
        "command": "`python -m engine.benchmarks.quality " + " ".join(argv or sys.argv[1:]) + "`",
    }
    text = report(results, meta, corrected)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
