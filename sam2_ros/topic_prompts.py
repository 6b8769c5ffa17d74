"""Prompts that arrive on topics, as plain data: clicks (geometry_msgs/PointStamped in image
pixels) and a detector's boxes (vision_msgs/Detection2DArray). Nothing here imports rclpy or
vision_msgs: messages are read by attribute, so every rule is testable on plain data.

What a click does (the README's "Prompts from topics"):
- a positive click on an object's mask (on the frame the click's stamp names) refines that
  object with the click; clicks on one frame add up, as SAM 2's do;
- a positive click on no object starts a new object (the next id above every id in use);
- a negative click on an object's mask removes that part from it (a negative click on no object
  is refused: there is nothing to take it from).
Where masks overlap at the click, the smallest mask (the most specific object) is chosen.

What a detection does (``match_detections``):
- a box that overlaps a visible object's box (IoU >= match_iou) is that object: nothing to do;
- a box that overlaps a lost object's last box (IoU >= match_iou) re-prompts that object;
- any other box (score >= min_score) starts a new object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from engine.prompts import Prompt

from .conversions import InputError

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels (edges)


@dataclass(frozen=True)
class Detection:
    """One detector box in pixels (centre and size, as vision_msgs/BoundingBox2D gives it)."""

    center_x: float
    center_y: float
    size_x: float
    size_y: float
    score: float = 1.0
    class_id: str = ""

    @property
    def box(self) -> Box:
        hx, hy = self.size_x / 2, self.size_y / 2
        return (self.center_x - hx, self.center_y - hy, self.center_x + hx, self.center_y + hy)


@dataclass(frozen=True)
class KnownObject:
    """A tracked object as the detector matching sees it: its latest box (the last box it had
    while visible, for a lost object) and whether it is visible now."""

    object_id: int
    box: Box | None
    visible: bool


@dataclass(frozen=True)
class DetectionPrompt:
    """A box prompt made from a detection: ``action`` is "added" (new object) or
    "re-prompted" (a lost object found again)."""

    object_id: int
    box: Box
    action: str
    detection: Detection


def click_prompt(x: float, y: float, positive: bool) -> Prompt:
    """One click as the engine's prompt, in the arrays an AddPrompt request gives
    (``conversions.prompt_from_request``), so that it is checked as the service's are;
    InputError for a coordinate that is not a finite number."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"click at ({x}, {y}): coordinates must be finite pixel positions",
                         "click")
    return Prompt(np.array([[x, y]], np.float32), np.array([1 if positive else 0], np.int32))


def box_prompt(box: Box) -> Prompt:
    """A detection's box as the engine's prompt (float32, as an AddPrompt request's box)."""
    return Prompt(box=np.asarray(box, np.float32))


def object_under(masks: dict[int, np.ndarray], x: float, y: float) -> int | None:
    """The id of the object whose mask covers pixel (x, y) (column, row; the pixel that holds
    the point), the smallest such mask if several; None if none does or it is outside."""
    col, row = int(math.floor(x)), int(math.floor(y))
    best, best_area = None, None
    for obj_id, mask in masks.items():
        h, w = mask.shape
        if 0 <= row < h and 0 <= col < w and mask[row, col]:
            area = int(mask.sum())
            if best_area is None or area < best_area or (area == best_area and obj_id < best):
                best, best_area = obj_id, area
    return best


def next_object_id(in_use: Iterable[int]) -> int:
    """The id a new topic prompt gives its object: one above every id in use (1 if none)."""
    return max(in_use, default=0) + 1


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(detections: Iterable[Detection], objects: Iterable[KnownObject],
                     match_iou: float, min_score: float,
                     max_new: int) -> tuple[list[DetectionPrompt], list[tuple[Detection, str]]]:
    """Detections -> box prompts, and the detections left out with the reason.

    Best matches first: each detection goes to the object its box overlaps most (IoU >=
    ``match_iou``), each object takes at most one detection (another box on it is left out).
    A match with a visible object needs no prompt; with a lost one it re-prompts it. Other
    detections with score >= ``min_score`` start new objects (at most ``max_new``, ids above
    every id in use, the surest first; a second box on a new object is left out)."""
    dets = list(detections)
    objs = [o for o in objects if o.box is not None]
    pairs = sorted(((box_iou(d.box, o.box), i, j) for i, d in enumerate(dets)
                    for j, o in enumerate(objs)), key=lambda p: (-p[0], p[1], p[2]))
    det_to_obj: dict[int, int] = {}
    taken: set[int] = set()
    for iou, i, j in pairs:
        if iou < match_iou or iou <= 0.0:
            break
        if i not in det_to_obj and j not in taken:
            det_to_obj[i] = j
            taken.add(j)
    prompts: list[DetectionPrompt] = []
    skipped: list[tuple[Detection, str]] = []
    next_id = next_object_id([o.object_id for o in objects])
    claimed = [(o.object_id, o.box) for o in objs]  # boxes that are an object already
    for i in sorted(range(len(dets)), key=lambda k: -dets[k].score):  # the surest first
        det = dets[i]
        if i in det_to_obj:
            obj = objs[det_to_obj[i]]
            if obj.visible:
                skipped.append((det, f"object {obj.object_id} is tracked there"))
            else:
                prompts.append(DetectionPrompt(obj.object_id, det.box, "re-prompted", det))
            continue
        dup = next((oid for oid, box in claimed if box_iou(det.box, box) >= match_iou), None)
        if dup is not None:  # a second box on one object: the better one prompts it
            skipped.append((det, f"another detection of object {dup}"))
        elif det.score < min_score:
            skipped.append((det, f"score {det.score:.2f} below detection_min_score "
                                 f"{min_score:g}"))
        elif max_new <= 0:
            skipped.append((det, "no room for a new object (max_objects reached)"))
        else:
            prompts.append(DetectionPrompt(next_id, det.box, "added", det))
            claimed.append((next_id, det.box))
            next_id += 1
            max_new -= 1
    return prompts, skipped


def detections_from_msg(msg) -> list[Detection]:
    """A vision_msgs/Detection2DArray (read by attribute) -> Detections; the score and class of
    a detection are those of its best hypothesis (none: score 1, no class)."""
    out = []
    for det in msg.detections:
        score, class_id = 1.0, ""
        results = list(getattr(det, "results", []) or [])
        if results:
            best = max(results, key=lambda r: r.hypothesis.score)
            score, class_id = float(best.hypothesis.score), str(best.hypothesis.class_id)
        center = det.bbox.center
        # vision_msgs 4 (Humble and later): center.position.x; older: center.x
        pos = getattr(center, "position", center)
        out.append(Detection(float(pos.x), float(pos.y), float(det.bbox.size_x),
                             float(det.bbox.size_y), score, class_id))
    return out


def track_detections(tracks: Iterable[Any]) -> list[tuple[int, Detection]]:
    """The visible objects of ObjectTrack messages (read by attribute) as detections, for
    vision_msgs/Detection2DArray: (object id, box centre and size from the float box, presence
    as the score, the object id as the class)."""
    out = []
    for t in tracks:
        if not t.visible:
            continue
        x0, y0, x1, y1 = (float(v) for v in t.box)
        out.append((int(t.object_id), Detection((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0,
                                                float(t.presence), str(t.object_id))))
    return out
