"""The speed benchmark's results as markdown tables (machine named) and a PNG of FPS vs objects.

The plot is drawn with OpenCV (matplotlib is not a dependency): one panel per model and image
size, FPS against object count, one line per backend and one for the reference.
"""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import cv2
import numpy as np
import torch

from .speed_results import REFERENCE, CaseResult
from ..timing import STAGES

GOAL = 3.0  # wanted: at least this many times the reference's frames per second
STAGE_TITLES = {"preprocess": "preprocess", "image_encoder": "image encoder",
                "memory_attention": "memory attention", "decoder": "decoder",
                "memory_encoder": "memory encoder", "postprocess": "postprocess",
                "glue": "glue"}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(threads: int) -> dict[str, str]:
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return {"machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} "
                       f"{platform.release()}",
            "threads": f"{threads} in this run (torch intra-op and onnxruntime intra-op; "
                       "per case in the tables)",
            "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
                        f"onnxruntime {ort}, numpy {np.__version__}, OpenCV {cv2.__version__}",
            "load average at the end (1, 5, 15 min)": load,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def _case_cells(r: CaseResult) -> str:
    c = r.case
    return f"| {c.model} | {c.image_size} | {c.objects} | {r.threads} | {r.load[0]:.1f} |"


def throughput_table(results: list[CaseResult]) -> list[str]:
    lines = ["| model | image | objects | threads | load (1 min) | backend | ms / frame | FPS | "
             "x reference | CPU ms / frame | x reference (CPU) | min mask IoU vs reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        names = list(r.ours) + ([REFERENCE] if r.reference else [])
        for name in names:
            ms, cpu = r.median_total(name) * 1e3, r.median_cpu(name) * 1e3
            ratio = ratio_cpu = iou = "-"
            if r.reference and name != REFERENCE:
                ratio = f"**{r.median_total(REFERENCE) * 1e3 / ms:.2f}**"
                ratio_cpu = f"{r.median_cpu(REFERENCE) * 1e3 / cpu:.2f}"
                iou = f"{r.min_iou[name]:.4f}"
            elif name == REFERENCE:
                ratio = ratio_cpu = "1"
            lines.append(f"{_case_cells(r)} {name} | {ms:.0f} | {1e3 / ms:.2f} | {ratio} | "
                         f"{cpu:.0f} | {ratio_cpu} | {iou} |")
    return lines


def stage_table(results: list[CaseResult]) -> list[str]:
    head = " | ".join(STAGE_TITLES[s] for s in STAGES)
    lines = [f"| model | image | objects | threads | load (1 min) | backend | {head} | total |",
             "|---|---|---|---|---|---|" + "---|" * (len(STAGES) + 1)]
    for r in results:
        for backend in r.ours:
            stages = r.median_stages(backend)
            cells = " | ".join(f"{stages[s] * 1e3:.1f}" for s in STAGES)
            lines.append(f"{_case_cells(r)} {backend} | {cells} | "
                         f"{r.median_total(backend) * 1e3:.1f} |")
    return lines


def goal_lines(results: list[CaseResult]) -> list[str]:
    """Which backends reach GOAL x the reference, case by case (wall clock, and CPU time)."""
    lines = []
    for r in results:
        if not r.reference:
            continue
        best = min(r.ours, key=r.median_total)
        ratio = r.median_total(REFERENCE) / r.median_total(best)
        ratio_cpu = r.median_cpu(REFERENCE) / r.median_cpu(best)
        verdict = "reached" if ratio >= GOAL else "NOT reached"
        c = r.case
        lines.append(f"- {c.model} {c.image_size} px, {c.objects} object(s): best {best} "
                     f"{ratio:.2f}x the reference ({ratio_cpu:.2f}x in CPU time): {GOAL:g}x "
                     f"goal {verdict}")
    return lines


def write_results(results: list[CaseResult], notes: list[str], args, out: Path,
                  plot: Path | None) -> None:
    lines = ["# Speed on CPU: streaming tracker vs Meta's video predictor", "",
             "Written by `python -m engine.benchmarks.speed` (protocol in its docstring: same "
             "random weights, frames and prompts for every contestant; frames interleaved so "
             "all see the same load; median over the timed frames after the memory bank is "
             "full).", ""]
    meta = machine_facts(args.threads)
    meta["frames"] = f"{args.warmup} warm-up + {args.frames} timed per case (this run)"
    dates = sorted(r.date for r in results if r.date)
    if dates:
        meta["cases run"] = f"{dates[0]} .. {dates[-1]}"
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- {n}" if n.startswith("run: ") else f"- note: {n}" for n in notes]
    lines += ["", "## Throughput", "",
              "Steady-state median per frame, every object tracked. `x reference` = the "
              "reference's ms / ours (higher is better). `CPU ms` is the CPU time this "
              "process used during the frame: on a shared machine it is less disturbed by "
              "other jobs than wall time. Our time includes preprocessing and "
              "postprocessing, the reference's does not. `load` = the machine's 1-minute "
              "load average as the case started (2 cores: above 2 means shared).", ""]
    lines += throughput_table(results)
    lines += ["", "## Per-stage latency (ms, median over the timed frames)", "",
              "`glue` is the rest of `track`: memory-bank bookkeeping, assembling each "
              "object's memory, mask upscaling.", ""]
    lines += stage_table(results)
    goals = goal_lines(results)
    if goals:
        lines += ["", f"## Goal: >= {GOAL:g}x the reference's frames per second", ""] + goals
    for r in results:
        for name, table in r.profiles.items():
            c = r.case
            lines += ["", f"## Profile: {name}, {c.model} {c.image_size} px, {c.objects} "
                          "object(s), one steady-state frame", "", "```", table.rstrip(), "```"]
    if plot is not None:
        lines += ["", f"![FPS vs objects]({plot.name})"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    if plot is not None:
        draw_fps_plot(results, plot)


# --------------------------------------------------------------------------------- plot
PANEL_W, PANEL_H, MARGIN = 420, 300, 48
COLOURS = {"torch": (200, 90, 30), "onnxruntime": (40, 150, 40), "tensorrt": (160, 40, 160),
           "torch:bf16": (20, 160, 230), "onnxruntime:fp16": (120, 200, 60),
           REFERENCE: (40, 40, 200)}  # BGR


def _fps_series(results: list[CaseResult]) -> dict[tuple[str, int], dict[str, list]]:
    """{(model, size): {contestant: [(objects, fps), ...]}}."""
    panels: dict[tuple[str, int], dict[str, list]] = {}
    for r in results:
        series = panels.setdefault((r.case.model, r.case.image_size), {})
        names = list(r.ours) + ([REFERENCE] if r.reference else [])
        for name in names:
            series.setdefault(name, []).append((r.case.objects, 1.0 / r.median_total(name)))
    return panels


def _panel(title: str, series: dict[str, list]) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    xs = sorted({x for pts in series.values() for x, _ in pts})
    top = max(y for pts in series.values() for _, y in pts) * 1.15 or 1.0
    x0, y0, x1, y1 = MARGIN, 28, PANEL_W - 12, PANEL_H - MARGIN

    def at(x: float, y: float) -> tuple[int, int]:
        fx = 0.5 if len(xs) == 1 else (x - xs[0]) / (xs[-1] - xs[0])
        return int(x0 + fx * (x1 - x0)), int(y1 - y / top * (y1 - y0))

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (120, 120, 120)
    cv2.rectangle(img, (x0, y0), (x1, y1), grey, 1)
    for k in range(5):
        y = top * k / 4
        py = at(xs[0], y)[1]
        cv2.line(img, (x0 - 3, py), (x0, py), grey, 1)
        cv2.putText(img, f"{y:.2g}", (4, py + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for x in xs:
        px = at(x, 0)[0]
        cv2.putText(img, str(x), (px - 4, y1 + 14), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "objects", ((x0 + x1) // 2 - 20, y1 + 32), font, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, title + "  (FPS)", (x0, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS.get(name, (90, 90, 90))
        pixels = [at(x, y) for x, y in sorted(pts)]
        for a, b in zip(pixels, pixels[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (x1 - 110, y0 + 16 + 14 * i), font, 0.4, colour, 1, cv2.LINE_AA)
    return img


def draw_fps_plot(results: list[CaseResult], path: Path, columns: int = 2) -> None:
    """One panel per (model, image size): FPS against object count, per contestant."""
    panels = [_panel(f"{model.replace('sam2.1_hiera_', '')} {size}px", series)
              for (model, size), series in _fps_series(results).items()]
    if not panels:
        return
    while len(panels) % columns:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.hstack(panels[i:i + columns]) for i in range(0, len(panels), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
