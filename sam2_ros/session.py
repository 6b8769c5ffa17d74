"""What the worker thread does with the engine: track frames, apply prompts (on the newest frame
or, by stamp, on a recent one and carried forward), remove objects, reset. ROS-free: frames
arrive as opaque messages with a stamp, results leave through the ``publish`` callback.

Every method runs on the worker thread (``LatestFrameWorker``), so the tracker is never used
from two threads. Model logic stays in ``engine``; this file only decides which frame a request
applies to, keeps the object labels of the ~/masks image and counts frames.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from engine.prompts import CheckedPrompt, Prompt, check_prompt
from engine.replay import carry_forward
from engine.tracker import ObjectResult

from .backend import LoadedTracker
from .config import NodeConfig
from .conversions import InputError, prompt_from_request
from .diagnostics import FrameStats
from .topic_prompts import (Detection, DetectionPrompt, KnownObject, box_prompt, click_prompt,
                            match_detections, next_object_id, object_under)


@dataclass
class Frame:
    """One received frame. ``rgb`` and ``masks`` are filled once it has been tracked."""

    seq: int  # arrival order, 1, 2, ...
    stamp_ns: int  # header stamp
    msg: Any  # the message as received (decoded on the worker thread)
    received: float  # time.monotonic() at arrival
    rgb: np.ndarray | None = None
    masks: dict[int, np.ndarray] | None = None


def stamp_text(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


class FrameWindow:
    """Frames received in the last ``window_s`` seconds (at most ``max_frames``), oldest first.
    Written by the executor thread, read by the worker: every access holds the lock."""

    def __init__(self, window_s: float, max_frames: int) -> None:
        self.window_s = window_s
        self._frames: deque[Frame] = deque(maxlen=max_frames)
        self._lock = threading.Lock()

    def push(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)
            while len(self._frames) > 1 and \
                    frame.received - self._frames[0].received > self.window_s:
                self._frames.popleft()

    def find(self, stamp_ns: int, now: float | None = None) -> Frame | None:
        """The latest received frame with this stamp still in the window (at ``now``,
        time.monotonic(); default: the present), else None. Stamps need not increase: a
        bag that loops or a clock stepped back gives frames whose stamps go down."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for f in reversed(self._frames):
                if f.stamp_ns == stamp_ns and now - f.received <= self.window_s:
                    return f
        return None

    def tracked_between(self, first_seq: int, last_seq: int) -> list[Frame]:
        """Tracked frames with first_seq < seq <= last_seq, oldest first."""
        with self._lock:
            return [f for f in self._frames
                    if first_seq < f.seq <= last_seq and f.masks is not None]

    def newest(self) -> Frame | None:
        """The latest received frame (by arrival, whatever its stamp)."""
        with self._lock:
            return self._frames[-1] if self._frames else None

    def has_reached(self, stamp_ns: int) -> bool:
        """Whether a frame stamped ``stamp_ns`` or later is in the window: a frame stamped
        ``stamp_ns`` that is not there is then not still to come."""
        with self._lock:
            return any(f.stamp_ns >= stamp_ns for f in self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


@dataclass(frozen=True)
class PromptOutcome:
    object_id: int
    label: int
    applied_stamp_ns: int
    result: ObjectResult  # the object on the newest tracked frame
    message: str
    action: str = ""  # "added" or "refined" ("re-prompted" for a lost object's detection)


@dataclass(frozen=True)
class DetectionOutcome:
    """One detection's fate: a prompt applied (``outcome``) or refused (``error``), or no
    prompt at all (``prompt`` None: ``error`` says why it was left out)."""

    detection: Detection
    prompt: DetectionPrompt | None
    outcome: PromptOutcome | None
    error: str | None


class TrackingSession:
    """The tracker, the frames it can be prompted on, and the labels of its objects.

    One owner per piece of state: the tracker owns the objects (which exist) and the frame it is
    on; this session keeps only what the tracker does not know: each object's label in the
    ~/masks image, the received messages of the prompt window (``current`` is the message of
    the tracker's frame) and the boxes that match detections. The configuration is read from
    its one holder through ``config`` (the node's, changed there by live parameters)."""

    def __init__(self, engine: LoadedTracker, config: Callable[[], NodeConfig],
                 decode: Callable[[Any], np.ndarray],
                 publish: Callable[[Frame, list[ObjectResult], dict[int, int]], None],
                 stats: FrameStats, warn: Callable[[str, str], None]) -> None:
        self.engine, self._config = engine, config
        self._decode, self._publish, self._warn = decode, publish, warn
        self.stats = stats
        cfg = config()  # window size and length apply at configure
        self.window = FrameWindow(cfg.prompt_window_s, cfg.max_window_frames)
        self._labels: dict[int, int] = {}  # object id -> value in the ~/masks image
        self.current: Frame | None = None  # the frame the tracker last tracked
        self._last_seq = 0
        # For detections: each object's box while visible (pixel edges) and who is visible now
        self._last_box: dict[int, tuple[float, float, float, float]] = {}
        self._visible: set[int] = set()

    @property
    def cfg(self) -> NodeConfig:
        """The configuration in effect now (live parameters included)."""
        return self._config()

    @property
    def labels(self) -> dict[int, int]:
        """Object id -> label of every object the tracker has (a copy), in the tracker's
        order. Labels are the smallest values free when an object first appears, kept
        while it exists."""
        ids = self.engine.tracker.object_ids
        for gone in set(self._labels) - set(ids):
            del self._labels[gone]
        for obj_id in ids:
            if obj_id not in self._labels:
                used = set(self._labels.values())
                self._labels[obj_id] = next(v for v in range(1, len(used) + 2) if v not in used)
        return {i: self._labels[i] for i in ids}

    # ----------------------------------------------------------------- frames
    def process(self, frame: Frame) -> None:
        """Track ``frame`` (the newest received) and publish; stale frames are ignored."""
        if frame.seq > self._last_seq:
            self._track(frame)

    def _track(self, frame: Frame) -> None:
        skipped = max(frame.seq - self._last_seq - 1, 0)
        self._last_seq = max(self._last_seq, frame.seq)
        try:
            frame.rgb = self._decode(frame.msg) if frame.rgb is None else frame.rgb
        except InputError as err:
            self.stats.on_rejected(str(err))
            self._warn(f"frame {stamp_text(frame.stamp_ns)} rejected: {err}", err.kind)
            return
        results = list(self.engine.tracker.track(frame.rgb).objects.values())
        frame.masks = {r.obj_id: r.mask for r in results}
        self.current = frame
        self._visible = set()
        for r in results:
            self._note(r)
        self._publish(frame, results, self.labels)
        self.stats.on_processed(time.monotonic() - frame.received, skipped)

    def _ensure_tracked(self, frame: Frame) -> Frame:
        """Track ``frame`` now unless the tracker is already past it (a prompt made on it)."""
        if self.current is None or frame.seq > self.current.seq:
            self._track(frame)
        if self.current is not frame:
            raise InputError(f"frame {stamp_text(frame.stamp_ns)} could not be tracked "
                             "(see the log)")
        return frame

    # ---------------------------------------------------------------- prompts
    def _note(self, r: ObjectResult) -> None:
        """Remember whether ``r`` (on the current frame) is visible, and its box if so."""
        if r.box is not None and r.presence >= self.cfg.presence_threshold:
            x0, y0, x1, y1 = r.box
            self._last_box[r.obj_id] = (float(x0), float(y0), float(x1 + 1), float(y1 + 1))
            self._visible.add(r.obj_id)
        else:
            self._visible.discard(r.obj_id)

    def prompt(self, obj_id: int, request: Any, stamp_ns: int,
               asked_at: float | None = None) -> PromptOutcome:
        """Apply an AddPrompt request (received at ``asked_at``, time.monotonic(): the prompt
        window is counted from then). Raises InputError / ValueError / KeyError with the
        reason; then no object and no label has changed."""
        target, note = self._target_frame(stamp_ns, asked_at)
        return self._apply(obj_id, prompt_from_request(request, target.rgb.shape[:2]), target,
                           note)

    def click(self, x: float, y: float, positive: bool, stamp_ns: int,
              asked_at: float | None = None) -> PromptOutcome:
        """A click on the frame stamped ``stamp_ns`` (0: the newest): a positive click refines
        the object under it or starts a new one, a negative click takes the spot from the
        object under it (sam2_ros/topic_prompts.py). Raises like ``prompt``."""
        prompt = click_prompt(x, y, positive)
        target, note = self._target_frame(stamp_ns, asked_at)
        labels = self.labels
        masks = {i: m for i, m in (target.masks or {}).items() if i in labels}
        under = object_under(masks, x, y)
        if under is None and not positive:
            raise InputError(f"negative click at ({x:.1f}, {y:.1f}) is on no object (tracked: "
                             f"{sorted(labels)}); a negative click removes a part of the "
                             "object it lands on", "negative_click_on_nothing")
        obj_id = under if under is not None else next_object_id(labels)
        return self._apply(obj_id, prompt, target, note)

    def detections(self, detections: list[Detection], stamp_ns: int, match_iou: float,
                   min_score: float, asked_at: float | None = None) -> list[DetectionOutcome]:
        """A detector's boxes on the frame stamped ``stamp_ns``: new objects, or re-prompts
        of lost objects whose last box they match (topic_prompts.match_detections). Each box
        is applied or refused on its own; raises (nothing applied) when the frame is refused."""
        target, note = self._target_frame(stamp_ns, asked_at)
        ids = self.engine.tracker.object_ids
        known = [KnownObject(i, self._last_box.get(i), i in self._visible) for i in ids]
        prompts, skipped = match_detections(detections, known, match_iou, min_score,
                                            self.engine.tracker.max_objects - len(ids))
        out = [DetectionOutcome(d, None, None, why) for d, why in skipped]
        for p in prompts:
            try:
                done = self._apply(p.object_id, box_prompt(p.box), target, note)
            except (ValueError, KeyError, RuntimeError) as err:
                out.append(DetectionOutcome(p.detection, p, None, str(err)))
                continue
            if p.action == "re-prompted":
                done = replace(done, action=p.action, message=done.message.replace(
                    " refined ", " re-prompted (lost, found again by a detection) ", 1))
            out.append(DetectionOutcome(p.detection, p, done, None))
        return out

    def _apply(self, obj_id: int, prompt: Prompt, target: Frame, note: str) -> PromptOutcome:
        tracker = self.engine.tracker
        # Checked once, here, before any replay work; the checked prompt is what is applied.
        checked = check_prompt(prompt, target.rgb.shape[:2], tracker.cfg.image_size,
                               tracker.device)
        is_new = obj_id not in tracker.object_ids
        tracker.check_room(obj_id)  # the tracker's own rule, asked before any replay work
        if target is self.current:
            result = tracker.apply_prompt(obj_id, checked)
            how = f"applied to frame {stamp_text(target.stamp_ns)}"
        else:
            result = self._carry_forward(obj_id, target, checked)
            how = (f"applied to frame {stamp_text(target.stamp_ns)} and carried forward to "
                   f"frame {stamp_text(self.current.stamp_ns)}")
        label = self.labels[obj_id]
        if self.current.masks is not None:  # the object as it is now on the current frame
            self.current.masks[obj_id] = result.mask
        self._note(result)
        verb = "added" if is_new else "refined"
        msg = (f"object {obj_id} {verb} with {prompt.describe()}, {how}{note}; label "
               f"{label}, presence {result.presence:.2f}, predicted IoU {result.iou:.2f}")
        return PromptOutcome(obj_id, label, target.stamp_ns, result, msg, verb)

    def _target_frame(self, stamp_ns: int, asked_at: float | None) -> tuple[Frame, str]:
        """The frame a prompt stamped ``stamp_ns`` (0: the newest) applies to, and a note.
        Frames are ordered by arrival (``seq``), never by stamp."""
        cur = self.current
        found = self.window.find(stamp_ns, asked_at) if stamp_ns else None
        if cur is not None and (found is cur or (found is None and stamp_ns and
                                                 cur.stamp_ns == stamp_ns)):
            return cur, ""  # the frame the tracker is on (however long ago it came)
        if found is not None and cur is not None and found.seq < cur.seq:
            if found.rgb is None:  # received but skipped: decode it for the replay
                found.rgb = self._decode(found.msg)
            return found, ""
        if found is not None:  # newer than anything tracked: track it first
            return self._ensure_tracked(found), ""
        newest = self.window.newest()
        if stamp_ns and not self.window.has_reached(stamp_ns):
            # Never apply it to an older frame: the object was elsewhere there.
            seen = (f"the latest received is {stamp_text(newest.stamp_ns)}"
                    if newest is not None else "no frame has been received")
            raise InputError(f"frame {stamp_text(stamp_ns)} has not arrived within "
                             f"prompt_wait_s ({seen}); stamp the prompt with a received "
                             "frame's header stamp, or 0 for the newest frame", "not_arrived")
        note = ""
        if stamp_ns:
            note = (f" (frame {stamp_text(stamp_ns)} is not among the frames of the last "
                    f"{self.cfg.prompt_window_s:g} s, so the newest frame was used)")
        if cur is None and newest is None:
            raise InputError("no frame received yet: prompts apply to a camera frame")
        if cur is None or (stamp_ns and cur.stamp_ns < stamp_ns and newest.seq > cur.seq):
            # the tracker may be behind the prompt's frame: the newest received frame, never
            # an older one
            cur = self._ensure_tracked(newest)
        return cur, note

    def _carry_forward(self, obj_id: int, frame: Frame, prompt: CheckedPrompt) -> ObjectResult:
        """Apply ``prompt`` on the past ``frame``, follow the object to the current frame and
        hand the result to the tracker there as a mask prompt."""
        later = [f for f in self.window.tracked_between(frame.seq, self.current.seq)
                 if f is not self.current] + [self.current]
        frames = [frame.rgb] + [f.rgb for f in later]
        # A refined object starts from its mask on that frame (or, if the node skipped that
        # frame, on the next tracked one).
        seed = (frame.masks or {}).get(obj_id)
        if seed is None and obj_id in self.engine.tracker.object_ids:
            seed = (later[0].masks or {}).get(obj_id)
        final = carry_forward(self.engine.make_scratch_tracker, frames, obj_id, prompt, seed)
        if not final.mask.any():
            raise InputError(f"object {obj_id} was lost while carrying the prompt from frame "
                             f"{stamp_text(frame.stamp_ns)} to the newest frame; prompt it on a "
                             "newer frame")
        return self.engine.tracker.add_prompt(obj_id, mask=final.mask)

    # ------------------------------------------------------------ other requests
    def remove(self, obj_id: int) -> str:
        labels = self.labels
        if obj_id not in labels:
            raise KeyError(f"unknown object id {obj_id}; tracked ids: {sorted(labels)}")
        self.engine.tracker.remove_object(obj_id)
        self._labels.pop(obj_id)
        self._last_box.pop(obj_id, None)
        self._visible.discard(obj_id)
        return f"object {obj_id} (label {labels[obj_id]}) removed; {len(labels) - 1} left"

    def reset(self) -> str:
        n = len(self.engine.tracker.object_ids)
        self.engine.tracker.reset()  # the current frame stays promptable
        self._labels.clear()
        self._last_box.clear()
        self._visible.clear()
        return f"reset: {n} object(s) and all memory dropped"
