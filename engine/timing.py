"""Per-stage timing of the streaming tracker: wall time of each stage of a frame.

``TimedRuntime`` wraps any ``Runtime`` and times each of its calls into a ``StageClock``; a
tracker given the clock (``StreamingTracker(..., clock=clock)``) also times its pre- and
postprocessing (the frame -> model-input conversion and the results -> masks conversion).
What is left of a ``track`` call after the named stages (memory-bank bookkeeping, assembling
the memory, mask upscaling) is ``glue``. Used by ``sam2-engine track`` (``engine/video.py``)
and the benchmarks (``engine/benchmarks/``).

    clock = StageClock()
    tracker = StreamingTracker(runtime=TimedRuntime(runtime, clock), clock=clock, ...)
    with clock.frame() as record:
        tracker.track(frame)
    record.stages["memory_attention"], record.total
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

# Runtime method -> stage name (the decoder also serves mask prompts, the memory encoder also
# prompted frames).
RUNTIME_STAGES = {"encode_image": "image_encoder", "attend_memory": "memory_attention",
                  "decode": "decoder", "decode_mask_prompt": "decoder",
                  "encode_memory": "memory_encoder", "encode_prompt_memory": "memory_encoder"}
STAGES = ("preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder",
          "postprocess", "glue")


@dataclass
class FrameTimes:
    """Seconds spent in each stage during one frame, the frame's total wall time, and the CPU
    time this process used meanwhile (robust to other processes taking the cores)."""

    stages: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    cpu: float = 0.0

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def with_glue(self) -> dict[str, float]:
        """Every stage of ``STAGES``, ``glue`` being the total minus the named stages."""
        named = {s: self.stages.get(s, 0.0) for s in STAGES if s != "glue"}
        return {**named, "glue": max(self.total - sum(named.values()), 0.0)}


class StageClock:
    """Collects stage times into the record of the frame being timed (none: not recorded)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync or (lambda: None)
        self.current: FrameTimes | None = None

    @contextmanager
    def frame(self):
        """Time one frame: ``with clock.frame() as record: tracker.track(frame)``."""
        record = FrameTimes()
        self.current = record
        self.sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            yield record
        finally:
            self.sync()
            record.total = time.perf_counter() - start
            record.cpu = time.process_time() - start_cpu
            self.current = None

    @contextmanager
    def stage(self, name: str):
        """Time the block (device work included) into stage ``name`` of the current frame."""
        if self.current is None:
            yield
            return
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            if self.current is not None:
                self.current.add(name, time.perf_counter() - start)

    def wrap(self, stage: str, fn: Callable) -> Callable:
        """``fn`` with its wall time (device work included) added to ``stage``."""
        def timed(*args, **kwargs):
            if self.current is None:
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            if self.current is not None:
                self.current.add(stage, time.perf_counter() - start)
            return out
        return timed


def device_sync(device: torch.device) -> Callable[[], None]:
    """What makes a CUDA device's queued work count in a wall-clock measurement."""
    if torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class TimedRuntime:
    """A Runtime whose every call is timed into ``clock``; everything else passes through."""

    def __init__(self, runtime, clock: StageClock) -> None:
        self.inner = runtime
        self.name = runtime.name
        self.device = runtime.device
        self.cfg = runtime.cfg
        self.glue = runtime.glue
        for method, stage in RUNTIME_STAGES.items():
            setattr(self, method, clock.wrap(stage, getattr(runtime, method)))

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
