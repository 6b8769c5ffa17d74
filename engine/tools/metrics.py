"""Tracking-quality measures of the DAVIS protocol, plus presence accuracy.

* **J** (region similarity): IoU of the predicted and true masks. An empty prediction of an
  empty truth scores 1 (the DAVIS 2017 convention).
* **F** (contour accuracy): F-measure of boundary precision and recall, where a boundary pixel
  counts as matched if the other boundary lies within ``bound_th`` of it: a fraction of the
  image diagonal when < 1 (DAVIS uses 0.008, i.e. about 4 px at 320x240), else pixels.
  Boundaries are drawn as DAVIS's ``seg2bmap`` draws them; matching uses a disk of that
  radius. Both empty: 1; exactly one empty: 0.
* **presence accuracy**: how often "the object is in view" (presence probability > 0.5) agrees
  with the truth (the true mask has at least ``min_visible`` pixels); frames where the truth
  is a sliver (between 0 and ``min_visible`` pixels) are not scored.

* **lost and confident**: on a frame where the object is in view (the true mask has at least
  ``min_visible`` pixels), the tracker says it is present (presence probability above
  ``PRESENCE_THRESHOLD``, the tracker's own threshold: ``StreamingTracker`` keeps a mask only
  when the presence logit is > 0, i.e. probability > 0.5) and its mask is non-empty but
  mostly off the target: fewer than half of the predicted pixels lie on the true mask
  (|pred & truth| < 0.5 |pred|). The share is taken over visible-object frames, pooled.
* **where the mask is** (diagnostic, visible-object frames): ``target`` (at least half of it
  on the target), else ``other`` (more of it on other objects than on the background), else
  ``background``; ``empty`` when nothing is predicted.

Per-clip scores are means over frames; ``J&F`` is the mean of J and F. ``ClipScore.window``
cuts a long stream into windows of frames, each scored like a clip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

BOUND_TH = 0.008  # DAVIS default boundary tolerance (fraction of the image diagonal)
MIN_VISIBLE = 20  # pixels; fewer (but some) make a frame ambiguous for presence scoring
PRESENCE_THRESHOLD = 0.5  # presence probability above which the tracker reports the object
OFF_TARGET = 0.5  # lost: less than this share of the predicted mask lies on the target
PLACES = ("target", "other", "background", "empty")  # where a visible object's mask is


def region_similarity(pred: np.ndarray, truth: np.ndarray) -> float:
    """J: IoU of two (H, W) bool masks; 1.0 when both are empty."""
    pred, truth = _bool2d(pred, truth)
    union = np.logical_or(pred, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels as DAVIS's ``seg2bmap`` draws them (same size as the mask): a pixel is
    on the boundary when it differs from its right, bottom or bottom-right neighbour; the
    image's own border is not a boundary. (H, W) bool -> (H, W) bool."""
    seg = np.asarray(mask, bool)
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ below[:, -1]
    b[-1, -1] = False
    return b


