"""Tracking a video file: frames in, prompts applied on the frames they name, results out.

    frames = read_video("clip.mp4")
    prompts = [FramePrompt(obj_id=1, frame=0, prompt=Prompt(points=[(120, 80)], labels=[1]))]
    for step in track_video(tracker, frames, prompts, clock):
        step.index, step.objects[1].mask, step.times.total

Prompts are grouped per (frame, object): every click and the box given for one object on one
frame go into a single prompt (``engine.prompts.Prompt``), applied after that frame is tracked,
so the object's result on that frame is the prompted one. Frames are read one at a time
(nothing is read ahead).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from .timing import FrameTimes, StageClock
from .errors import InputError
from .prompts import Prompt


@dataclass(frozen=True)
class FramePrompt:
    """What the user gave for object ``obj_id`` on frame ``frame`` (pixels of that frame)."""

    obj_id: int
    frame: int
    prompt: Prompt


def merge_prompts(prompts: Iterable[FramePrompt]) -> dict[int, list[FramePrompt]]:
    """{frame: [one prompt per object]}: clicks of one object on one frame accumulate; a later
    box or mask for it replaces an earlier one, and a mask, which goes alone, wins."""
    grouped: dict[tuple[int, int], list[Prompt]] = {}
    for p in prompts:
        grouped.setdefault((p.frame, p.obj_id), []).append(p.prompt)
    by_frame: dict[int, list[FramePrompt]] = {}
    for (frame, obj_id), group in sorted(grouped.items(), key=lambda kv: kv[0]):
        by_frame.setdefault(frame, []).append(FramePrompt(obj_id, frame, _merged(group)))
    return by_frame


def _merged(group: list[Prompt]) -> Prompt:
    """One object's prompts on one frame as one (see ``merge_prompts``); checked later, by the
    tracker, like any prompt."""
    masks = [g.mask for g in group if g.mask is not None]
    if masks:
        return Prompt(mask=masks[-1])
    if len(group) == 1:
        return group[0]
    points = [xy for g in group if g.points is not None for xy in g.points]
    labels = [v for g in group if g.labels is not None for v in g.labels]
    boxes = [g.box for g in group if g.box is not None]
    return Prompt(points or None, labels or None, boxes[-1] if boxes else None)


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int  # as the container states it (0 when unknown)


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path} (missing file or a format OpenCV cannot read)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    info = VideoInfo(fps if fps > 0 else 30.0, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0))
    return cap, info


def read_frames(cap: cv2.VideoCapture, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames, one at a time."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, bgr = cap.read()
        if not ok:
            return
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoWriter:
    """An mp4 (``mp4v``) writer taking RGB frames; the size is set by the first frame."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path}")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class TrackedFrame:
    """One frame's outcome: the frame, every object's result on it, and where the time went
    (tracking and prompting both; ``prompted`` lists the objects prompted on it)."""

    index: int
    frame: np.ndarray
    objects: dict  # obj_id -> engine.tracker.ObjectResult
    times: FrameTimes
    prompted: list[int]


def track_video(tracker, frames: Iterable[np.ndarray], prompts: Iterable[FramePrompt],
                clock: StageClock | None = None) -> Iterator[TrackedFrame]:
    """Track ``frames`` with ``tracker``, applying ``prompts`` on their frames."""
    clock = clock or StageClock()
    by_frame = merge_prompts(prompts)
    for index, frame in enumerate(frames):
        here = by_frame.get(index, [])
        with clock.frame() as times:
            objects = dict(tracker.track(frame).objects)
            for p in here:
                objects[p.obj_id] = tracker.apply_prompt(p.obj_id, p.prompt)
        yield TrackedFrame(index, frame, objects, times, [p.obj_id for p in here])
