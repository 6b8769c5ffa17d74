"""``sam2-engine``: export, build, benchmark and track from the command line.

    sam2-engine export sam2.1_hiera_tiny.pt --image-size 512          # ONNX parts (cached)
    sam2-engine build sam2.1_hiera_tiny.pt --image-size 512           # TensorRT engines (GPU)
    sam2-engine benchmark --grid tiny:512:1,4,8 --out speed.md        # speed vs the reference
    sam2-engine track clip.mp4 --point 1:320,240 --box 2:10,20,110,200 --out overlay.mp4

``track`` prompts: ``--point OBJ:X,Y[:LABEL]`` (label 1 = on the object, 0 = not on it),
``--box OBJ:X0,Y0,X1,Y1``, ``--mask OBJ:FILE.png`` (nonzero pixels = the object), in pixels of
the video; each applies on frame ``--at`` (default 0) unless it ends in ``@FRAME``
(``--point 1:40,60:0@12``). Without ``--checkpoint`` the model has random weights: it runs
(for timing, plumbing) but its masks mean nothing, and the command says so.

This module only parses arguments and calls the engine: ``engine.export`` (export),
``engine.runtime.tensorrt_build`` (build), ``engine.benchmarks.speed`` (benchmark),
``engine.video`` and the runtimes (track).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from .backends import BACKENDS, TABLE, describe_precisions
from .config import MAX_COND_FRAMES, MAX_OBJECTS
from .errors import InputError

RANDOM_WEIGHTS_WARNING = ("WARNING: no --checkpoint given: RANDOM weights (seed {seed}). The "
                          "masks are NOT meaningful; timings are. Pass --checkpoint "
                          "sam2.1_hiera_tiny.pt (see the README) for Meta's weights.")


class CLIError(InputError):
    """A problem the user can fix; printed as ``sam2-engine: error: ...`` (exit status 2)."""


# ------------------------------------------------------------------------------ parsing
def parse_prompt_arg(kind: str, text: str, default_frame: int):
    """``OBJ:...[@FRAME]`` of --point / --box / --mask -> an ``engine.video.FramePrompt``."""
    from .prompts import Prompt
    from .video import FramePrompt

    body, frame = text, default_frame
    if "@" in text:
        body, _, at = text.rpartition("@")
        frame = _int(at, f"--{kind} {text!r}: frame after '@'")
    obj, sep, rest = body.partition(":")
    if not sep or not rest:
        raise CLIError(f"--{kind} {text!r}: expected OBJ:{_SYNTAX[kind]}")
    obj_id = _int(obj, f"--{kind} {text!r}: object id")
    if kind == "mask":
        return FramePrompt(obj_id, frame, Prompt(mask=_read_mask(rest)))
    fields = rest.split(":")
    numbers = _floats(fields[0], f"--{kind} {text!r}")
    if kind == "box":
        if len(fields) != 1 or len(numbers) != 4:
            raise CLIError(f"--box {text!r}: expected OBJ:X0,Y0,X1,Y1")
        return FramePrompt(obj_id, frame, Prompt(box=tuple(numbers)))
    if len(fields) > 2 or len(numbers) != 2:
        raise CLIError(f"--point {text!r}: expected OBJ:X,Y or OBJ:X,Y:LABEL")
    label = _int(fields[1], f"--point {text!r}: label") if len(fields) == 2 else 1
    return FramePrompt(obj_id, frame, Prompt(points=[tuple(numbers)], labels=[label]))


_SYNTAX = {"point": "X,Y[:LABEL][@FRAME]", "box": "X0,Y0,X1,Y1[@FRAME]",
           "mask": "FILE.png[@FRAME]"}


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CLIError(f"{what}: {text!r} is not an integer") from None


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"{what}: {text!r} is not a comma-separated list of numbers") from None


def _read_mask(path: str):
    import cv2

    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise CLIError(f"--mask: cannot read image {path}")
    return mask > 0


def _model_options(p: argparse.ArgumentParser, checkpoint_required: bool) -> None:
    if checkpoint_required:
        p.add_argument("checkpoint", help="Meta's checkpoint file (.pt)")
    else:
        p.add_argument("--checkpoint", default=None,
                       help="checkpoint file (.pt, Meta's format); absent: the bundled weights "
                            "of sam2_ros_compact, or random weights (loudly) for Meta's models")
    p.add_argument("--model", default=None,
                   help="model name, e.g. sam2.1_hiera_tiny (default: identified from the "
                        "checkpoint; without one, sam2_ros_compact with its bundled weights)")
    p.add_argument("--image-size", type=int, default=None, help="model input side (default 1024)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="ONNX / engine cache (default $SAM2_ROS_CACHE or ~/.cache/sam2_ros)")


def build_parser() -> argparse.ArgumentParser:
    from .benchmarks.speed import add_arguments as benchmark_arguments

    parser = argparse.ArgumentParser(prog="sam2-engine", description=__doc__.split("\n\n")[0],
                                     epilog="`sam2-engine COMMAND --help` for each command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("export", add_help=False,
                   help="checkpoint -> ONNX parts (the options of `python -m engine.export`)")

    build = sub.add_parser("build", help="ONNX parts -> TensorRT engines (NVIDIA GPU)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _model_options(build, checkpoint_required=True)
    build.add_argument("--precision", choices=TABLE["tensorrt"].precisions, default="fp16")
    build.add_argument("--device", default="cuda")
    build.add_argument("--max-objects", type=int, default=MAX_OBJECTS,
                       help=f"objects tracked at once (default {MAX_OBJECTS}, as the node)")
    build.add_argument("--max-cond-frames", type=int, default=MAX_COND_FRAMES,
                       help="prompted frames kept per object: sets the memory capacity "
                            f"(default {MAX_COND_FRAMES}, as the node)")
    build.add_argument("--max-points", type=int, default=32)
    build.add_argument("--on-mismatch", choices=("rebuild", "refuse"), default="rebuild",
                       help="what to do with a cached engine that does not match")

    bench = sub.add_parser("benchmark", help="speed per backend/size/objects vs the reference",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    benchmark_arguments(bench)

    track = sub.add_parser("track", help="track objects through a video file",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    track.add_argument("video", help="input video file (anything OpenCV reads)")
    track.add_argument("--point", action="append", default=[], metavar=_SYNTAX["point"],
                       help="a click as OBJ:X,Y[:LABEL][@FRAME], repeatable")
    track.add_argument("--box", action="append", default=[], metavar=_SYNTAX["box"],
                       help="a box as OBJ:X0,Y0,X1,Y1[@FRAME], repeatable")
    track.add_argument("--mask", action="append", default=[], metavar=_SYNTAX["mask"],
                       help="a mask image as OBJ:FILE.png[@FRAME], repeatable")
    track.add_argument("--at", type=int, default=0, help="frame of prompts without @FRAME")
    track.add_argument("--out", type=Path, default=None,
                       help="overlay video (default: <video>_overlay.mp4 beside the input)")
    track.add_argument("--max-frames", type=int, default=None)
    track.add_argument("--backend", choices=BACKENDS, default="torch")
    track.add_argument("--device", default="cpu")
    track.add_argument("--precision", default=None,
                       help=f"default first: {describe_precisions()} (torch bf16 / fp16: "
                            "image encoder and memory attention under autocast; tf32 and "
                            "fp16 on cuda only)")
    track.add_argument("--compile", action="store_true",
                       help="torch: compile the per-frame step (torch.compile, CUDA graphs on "
                            "a GPU); the first frames take minutes")
    track.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    track.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    track.add_argument("--max-cond-frames", type=int, default=4,
                       help="prompted frames kept per object")
    track.add_argument("--quiet", action="store_true", help="no per-frame lines")
    _model_options(track, checkpoint_required=False)
    return parser


# ----------------------------------------------------------------------------- commands
def cmd_export(argv: list[str]) -> int:
    from .export.__main__ import main as export_main

    export_main(argv)
    return 0


def cmd_build(args) -> int:
    from tqdm import tqdm

    from .checkpoint import load_sam2
    from .memory_layout import MemoryCapacity
    from .runtime.tensorrt_build import TensorRTUnavailable, import_tensorrt, require_cuda
    from .runtime_factory import make_runtime

    try:  # before the (long) export: TensorRT and a GPU must be here
        import_tensorrt()
        require_cuda(args.device)
    except TensorRTUnavailable as err:
        raise CLIError(f"cannot build TensorRT engines here: {err}") from err
    model = load_sam2(args.checkpoint, args.model, args.image_size)
    # the node's path (engine/runtime_factory.py): the same keys, so the node uses these
    runtime = make_runtime("tensorrt", model, args.device, cache_dir=args.cache_dir,
                           capacity=MemoryCapacity.for_bank(model.cfg, args.max_cond_frames),
                           precision=args.precision, max_objects=args.max_objects,
                           max_points=args.max_points, on_mismatch=args.on_mismatch,
                           log=tqdm.write)
    for name, part in runtime.parts.items():
        tqdm.write(f"{name}: {part.path}")
    return 0


def cmd_benchmark(args, argv: list[str]) -> int:
    from .benchmarks.speed import run_from_args

    return run_from_args(args, argv)


def load_or_random(args):
    """The model of ``args``: a checkpoint, the bundled weights of the project's model, or
    seeded random weights (said loudly)."""
    import torch

    from .checkpoint import bundled_checkpoint
    from .config import get_config
    from .checkpoint import load_sam2
    from .model.sam2 import SAM2Model

    if args.checkpoint:
        return load_sam2(args.checkpoint, args.model, args.image_size), str(args.checkpoint)
    name = args.model or "sam2_ros_compact"
    bundled = bundled_checkpoint(name)
    if bundled is not None:
        return load_sam2(bundled, name, args.image_size), f"bundled weights {bundled}"
    overrides = {"image_size": args.image_size} if args.image_size else {}
    print(RANDOM_WEIGHTS_WARNING.format(seed=args.seed), file=sys.stderr, flush=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = SAM2Model(get_config(name, **overrides)).eval()
    return model, f"RANDOM weights (seed {args.seed})"


def timed_tracker(args, model, prompts):
    """A tracker on ``args.backend`` whose runtime calls and pre/postprocessing are timed into
    the returned clock. The tracker keeps as many prompted frames per object as the prompts
    can make (at most ``--max-cond-frames``), and the graph runtimes' fixed memory capacity
    is sized for exactly that (unused capacity is computed anyway)."""
    from tqdm import tqdm

    from .timing import StageClock, TimedRuntime, device_sync
    from .memory_layout import MemoryCapacity
    from .runtime_factory import make_runtime
    from .tracker import StreamingTracker
    from .video import merge_prompts

    # Frames holding prompts: no bank can keep more prompted frames than that.
    cond_frames = min(max(len(merge_prompts(prompts)), 1), args.max_cond_frames)
    capacity = MemoryCapacity.for_bank(model.cfg, cond_frames)
    opts = {"threads": args.threads or 0} if args.backend == "onnxruntime" else {}
    if args.precision:
        opts["precision"] = args.precision
    if args.compile:
        if args.backend != "torch":
            raise CLIError(f"--compile applies to the torch backend, not {args.backend}")
        opts["compile"] = True
    if args.backend != "torch":
        opts["log"] = tqdm.write
    runtime = make_runtime(args.backend, model, device=args.device, cache_dir=args.cache_dir,
                           capacity=capacity, **opts)
    clock = StageClock(device_sync(runtime.device))
    tracker = StreamingTracker(max_objects=len({p.obj_id for p in prompts}),
                               max_cond_frames=cond_frames,
                               runtime=TimedRuntime(runtime, clock), clock=clock)
    return tracker, clock


def cmd_track(args) -> int:
    import torch
    from tqdm import tqdm

    from .video import VideoWriter, open_video, read_frames, track_video

    prompts = [parse_prompt_arg(kind, text, args.at)
               for kind in ("point", "box", "mask") for text in getattr(args, kind)]
    if not prompts:
        raise CLIError("track: give at least one prompt (--point, --box or --mask)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cap, info = open_video(args.video)
    model, weights = load_or_random(args)
    tracker, clock = timed_tracker(args, model, prompts)
    out = args.out or Path(args.video).with_name(Path(args.video).stem + "_overlay.mp4")
    print(f"tracking {args.video} ({info.width}x{info.height}, {info.fps:g} fps) with "
          f"{model.cfg.name} at {model.cfg.image_size} px, {args.backend} on {args.device}, "
          f"{weights}", flush=True)
    total = min(filter(None, (info.frames, args.max_frames)), default=None)
    times = []
    with VideoWriter(out, info.fps) as writer:
        steps = track_video(tracker, read_frames(cap, args.max_frames), prompts, clock)
        for step in tqdm(steps, total=total, desc="tracking", unit="frame"):
            times.append(step.times)
            writer.write(_overlay(step, args.backend, weights))
            if not args.quiet:
                tqdm.write(frame_line(step))
    cap.release()
    if not times:
        raise CLIError(f"{args.video}: no frames read")
    late = sorted({p.frame for p in prompts if p.frame >= len(times)})
    if late:
        print(f"WARNING: prompts on frame(s) {late} were never applied: only {len(times)} "
              "frames were tracked", file=sys.stderr)
    print(summary(times), flush=True)
    print(f"wrote {out}", flush=True)
    return 0


def _overlay(step, backend: str, weights: str):
    from .overlay import render_overlay

    shown = [(i, i, r.mask, r.box) for i, r in step.objects.items()
             if r.presence >= 0.5 and r.box is not None]
    banner = f"frame {step.index}  {step.times.total * 1e3:.0f} ms  {backend}"
    if weights.startswith("RANDOM"):
        banner += "  RANDOM WEIGHTS"
    return render_overlay(step.frame, shown, banner=banner)


STAGE_SHORT = {"preprocess": "pre", "image_encoder": "enc", "memory_attention": "attn",
               "decoder": "dec", "memory_encoder": "mem", "postprocess": "post", "glue": "glue"}


def frame_line(step) -> str:
    stages = " ".join(f"{STAGE_SHORT[k]} {v * 1e3:.0f}" for k, v in step.times.with_glue().items())
    objs = " ".join(f"{i}:{'P ' if i in step.prompted else ''}p={r.presence:.2f}"
                    f",px={int(r.mask.sum())}" for i, r in sorted(step.objects.items()))
    return f"frame {step.index:5d} {step.times.total * 1e3:7.1f} ms [{stages}] {objs}"


def summary(times) -> str:
    totals = sorted(t.total for t in times)
    tracked = totals[1:] if len(totals) > 1 else totals  # the first frame warms up
    med = statistics.median(tracked)
    p90 = tracked[min(int(0.9 * len(tracked)), len(tracked) - 1)]
    stages = {k: statistics.median(t.with_glue()[k] for t in times[1:] or times)
              for k in STAGE_SHORT}
    parts = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in stages.items())
    return (f"{len(times)} frames: median {med * 1e3:.1f} ms/frame ({1 / med:.2f} FPS), "
            f"p90 {p90 * 1e3:.1f} ms; median per stage (ms): {parts}")


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .download import DownloadError
    from .runtime.tensorrt_build import EngineBuildError, EngineCacheError, TensorRTUnavailable

    argv = list(sys.argv[1:] if argv is None else argv)
    # What the user can fix: bad input or settings (InputError, CLIError among them), files,
    # checkpoints, TensorRT. Any other exception is a bug and keeps its traceback.
    user_errors = (InputError, CheckpointError, DownloadError, TensorRTUnavailable,
                   EngineCacheError, EngineBuildError, OSError)
    try:
        if argv[:1] == ["export"]:  # one definition of the export options: engine.export's
            return cmd_export(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "build":
            return cmd_build(args)
        if args.command == "benchmark":
            return cmd_benchmark(args, argv[1:])
        return cmd_track(args)
    except user_errors as err:  # bad file, model name, prompt, missing TensorRT...
        print(f"sam2-engine: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
