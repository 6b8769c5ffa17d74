"""What the 3D step adds per frame: ``engine.depth.locate_objects`` for 8 objects at 640x480 on
one CPU core, median of several runs, written as a table.

    python -m engine.benchmarks.depth_cost                       # writes results/depth_cost.md
    python -m engine.benchmarks.depth_cost --runs 3 --out /tmp/depth_cost.md

Protocol: a generated scene (``engine.tools.synthetic``) at 640x480 with 8 objects; per frame its
aligned depth (1 % holes, edge bleed) and the objects' true visible masks with their boxes, as
the tracker hands them to the node. The process is pinned to one core. Each run times every
frame once per case (cases interleaved frame by frame, so all see the same load) and takes the
median over the frames; the table gives the median over runs, the spread of the run medians
and the CPU time (less disturbed by other jobs on a shared machine than wall time).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..depth import Intrinsics, locate_objects, mask_box
from ..tools.synthetic import Scene

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "engine" / "benchmarks" / "results" / "depth_cost.md"
TARGET_MS = 2.0

# name -> (depth encoding, boxes from the tracker, points_stride)
CASES = {
    "16UC1 (mm), boxes given": ("16UC1", True, 0),
    "32FC1 (m), boxes given": ("32FC1", True, 0),
    "16UC1, boxes computed from the masks": ("16UC1", False, 0),
    "16UC1, boxes given, + points (stride 4)": ("16UC1", True, 4),
    "16UC1 at half resolution (resize rule), boxes given": ("16UC1/2", True, 0),
}


def _machine() -> str:
    """OS, CPU model and kernel, as far as this system says."""
    def field(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split("=" if "=" in line else ":", 1)[1].strip().strip('"')
        except OSError:
            pass
        return ""
    os_name = field("/etc/os-release", "PRETTY_NAME=") or platform.system()
    cpu = field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    return f"{os_name}, {cpu}, Linux {platform.release()}"


def frames(count: int, width: int, height: int, objects: int, seed: int) -> list[dict]:
    scene = Scene(width, height, objects, seed=seed, object_size=(height // 6, height // 3))
    out = []
    for _, masks in scene.frames(count):
        masks = {k: m for k, m in masks.items() if m.any()}
        z = scene.depth(masks, holes=0.01, bleed=True)
        mm = np.round(z * 1000).astype(np.uint16)
        out.append({"16UC1": mm, "32FC1": z, "16UC1/2": np.ascontiguousarray(mm[1::2, 1::2]),
                    "masks": masks, "boxes": {k: mask_box(m) for k, m in masks.items()}})
    return out, scene.intrinsics


def run(data: list[dict], intrinsics) -> dict[str, tuple[float, float]]:
    """One run: per case, the median over frames of (wall ms, CPU ms)."""
    half = Intrinsics(intrinsics.fx / 2, intrinsics.fy / 2, (intrinsics.cx + 0.5) / 2 - 0.5,
                      (intrinsics.cy + 0.5) / 2 - 0.5)  # of the half-resolution depth
    times = {name: [] for name in CASES}
    for frame in data:
        for name, (enc, with_boxes, stride) in CASES.items():
            scale = 1.0 if enc == "32FC1" else 0.001
            k = intrinsics if enc != "16UC1/2" else half
            boxes = frame["boxes"] if with_boxes else None
            w0, c0 = time.perf_counter(), time.process_time()
            locate_objects(frame[enc], scale, k, frame["masks"], boxes,
                           points_stride=stride)
            times[name].append(((time.perf_counter() - w0) * 1e3,
                                (time.process_time() - c0) * 1e3))
    return {name: tuple(np.median(np.array(t), axis=0)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--objects", type=int, default=8)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    data, intrinsics = frames(args.frames, args.width, args.height, args.objects, args.seed)
    run(data[:3], intrinsics)  # warm-up
    runs = [run(data, intrinsics) for _ in range(args.runs)]
    located = np.mean([len(f["masks"]) for f in data])
    pixels = np.mean([sum(int(m.sum()) for m in f["masks"].values()) for f in data])
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        "# Cost of the 3D step per frame (engine.depth)",
        "",
        "Written by `python -m engine.benchmarks.depth_cost` (protocol in its docstring).",
        "",
        f"- machine: {_machine()}, {os.cpu_count()} cores, no GPU; pinned to one core",
        f"- software: Python {platform.python_version()}, numpy {np.__version__}",
        f"- load average at the end (1, 5, 15 min): {load}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- scene: {args.width}x{args.height}, {args.objects} objects ({located:.1f} in view on "
        f"average, {pixels:.0f} mask pixels per frame), 1 % depth holes, edge bleed",
        f"- {args.runs} runs x {args.frames} frames; target: < {TARGET_MS:g} ms per frame",
        "",
        "| case | ms / frame (median of runs) | run medians min..max | CPU ms / frame | "
        "ms / object |",
        "|---|---|---|---|---|",
    ]
    for name in CASES:
        wall = np.array([r[name][0] for r in runs])
        cpu = np.array([r[name][1] for r in runs])
        lines.append(f"| {name} | **{np.median(wall):.2f}** | {wall.min():.2f}..{wall.max():.2f} "
                     f"| {np.median(cpu):.2f} | {np.median(wall) / located:.3f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
