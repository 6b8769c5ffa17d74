"""Tracking quality on the held-out synthetic clips: J&F (DAVIS) and presence, per phenomenon;
and generalisation to held-out families and long streams.

    python -m engine.benchmarks.quality                  # bundled model, every part
    python -m engine.benchmarks.quality --parts held-out --prompts click   # one part
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

Every table also gives the share of visible-object frames that are **lost and confident**:
the object is in view, the tracker reports it present (presence probability > 0.5, its own
threshold) and its mask is non-empty but less than half of it lies on the object
(``engine.tools.metrics.lost_and_confident``).

Three parts (``--parts``, default all):

* ``original``: ``evaluation_set`` as above, on every backend of ``--backends``.
* ``held-out``: ``engine.tools.world.held_out_set``: families of shapes, textures and motions
  never drawn in training (``HELD_OUT_SHAPES``, ``HELD_OUT_TEXTURES``, ``HELD_OUT_MOTIONS``), one
  set of clips per phenomenon ('families': those families alone; then camera, sensor, lighting,
  crossing occluders, exits and re-entries, crossing look-alikes, 2-3 prompted objects
  crossing). Each target is prompted on frame 0 only, with one click (deepest point of its
  true mask) and, separately (``--prompts``), with its box (the tight box of its true mask).
  Scores are per target (an 'interact' clip gives 2-3 tracks); phenomenon scores are means over
  tracks.
* ``long``: ``engine.tools.world.long_streams``: 600-frame streams, held-out families, 2-3
  prompted objects (one click each on frame 0), every phenomenon on and a scripted event every
  ~80 frames; scored in windows of 100 frames (frames 0-99, ..., 500-599) pooled over the
  streams' tracks, with where the mask is on visible-object frames (on the target, on another
  object, on the background, empty).

The held-out and long parts run on the first backend. The report also gives the broad world's
render cost (``engine.tools.world.render_cost``).

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
from ..tools.metrics import (BOUND_TH, PLACES, ClipScore, Summary, presence_truth, reacquisition,
                             region_similarity, summarize)
from ..tools.synthetic import PHENOMENA, ClipSpec, click_inside, evaluation_set
from ..tools.world import (HELD_OUT_MOTIONS, HELD_OUT_PHENOMENA, HELD_OUT_SHAPES,
                           HELD_OUT_TEXTURES, WorldClip, held_out_set, long_streams, render_cost)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "sam2_ros_compact"
DEFAULT_CHECKPOINT = BUNDLED_DIR / get_config(DEFAULT_MODEL).checkpoint_name
DEFAULT_OUT = ROOT / "engine" / "benchmarks" / "results" / "quality.md"
TARGET = 1  # the prompted object of every evaluation clip
PARTS = ("original", "held-out", "long")


def make_tracker_factory(backend: str, model, cache_dir: Path | None = None, threads: int = 1,
                         max_objects: int = 1):
    """A function returning a fresh ``StreamingTracker`` on ``backend`` ("name" or
    "name:precision", e.g. "torch:bf16", "onnxruntime:fp16") for ``model``, tracking up to
    ``max_objects``. A suffix "@all" stores every tracked frame in memory (SAM 2's rule), "@X"
    uses ``memory_min_iou`` X; without one the model's own setting applies."""
    from ..runtime_factory import make_runtime
    from ..tracker import StreamingTracker

    spec, _, memory = backend.partition("@")
    min_iou = parse_memory_rule(memory or "model")
    name, _, precision = spec.partition(":")
    opts = {"precision": precision} if precision else {}
    if name != "torch":
        opts.update(threads=threads, log=lambda s: None)
    runtime = make_runtime(name, model, cache_dir=cache_dir, **opts)
    return lambda: StreamingTracker(model, max_objects=max_objects, runtime=runtime,
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


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight box (x0, y0, x1, y1) of a mask's pixels."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def track_world_clip(new_tracker, clip: WorldClip, prompt: str = "click"
                     ) -> tuple[list[ClipScore], int, float]:
    """Track every target of a world clip, prompted on frame 0 only with a click or its box;
    returns one score per target (named clip#id), the frame count and the tracking seconds."""
    if prompt not in ("click", "box"):
        raise ValueError(f"prompt must be 'click' or 'box', got {prompt!r}")
    scene = clip.scene()
    targets = scene.targets
    tracker = new_tracker()
    scores = {k: ClipScore(f"{clip.name}#{k}", clip.phenomenon) for k in targets}
    areas = {k: [] for k in targets}
    seconds, frames = 0.0, 0
    for t in range(scene.num_frames):
        frame, masks = scene.render(t)
        start = time.perf_counter()
        result = tracker.track(frame)
        if t == 0:
            objs = {}
            for k in targets:
                if prompt == "click":
                    objs[k] = tracker.add_prompt(k, points=[click_inside(masks[k])], labels=[1])
                else:
                    objs[k] = tracker.add_prompt(k, box=box_of(masks[k]))
        else:
            objs = result.objects
        seconds += time.perf_counter() - start
        frames += 1
        everything = np.zeros(frame.shape[:2], bool)
        for obj_id, m in masks.items():
            if obj_id < 200:  # objects and look-alikes, not occluding panels
                everything |= m
        for k in targets:
            truth = masks[k]
            scores[k].add(objs[k].mask, truth, objs[k].presence, others=everything & ~truth)
            areas[k].append(int(truth.sum()))
    for k in targets:
        scores[k].reacquired = reacquisition(areas[k], scores[k].j)
    return list(scores.values()), frames, seconds


def run_world(backend: str, model, clips: list[WorldClip], prompt: str = "click",
              cache_dir: Path | None = None, log=print) -> BackendResult:
    """``track_world_clip`` over ``clips``; scores per target."""
    most = max(c.scene_args.get("prompted", 1) for c in clips)
    new_tracker = make_tracker_factory(backend, model, cache_dir, max_objects=most)
    scores, frames, seconds = [], 0, 0.0
    for clip in clips:
        got, n, sec = track_world_clip(new_tracker, clip, prompt)
        scores += got
        frames += n
        seconds += sec
        for sc in got:
            log(f"  {backend}/{prompt:5s} {sc.name:18s} J {sc.mean_j:.3f} F {sc.mean_f:.3f} "
                f"presence {sc.presence_accuracy:.3f} lost {sc.lost_share:.3f}")
    return BackendResult(f"{backend} {prompt}", scores, frames, seconds)


def corrections_report(r: BackendResult, without: BackendResult) -> list[str]:
    """The operator protocol's section: J&F with clicks next to J&F without, and how well the
    clicks hold."""
    lines = ["", f"### {r.backend} with an operator's corrective clicks", "",
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


TABLE_HEAD = ["| phenomenon | {unit} | J | F | J&F | presence acc. | lost & confident | "
              "re-acquired |", "|---|---|---|---|---|---|---|---|"]


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def _row(label: str, s: Summary) -> str:
    re = f"{s.reacquired}/{s.reacquire_cases}" if s.reacquire_cases else "-"
    return (f"| {label} | {s.clips} | {s.j:.3f} | {s.f:.3f} | **{s.jf:.3f}** | "
            f"{s.presence_accuracy:.3f} | {_pct(s.lost_confident)} | {re} |")


def _table(r: BackendResult, groups, unit: str) -> list[str]:
    lines = [TABLE_HEAD[0].format(unit=unit), TABLE_HEAD[1]]
    lines += [_row(p, r.summary(p)) for p in groups if r.summary(p).clips]
    return lines + [_row("**overall**", r.summary())]


def original_report(results: list[BackendResult], corrected: BackendResult | None) -> list[str]:
    lines = []
    for r in results:
        lines += ["", f"### {r.backend}", "",
                  f"{r.frames} frames in {r.seconds:.1f} s of tracking "
                  f"({r.frames / max(r.seconds, 1e-9):.1f} frames/s, one object).", ""]
        lines += _table(r, PHENOMENA, "clips")
    if len(results) > 1:
        base = results[0].summary().jf
        lines += ["", "### Backends compared", ""]
        lines += [f"- J&F {r.backend} - {results[0].backend}: {r.summary().jf - base:+.4f}"
                  for r in results[1:]]
    if corrected is not None:
        lines += corrections_report(corrected, results[0])
    lines += ["", "### Per clip", "", "| clip | " + " | ".join(
        f"{r.backend} J&F / presence" for r in results) + " |",
        "|---|" + "---|" * len(results)]
    for i, s in enumerate(results[0].scores):
        cells = [f"{r.scores[i].jf:.3f} / {r.scores[i].presence_accuracy:.3f}" for r in results]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return lines


def held_out_report(results: list[BackendResult]) -> list[str]:
    lines = ["",
             f"Shapes {', '.join(HELD_OUT_SHAPES)}; textures {', '.join(HELD_OUT_TEXTURES)}; "
             f"motions {', '.join(HELD_OUT_MOTIONS)}: none of them is drawn in training. "
             "Scores per prompted object (track); see the module docstring."]
    for r in results:
        lines += ["", f"### {r.backend}", "",
                  f"{r.frames} frames in {r.seconds:.1f} s of tracking "
                  f"({r.frames / max(r.seconds, 1e-9):.1f} frames/s, 1-3 objects).", ""]
        lines += _table(r, HELD_OUT_PHENOMENA, "tracks")
    lines += ["", "### The prompt alone: J on frame 0", "",
              "Mean IoU of the prompted frame's mask, before any tracking: how much of a low "
              "J&F is the first mask and how much is tracking.", "",
              "| phenomenon | " + " | ".join(r.backend for r in results) + " |",
              "|---|" + "---|" * len(results)]
    for p in list(HELD_OUT_PHENOMENA) + [None]:
        firsts = [[s.j[0] for s in r.scores if p in (None, s.phenomenon)] for r in results]
        if firsts[0]:
            lines.append(f"| {p or '**overall**'} | "
                         + " | ".join(f"{np.mean(f):.3f}" for f in firsts) + " |")
    lines += ["", "### Held-out per track", "",
              "| track | " + " | ".join(f"{r.backend} J&F / presence / lost" for r in results)
              + " |", "|---|" + "---|" * len(results)]
    for i, s in enumerate(results[0].scores):
        cells = [f"{r.scores[i].jf:.3f} / {r.scores[i].presence_accuracy:.3f} / "
                 f"{_pct(r.scores[i].lost_share)}" for r in results]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return lines


def stream_windows(r: BackendResult, size: int) -> list[tuple[str, Summary]]:
    """Per window of ``size`` frames: its label and the summary over every track."""
    cut = [s.windows(size) for s in r.scores]
    out = []
    for i in range(max(len(c) for c in cut)):
        parts = [c[i] for c in cut if i < len(c)]
        first = i * size
        out.append((f"{first}-{first + len(parts[0].j) - 1}", summarize(parts)))
    return out


def streams_report(r: BackendResult, size: int) -> list[str]:
    lines = ["",
             f"{len({s.name.split('#')[0] for s in r.scores})} streams, {len(r.scores)} tracks; "
             f"{r.frames} frames in {r.seconds:.1f} s of tracking "
             f"({r.frames / max(r.seconds, 1e-9):.1f} frames/s, 2-3 objects). Windows of {size} "
             "frames, pooled over tracks; 'on target' ... 'empty': where the mask is on "
             "visible-object frames (engine.tools.metrics.mask_place).", "",
             "| frames | J | F | J&F | presence acc. | lost & confident | on target | "
             "on another object | on background | empty |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, s in stream_windows(r, size):
        where = " | ".join(_pct(s.places.get(p, float("nan"))) for p in PLACES)
        lines.append(f"| {label} | {s.j:.3f} | {s.f:.3f} | **{s.jf:.3f}** | "
                     f"{s.presence_accuracy:.3f} | {_pct(s.lost_confident)} | {where} |")
    total = r.summary()
    lines += ["", f"Whole streams: J&F {total.jf:.3f}, presence accuracy "
              f"{total.presence_accuracy:.3f}, lost and confident {_pct(total.lost_confident)} "
              f"of {total.visible_frames} visible-object frames.", "",
              "| track | " + " | ".join(label for label, _ in stream_windows(r, size))
              + " |", "|---|" + "---|" * len(stream_windows(r, size))]
    for s in r.scores:
        lines.append(f"| {s.name} | " + " | ".join(f"{w.jf:.3f}" for w in s.windows(size))
                     + " |")
    return lines


TITLE = ["# Tracking quality on held-out synthetic clips", "",
         "Written by `python -m engine.benchmarks.quality` (see its docstring for the "
         "protocol: one click (or a box) on frame 0, DAVIS J and F, presence accuracy, "
         "lost and confident). Each part below names the run that wrote it; a run of some "
         "parts (`--parts`) replaces those parts and keeps the others.", "",
         "**Lost and confident**: a frame where the object is in view (at least 20 true "
         "pixels), the tracker reports it present (presence probability > 0.5, the tracker's "
         "own threshold) and its mask is non-empty but less than half of the predicted pixels "
         "lie on the object (|pred & truth| < 0.5 |pred|): the mask sits on something else and "
         "the tracker does not know it. Shares are over visible-object frames, pooled "
         "(`engine.tools.metrics.lost_and_confident`).", ""]
MARK = "<!-- quality part: {} -->"
SECTIONS = PARTS + ("render",)


def sections(meta: dict, results: list[BackendResult], corrected: BackendResult | None = None,
             held_out: list[BackendResult] = (), streams: BackendResult | None = None,
             window: int = 100, render: dict | None = None) -> dict[str, str]:
    """The report's parts that this run measured: {part: markdown}. ``meta`` maps a part (or
    "all") to its bullet lines (model, clips, machine, command ...)."""
    def head(part: str) -> list[str]:
        return [f"- {k}: {v}" for k, v in {**meta.get("all", {}), **meta.get(part, {})}.items()]

    out = {}
    if results:
        out["original"] = ["## Original benchmark split", ""] + head("original") + \
            original_report(results, corrected)
    if held_out:
        out["held-out"] = ["## Held-out families (generalisation)", ""] + head("held-out") + \
            held_out_report(list(held_out))
    if streams is not None:
        out["long"] = ["## Long streams", ""] + head("long") + streams_report(streams, window)
    if render:
        out["render"] = ["## Render cost of the broad world", ""] + head("render") + [
            "", "engine.tools.world.render_cost: a 320x240 scene of 3 objects (2 prompted), "
            "48 frames; CPU time of this process with OpenCV on one thread (so the machine's "
            "other load matters less than for wall time), median of 5 scenes.", ""]
        out["render"] += [f"- {k}: {v:.2f} ms" for k, v in render.items()]
    return {k: "\n".join(v) for k, v in out.items()}


def merge_report(existing: str, new: dict[str, str]) -> str:
    """The report file with the parts in ``new`` replaced and the others kept from
    ``existing`` (a file written before the parts existed counts as the 'original' part)."""
    kept: dict[str, str] = {}
    if existing.strip():
        if "<!-- quality part: " in existing:
            pieces = existing.split("<!-- quality part: ")[1:]
            for piece in pieces:
                name, _, body = piece.partition(" -->")
                kept[name] = body.strip("\n")
        else:  # the old single-part layout: title, "Written by", then the original split
            body = existing.split("\n\n", 2)[2] if existing.startswith("# ") else existing
            body = ("\n" + body.strip("\n")).replace("\n## ", "\n### ").strip("\n")
            kept["original"] = "## Original benchmark split\n\n" + body
    kept.update(new)
    lines = list(TITLE)
    for name in SECTIONS:
        if name in kept:
            lines += [MARK.format(name), kept[name], ""]
    return "\n".join(lines)


def report(results: list[BackendResult], meta: dict,
           corrected: BackendResult | None = None, held_out: list[BackendResult] = (),
           streams: BackendResult | None = None, window: int = 100,
           render: dict | None = None) -> str:
    """A whole report of one run (``meta``: bullet lines for every part)."""
    return merge_report("", sections({"all": meta}, results, corrected, held_out, streams,
                                     window, render))


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
    p.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="for the original split; the other parts run on the first one")
    p.add_argument("--per-phenomenon", type=int, default=8)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--split", type=int, default=0, help="which held-out set (0 = the benchmark)")
    p.add_argument("--held-out-per-phenomenon", type=int, default=6)
    p.add_argument("--held-out-frames", type=int, default=64)
    p.add_argument("--prompts", default="click,box", help="held-out part: click and/or box")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--stream-frames", type=int, default=600)
    p.add_argument("--event-every", type=int, default=80)
    p.add_argument("--window", type=int, default=100, help="long streams: frames per window")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; on a shared, loaded CPU 1 is fastest")
    p.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache")
    p.add_argument("--corrections", action="store_true",
                   help="also run the first backend with an operator's corrective clicks")
    p.add_argument("--no-render-cost", action="store_true",
                   help="leave out the broad world's render cost")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    prompts = [x for x in args.prompts.split(",") if x]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts: expected some of {', '.join(PARTS)}, got {args.parts!r}")
    if not prompts or set(prompts) - {"click", "box"}:
        p.error(f"--prompts: expected click and/or box, got {args.prompts!r}")

    from ..checkpoint import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, args.model, image_size=args.image_size)
    backends = args.backends.split(",")
    say = lambda s: print(s, flush=True)  # noqa: E731
    meta = {"all": {"model": f"{args.model} at image_size {model.cfg.image_size}"},
            "original": {}, "held-out": {}, "long": {}}
    results, corrected, held, streams, render = [], None, [], None, None
    if "original" in parts:
        clips = evaluation_set(args.per_phenomenon, args.frames, split=args.split)
        for backend in backends:
            say(f"{backend}: {len(clips)} clips")
            results.append(run(backend, model, clips, args.cache_dir, log=say))
        if args.corrections:
            say(f"{backends[0]} with corrective clicks: {len(clips)} clips")
            corrected = run(backends[0], model, clips, args.cache_dir, log=say,
                            corrections=True)
        meta["original"]["clips"] = (f"{len(clips)} = {args.per_phenomenon} per phenomenon x "
                         f"{len(PHENOMENA)} ({', '.join(PHENOMENA)}), {args.frames} frames each, "
                         f"320x240, evaluation_set(split={args.split})")
    if "held-out" in parts:
        world = held_out_set(args.held_out_per_phenomenon, args.held_out_frames,
                             split=args.split)
        for prompt in prompts:
            say(f"{backends[0]} {prompt}: {len(world)} held-out clips")
            held.append(run_world(backends[0], model, world, prompt, args.cache_dir, log=say))
        meta["held-out"]["clips"] = (
            f"{len(world)} = {args.held_out_per_phenomenon} per phenomenon x "
            f"{len(HELD_OUT_PHENOMENA)} ({', '.join(HELD_OUT_PHENOMENA)}), "
            f"{args.held_out_frames} frames each, 320x240, "
            f"held_out_set(split={args.split}); {sum(len(c.scene().targets) for c in world)} "
            f"tracks; prompts: {', '.join(prompts)}")
    if "long" in parts:
        clips = long_streams(args.streams, args.stream_frames, args.event_every,
                             split=args.split)
        say(f"{backends[0]}: {len(clips)} long streams")
        streams = run_world(backends[0], model, clips, "click", args.cache_dir, log=say)
        meta["long"]["streams"] = (f"{len(clips)} x {args.stream_frames} frames, an event every "
                                f"~{args.event_every}, long_streams(split={args.split})")
    if not args.no_render_cost:
        render = render_cost()
    try:
        checkpoint = args.checkpoint.resolve().relative_to(ROOT)
    except ValueError:
        checkpoint = args.checkpoint
    meta["all"].update({
        "checkpoint": f"`{checkpoint}` (SHA-256 `{_sha256(args.checkpoint)[:16]}...`)",
        "boundary tolerance": f"{BOUND_TH} of the diagonal ({int(np.ceil(BOUND_TH * 400))} px)",
        "machine": f"{_cpu_name()}, {args.threads} CPU thread(s) (shared machine), "
                   f"torch {torch.__version__}, Python {platform.python_version()}",
        "command": "`python -m engine.benchmarks.quality " + " ".join(argv or sys.argv[1:]) + "`",
    })
    new = sections(meta, results, corrected, held, streams, args.window, render)
    if "render" in new:  # not about a model
        new["render"] = "\n".join(line for line in new["render"].splitlines()
                                   if not line.startswith(("- model:", "- checkpoint:",
                                                           "- boundary tolerance:")))
    existing = args.out.read_text() if args.out.is_file() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(merge_report(existing, new))
    print("\n\n".join(new.values()))
    print(f"wrote {', '.join(new)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
