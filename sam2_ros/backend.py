"""Builds the engine the node runs from its config.

The only place ``sam2_ros`` touches ``engine``: choosing a runtime, loading a checkpoint (or
building seeded random weights when none is given) and wrapping the streaming tracker.
Every refusal raises ``BackendError`` with a reason a user can act on.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from engine.backends import check_backend

from .config import NodeConfig

RANDOM_WEIGHTS_WARNING = ("random weights: masks are not meaningful; pass checkpoint:=... for "
                          "Meta's weights, or leave model at sam2_ros_compact (bundled weights)")


class BackendError(RuntimeError):
    """The tracker cannot be loaded from this config; the text says why."""


@dataclass
class LoadedTracker:
    tracker: Any  # engine.tracker.StreamingTracker (results: engine.tracker.ObjectResult)
    make_scratch_tracker: Callable[[], Any]  # a fresh tracker on the same model (replays)
    weights: str  # what the weights are, for logs and diagnostics
    backend: str  # runtime and device, for diagnostics
    random_weights: bool  # no checkpoint and none bundled: masks are not meaningful
    warmup_s: float = 0.0  # seconds the model's first run (``warm_up``) took


def load_tracker(cfg: NodeConfig) -> LoadedTracker:
    """The tracker ``cfg`` asks for. Raises BackendError naming what is wrong."""
    try:
        check_backend(cfg.backend, cfg.precision)
    except ValueError as err:
        raise BackendError(str(err)) from None
    import torch

    from engine.config import parse_memory_rule
    from engine.tracker import StreamingTracker

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {cfg.device!r} asked for, but torch sees no CUDA GPU; "
                           "use device:=cpu")
    threads = inference_threads(cfg)
    torch.set_num_threads(threads)
    model, weights = _load_model(cfg)
    runtime = _make_runtime(cfg, model, threads)
    del model  # the runtime owns what it runs (a graph runtime: not the torch model)

    def make() -> Any:
        return StreamingTracker(max_objects=cfg.max_objects,
                                max_cond_frames=cfg.max_cond_frames, runtime=runtime,
                                memory_min_iou=parse_memory_rule(cfg.memory_admission))

    start = time.monotonic()
    warm_up(make())
    return LoadedTracker(make(), make, weights,
                  f"{cfg.backend} {cfg.precision} on {cfg.device}, {threads} CPU thread(s)",
                  cfg.random_weights, time.monotonic() - start)


def warm_up(tracker: Any, frames: int = 3) -> None:
    """Run every part of the model once (a prompted frame, then tracked ones) on a blank
    frame, on a tracker that is then thrown away.

    The first inference of a process loads code and sets up kernels: on a machine whose disk
    cache is cold it took seconds, so the first camera frames waited, prompts made on them
    outlived the prompt window and the node fell behind its camera. Paid here, it delays
    "configured" instead."""
    import numpy as np

    blank = np.zeros((240, 320, 3), np.uint8)
    for i in range(frames):
        tracker.track(blank)
        if i == 0:
            tracker.add_prompt(1, points=[(160.0, 120.0)], labels=[1])


def inference_threads(cfg: NodeConfig) -> int:
    """CPU threads for inference: ``num_threads``, or with 0 all usable CPUs but one.

    The spare CPU keeps the node's own executor (image conversion, publishing) and the robot's
    other processes from competing with the inference threads: an intra-op thread pool that
    shares its CPUs with busy processes waits on its slowest thread (on 2 CPUs next to one
    busy process, the compact model's frame takes ~3.5x longer with 2 threads than with 1).
    """
    if cfg.num_threads:
        return cfg.num_threads
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        usable = os.cpu_count() or 1
    return max(1, usable - 1)


def _load_model(cfg: NodeConfig) -> tuple[Any, str]:
    """The SAM2Model of ``cfg`` (checkpoint or seeded random weights) and a description."""
    import torch

    from engine.checkpoint import CheckpointError, bundled_checkpoint, load_model
    from engine.config import get_config
    from engine.model.sam2 import SAM2Model

    size = cfg.model_image_size
    model_cfg = replace(get_config(cfg.model), image_size=size)
    path = cfg.checkpoint or bundled_checkpoint(model_cfg)
    # graph backends read the model on the CPU (their runtime keeps no torch model)
    device = cfg.device if cfg.backend == "torch" else "cpu"
    if path:
        try:
            model = load_model(path, model_cfg, device=device)
        except CheckpointError as err:
            raise BackendError(str(err)) from err
        what = "bundled weights " if not cfg.checkpoint else ""
        return model, f"{what}{path} ({cfg.model}, image_size {size})"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = SAM2Model(model_cfg).to(device).eval()
    return model, (f"RANDOM weights ({cfg.model}, seed {cfg.seed}, image_size "
                   f"{size}): {RANDOM_WEIGHTS_WARNING}")


def _make_runtime(cfg: NodeConfig, model: Any, threads: int) -> Any:
    """The runtime of ``cfg.backend`` over ``model``, with a memory capacity that fits the
    tracker's banks; a backend that cannot run here is refused with its reason."""
    from engine.memory_layout import MemoryCapacity
    from engine.runtime_factory import make_runtime

    opts: dict[str, Any] = {"precision": cfg.precision}
    if cfg.backend == "torch" and cfg.compile:
        opts.update(compile=True,
                    capacity=MemoryCapacity.for_bank(model.cfg, cfg.max_cond_frames))
    if cfg.backend != "torch":
        opts = {"precision": cfg.precision,
                "capacity": MemoryCapacity.for_bank(model.cfg, cfg.max_cond_frames),
                "cache_dir": cfg.engine_dir or None}
    if cfg.backend == "tensorrt":
        opts["max_objects"] = cfg.max_objects
    if cfg.backend == "onnxruntime":
        opts["threads"] = threads
    try:
        return make_runtime(cfg.backend, model, device=cfg.device, **opts)
    except (ImportError, RuntimeError, ValueError, OSError) as err:
        raise BackendError(f"could not start the {cfg.backend} runtime: {err}") from err