def _tolerance(bound_th: float, shape: tuple[int, int]) -> int:
    if bound_th >= 1:
        return int(round(bound_th))
    return int(math.ceil(bound_th * math.hypot(*shape)))


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def contour_accuracy(pred: np.ndarray, truth: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: boundary F-measure with tolerance ``bound_th`` (fraction of the diagonal, or pixels
    when >= 1). 1.0 when both masks are empty, 0.0 when only one is."""
    pred, truth = _bool2d(pred, truth)
    pb, tb = boundary_map(pred), boundary_map(truth)
    n_p, n_t = int(pb.sum()), int(tb.sum())
    if n_p == 0 and n_t == 0:
        return 1.0
    if n_p == 0 or n_t == 0:
        return 0.0
    disk = _disk(_tolerance(bound_th, pred.shape))
    t_near = cv2.dilate(tb.astype(np.uint8), disk).astype(bool)
    p_near = cv2.dilate(pb.astype(np.uint8), disk).astype(bool)
    precision = (pb & t_near).sum() / n_p
    recall = (tb & p_near).sum() / n_t
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def presence_truth(truth: np.ndarray, min_visible: int = MIN_VISIBLE) -> bool | None:
    """True (in view), False (absent) or None (a sliver: not scored)."""
    area = int(np.count_nonzero(truth))
    if area == 0:
        return False
    return True if area >= min_visible else None


def lost_and_confident(pred: np.ndarray, truth: np.ndarray, presence: float,
                       threshold: float = PRESENCE_THRESHOLD,
                       min_visible: int = MIN_VISIBLE) -> bool | None:
    """Is the tracker lost and confident on this frame (see the module docstring)? None when
    the object is not in view (fewer than ``min_visible`` true pixels): not scored."""
    pred, truth = _bool2d(pred, truth)
    if int(np.count_nonzero(truth)) < min_visible:
        return None
    predicted = int(np.count_nonzero(pred))
    if presence <= threshold or predicted == 0:
        return False
    return bool(np.count_nonzero(pred & truth) < OFF_TARGET * predicted)


def mask_place(pred: np.ndarray, truth: np.ndarray, others: np.ndarray | None,
               min_visible: int = MIN_VISIBLE) -> str | None:
    """Where the predicted mask of a visible object is: one of ``PLACES`` (see the module
    docstring); ``others`` is the union of the other objects' true masks (None: none). None
    when the object is not in view."""
    pred, truth = _bool2d(pred, truth)
    if int(np.count_nonzero(truth)) < min_visible:
        return None
    predicted = int(np.count_nonzero(pred))
    if predicted == 0:
        return "empty"
    if np.count_nonzero(pred & truth) >= OFF_TARGET * predicted:
        return "target"
    on_others = 0 if others is None else int(np.count_nonzero(pred & others & ~truth))
    on_background = predicted - int(np.count_nonzero(pred & truth)) - on_others
    return "other" if on_others > on_background else "background"


@dataclass
class ClipScore:
    """Per-frame scores of one tracked object over one clip (frame 0, the prompt, included)."""

    name: str
    phenomenon: str
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)
    presence_hits: list[bool] = field(default_factory=list)  # scored frames only
    reacquired: bool | None = None  # absent at some point, then found again (None: never absent)
    # per frame, aligned with j and f (None: not scored on that frame)
    presence_frames: list[bool | None] = field(default_factory=list)
    lost: list[bool | None] = field(default_factory=list)  # lost and confident
    places: list[str | None] = field(default_factory=list)  # mask_place

    def add(self, pred_mask: np.ndarray, truth: np.ndarray, presence: float,
            bound_th: float = BOUND_TH, others: np.ndarray | None = None) -> None:
        """Score one frame; ``others``: the other objects' true masks (for ``places``)."""
        self.j.append(region_similarity(pred_mask, truth))
        self.f.append(contour_accuracy(pred_mask, truth, bound_th))
        expected = presence_truth(truth)
        hit = None if expected is None else (presence > PRESENCE_THRESHOLD) == expected
        if hit is not None:
            self.presence_hits.append(hit)
        self.presence_frames.append(hit)
        self.lost.append(lost_and_confident(pred_mask, truth, presence))
        self.places.append(mask_place(pred_mask, truth, others))

    def window(self, start: int, stop: int) -> ClipScore:
        """The scores of frames ``start .. stop - 1`` alone, as a clip of their own."""
        if not 0 <= start < stop <= len(self.j):
            raise ValueError(f"window {start}..{stop} outside the {len(self.j)} scored frames")
        hits = self.presence_frames[start:stop]
        return ClipScore(f"{self.name}[{start}:{stop}]", self.phenomenon, self.j[start:stop],
                         self.f[start:stop], [h for h in hits if h is not None], None, hits,
                         self.lost[start:stop], self.places[start:stop])

    def windows(self, size: int) -> list[ClipScore]:
        """Consecutive windows of ``size`` frames (the last may be shorter)."""
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        return [self.window(a, min(a + size, len(self.j))) for a in range(0, len(self.j), size)]

    @property
    def mean_j(self) -> float:
        return float(np.mean(self.j)) if self.j else float("nan")

    @property
    def mean_f(self) -> float:
        return float(np.mean(self.f)) if self.f else float("nan")

    @property
    def jf(self) -> float:
        return (self.mean_j + self.mean_f) / 2

    @property
    def presence_accuracy(self) -> float:
        return float(np.mean(self.presence_hits)) if self.presence_hits else float("nan")

    @property
    def lost_share(self) -> float:
        """Share of visible-object frames that are lost and confident (nan: none visible)."""
        scored = [x for x in self.lost if x is not None]
        return float(np.mean(scored)) if scored else float("nan")


def reacquisition(truth_areas: list[int], ious: list[float], iou_ok: float = 0.5,
                  within: int = 5, min_visible: int = MIN_VISIBLE) -> bool | None:
    """Was the object found again after its first full absence? None if it never vanished or
    never came back in view; else True when, within ``within`` frames of being back in view
    (>= ``min_visible`` pixels), some frame reached IoU >= ``iou_ok``."""
    gone = [i for i, a in enumerate(truth_areas) if a == 0]
    if not gone:
        return None
    back = [i for i in range(gone[0], len(truth_areas)) if truth_areas[i] >= min_visible]
    if not back:
        return None
    first = back[0]
    window = [ious[i] for i in range(first, min(first + within, len(ious)))]
    return bool(max(window) >= iou_ok)


@dataclass
class Summary:
    """Means over clips (each clip weighs the same, as in DAVIS)."""

    clips: int
    j: float
    f: float
    jf: float
    presence_accuracy: float
    reacquired: int  # clips where the object vanished and was found again
    reacquire_cases: int  # clips where it vanished and came back into view
    lost_confident: float = float("nan")  # share of all visible-object frames, pooled
    visible_frames: int = 0  # frames scored for lost_confident
    places: dict[str, float] = field(default_factory=dict)  # share of visible frames per place


def summarize(scores: list[ClipScore]) -> Summary:
    j = float(np.mean([s.mean_j for s in scores]))
    f = float(np.mean([s.mean_f for s in scores]))
    pres = [s.presence_accuracy for s in scores if s.presence_hits]
    cases = [s.reacquired for s in scores if s.reacquired is not None]
    lost = [x for s in scores for x in s.lost if x is not None]
    places = [p for s in scores for p in s.places if p is not None]
    return Summary(len(scores), j, f, (j + f) / 2, float(np.mean(pres)) if pres else float("nan"),
                   int(sum(cases)), len(cases), float(np.mean(lost)) if lost else float("nan"),
                   len(lost), {p: places.count(p) / len(places) for p in PLACES} if places
                   else {})


def _bool2d(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"masks must be 2D and of one shape, got {pred.shape} and {truth.shape}")
    return pred, truth
