"""Soak test of the streaming tracker: many frames, memory and per-frame time must stay flat.

    python -m engine.tools.soak --frames 10000 --image-size 128

Tracks objects through a generated scene (``engine.tools.synthetic``) with a randomly initialised
model (or ``--checkpoint``), re-prompting one object now and then so its prompted frames overflow
and get evicted. Writes its figures as a markdown table to
``engine/benchmarks/results/soak.md`` (``--out``), with the machine named.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import get_config
from ..memory_bank import BankSize
from ..model.sam2 import SAM2Model
from ..tracker import StreamingTracker
from .synthetic import Scene, click_inside

DEFAULT_OUT = Path(__file__).parent / "benchmarks" / "results" / "soak.md"
WINDOW = 1000  # frames compared at the start and the end


@dataclass
class SoakFigures:
    frames: int = 0
    rss: dict[str, float] = field(default_factory=dict)  # MiB at "start", "warm", "end"
    first_wall: list[float] = field(default_factory=list)
    first_cpu: list[float] = field(default_factory=list)
    last_wall: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_cpu: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    max_bank: dict[int, BankSize] = field(default_factory=dict)
    max_bank_bytes: int = 0
    end_bank: dict[int, BankSize] = field(default_factory=dict)
    capacity: BankSize | None = None
    seconds: float = 0.0


def rss_mib() -> float:
    """Resident set size of this process now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def build_tracker(args) -> StreamingTracker:
    if args.checkpoint:
        return StreamingTracker.from_checkpoint(args.checkpoint, args.model, args.image_size,
                                                device=args.device)
    torch.manual_seed(0)
    model = SAM2Model(get_config(args.model, image_size=args.image_size)).to(args.device)
    return StreamingTracker(model)


def prompt_objects(tracker: StreamingTracker, masks: dict[int, np.ndarray]) -> None:
    for obj_id, mask in masks.items():
        click = click_inside(mask)
        if click is not None:
            tracker.add_prompt(obj_id, points=[click], labels=[1])


def record_banks(tracker: StreamingTracker, figs: SoakFigures) -> None:
    total = 0
    for obj_id in tracker.object_ids:
        bank = tracker.bank(obj_id)
        size, old = bank.size(), figs.max_bank.get(obj_id, BankSize(0, 0, 0))
        figs.max_bank[obj_id] = BankSize(*(max(a, b) for a, b in zip(
            (size.prompted, size.recent, size.recent_pointers),
            (old.prompted, old.recent, old.recent_pointers))))
        figs.end_bank[obj_id] = size
        figs.capacity = bank.capacity()
        total += bank.nbytes()
    figs.max_bank_bytes = max(figs.max_bank_bytes, total)


def run(args) -> SoakFigures:
    figs = SoakFigures()
    tracker = build_tracker(args)
    scene = Scene(width=args.width, height=args.height, num_objects=args.objects, seed=args.seed)
    figs.rss["start"] = rss_mib()
    began = time.perf_counter()
    for t, (frame, masks) in enumerate(scene.frames(args.frames)):
        wall, cpu = time.perf_counter(), time.process_time()
        tracker.track(frame)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if t == 0:
            prompt_objects(tracker, masks)
        elif t % args.reprompt_every == 0:
            prompt_objects(tracker, {k: v for k, v in masks.items() if k == 1})
        (figs.first_wall if t < WINDOW else figs.last_wall).append(wall)
        (figs.first_cpu if t < WINDOW else figs.last_cpu).append(cpu)
        record_banks(tracker, figs)
        if t == WINDOW - 1:
            figs.rss["warm"] = rss_mib()
        if (t + 1) % 1000 == 0:
            print(f"frame {t + 1}: RSS {rss_mib():.1f} MiB, median frame "
                  f"{1e3 * np.median(list(figs.last_wall) or figs.first_wall):.1f} ms", flush=True)
        figs.frames = t + 1
    figs.rss["end"] = rss_mib()
    figs.seconds = time.perf_counter() - began
    return figs


def _ms(values) -> str:
    v = np.asarray(list(values)) * 1e3
    if v.size == 0:
        return "-"
    return f"{np.median(v):.1f} / {v.mean():.1f} / {np.percentile(v, 99):.1f} ms"


def report(args, figs: SoakFigures) -> str:
    warm = figs.rss.get("warm", figs.rss["start"])
    growth = 100 * (figs.rss["end"] - warm) / warm
    banks = ", ".join(f"{i}: {s.prompted}/{s.recent}/{s.recent_pointers}"
                      for i, s in figs.end_bank.items())
    peaks = ", ".join(f"{i}: {s.prompted}/{s.recent}/{s.recent_pointers}"
                      for i, s in figs.max_bank.items())
    cap = figs.capacity
    weights = args.checkpoint or "random weights"
    rows = [
        ("frames", f"{figs.frames}"),
        ("model", f"{args.model} ({weights}), image size {args.image_size}, {args.device}"),
        ("stream", f"{args.width}x{args.height} synthetic scene, {args.objects} objects, object 1 "
                   f"re-prompted every {args.reprompt_every} frames"),
        ("RSS at start / after first 1,000 frames / at end",
         f"{figs.rss['start']:.1f} / {warm:.1f} / {figs.rss['end']:.1f} MiB"),
        ("RSS growth after warm-up", f"{growth:+.2f}%"),
        ("per-frame wall time, first 1,000 frames (median / mean / p99)", _ms(figs.first_wall)),
        ("per-frame wall time, last 1,000 frames (median / mean / p99)", _ms(figs.last_wall)),
        ("per-frame CPU time, first 1,000 frames (median / mean / p99)", _ms(figs.first_cpu)),
        ("per-frame CPU time, last 1,000 frames (median / mean / p99)", _ms(figs.last_cpu)),
        ("bank capacity (prompted / recent / recent pointers)",
         f"{cap.prompted}/{cap.recent}/{cap.recent_pointers}" if cap else "-"),
        ("bank sizes at end, per object", banks),
        ("bank sizes, largest seen, per object", peaks),
        ("bank bytes, all objects, largest seen", f"{figs.max_bank_bytes}"),
        ("total run time", f"{figs.seconds:.0f} s"),
    ]
    lines = ["# Streaming tracker soak", "",
             f"Machine: {machine()}  ",
             f"Date: {datetime.date.today().isoformat()}  ",
             f"Command: `python -m engine.tools.soak {' '.join(sys.argv[1:])}`", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "CPU time is this process's (all threads); wall time includes any other load "
                  "on the machine."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--checkpoint", default=None, help="Meta's checkpoint (default: random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--reprompt-every", type=int, default=200,
                   help="re-prompt object 1 this often (its 4 prompted slots fill by frame 600)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 gives steadier CPU times "
                        "on a busy machine")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.frames < 1 or args.reprompt_every < 1:
        p.error("--frames and --reprompt-every must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    figs = run(args)
    text = report(args, figs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
