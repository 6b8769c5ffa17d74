"""The user's prompt, checked once and turned into what SAM 2's prompt encoder takes.

A ``Prompt`` is given in the pixel frame of the image the user saw (x right, y down, 0..W,
0..H): clicks with labels (1 = on the object, 0 = not on it), a box (x0, y0, x1, y1), or a
mask of the frame's size. It is plain data: the tracker, the ROS node (``sam2_ros/``) and the
command line (``engine/video.py``) all build this one type. ``check_prompt`` is the one place a
prompt is checked: every check raises ``InputError`` (a ValueError, see ``engine/errors.py``)
with a message that says what was wrong and what was expected; nothing is converted before
everything is checked. Its result, a ``CheckedPrompt``, is what the tracker applies
(``StreamingTracker.apply_prompt``), so a caller that checks a prompt early (to refuse it
before any other work) hands the checked result on and nothing checks it again.

Conversion follows SAM 2's video predictor: coordinates are scaled to the square model input
(``p / (W, H) * image_size``), a box travels as two corner clicks labelled 2 and 3 placed before
any clicks, and a mask is resized to the model input (bilinear, antialiased, >= 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

POSITIVE, NEGATIVE = 1, 0
BOX_LABELS = (2, 3)  # top-left, bottom-right corner
# Clicks in one prompt: each is a token of the mask decoder, so the cost grows with their number
# (50,000 clicks stalled a CPU for 30 s); interactive use needs a handful.
MAX_POINTS = 64


@dataclass(frozen=True)
class Prompt:
    """What a user gives for one object on one frame, in that frame's pixels (not yet checked).

    points: (N, 2) as (x, y) (a bare (x, y) is one click) with labels (N,) 1/0; box:
    (x0, y0, x1, y1); mask: (H, W), nonzero pixels are the object. Clicks and a box may go
    together; a mask goes alone. Any array-like will do: ``check_prompt`` says what is wrong.
    """

    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None

    def describe(self) -> str:
        """What the prompt holds, in words ("2 positive / 1 negative click(s) and a box")."""
        parts = []
        if self.points is not None and self.labels is not None:
            labels = np.asarray(self.labels).reshape(-1)
            if len(labels):
                pos = int((labels == POSITIVE).sum())
                parts.append(f"{pos} positive / {len(labels) - pos} negative click(s)")
        if self.box is not None:
            parts.append("a box")
        if self.mask is not None:
            parts.append(f"a mask of {int(np.count_nonzero(self.mask))} px")
        return " and ".join(parts) or "nothing"


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt that passed ``check_prompt`` for frames of ``frame_hw`` = (H, W), in the
    coordinates of a model input of ``image_size`` pixels: either clicks (and/or a box) or a
    mask.

    coords: (1, N, 2) float32 model-input pixels, box corners first; labels: (1, N) int32;
    has_box: whether the first two clicks are a box (a box replaces earlier clicks);
    mask: (1, 1, S, S) float32 in {0, 1}; prompt: the user's prompt it was made from.
    """

    prompt: Prompt
    frame_hw: tuple[int, int]
    image_size: int
    coords: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    has_box: bool = False
    mask: torch.Tensor | None = None

    def describe(self) -> str:
        return self.prompt.describe()

    def to(self, device: torch.device | str) -> "CheckedPrompt":
        """The same prompt with its tensors on ``device`` (itself when they are there)."""
        tensors = {k: getattr(self, k) for k in ("coords", "labels", "mask")}
        moved = {k: t.to(device) for k, t in tensors.items() if t is not None}
        if all(moved[k] is tensors[k] for k in moved):
            return self
        return replace(self, **moved)


def check_object_id(obj_id) -> int:
    """Object ids are non-negative integers (they become label values in the mask image)."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or obj_id < 0:
        raise InputError(f"object id must be a non-negative integer, got {obj_id!r}")
    return int(obj_id)


def _finite_array(value, name: str, shape_hint: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be numbers shaped {shape_hint}, got {value!r}") from err
    if not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite numbers, got NaN or inf in {arr.tolist()}")
    return arr


def _check_inside(xy: np.ndarray, what: str, height: int, width: int) -> None:
    """xy (N, 2): every (x, y) must lie on the frame, 0 <= x <= W and 0 <= y <= H."""
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        x, y = xy[np.flatnonzero(outside)[0]]
        raise InputError(f"{what} ({x:g}, {y:g}) is outside the frame: expected 0 <= x <= "
                         f"{width} and 0 <= y <= {height} (pixels of the {width}x{height} frame)",
                         "outside")


def _check_points(points, labels, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    if (points is None) != (labels is None):
        raise InputError("points and labels must be given together (one label per point)")
    if points is None:
        return np.zeros((0, 2)), np.zeros(0)
    xy = _finite_array(points, "points", "(N, 2) as (x, y)")
    if xy.size == 0 or (xy.ndim == 1 and xy.size == 2):  # no clicks, or one bare (x, y)
        xy = xy.reshape(-1, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"points must be shaped (N, 2) as (x, y) pairs, got shape {xy.shape}")
    if len(xy) > MAX_POINTS:
        raise InputError(f"too many clicks: {len(xy)} in one prompt, at most {MAX_POINTS}",
                         "too_many_clicks")
    lab = _finite_array(labels, "labels", "(N,)").reshape(-1)
    if len(lab) != len(xy):
        raise InputError(f"got {len(xy)} points but {len(lab)} labels: give one label per point")
    if not np.isin(lab, (POSITIVE, NEGATIVE)).all():
        raise InputError(f"labels must be {POSITIVE} (on the object) or {NEGATIVE} (not on it), "
                         f"got {lab.tolist()}")
    _check_inside(xy, "point", height, width)
    return xy, lab


def _check_box(box, height: int, width: int) -> np.ndarray:
    arr = _finite_array(box, "box", "(x0, y0, x1, y1)")
    if arr.size != 4:
        raise InputError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {arr.shape}")
    corners = arr.reshape(2, 2)
    _check_inside(corners, "box corner", height, width)
    if (corners[1] < corners[0]).any():
        raise InputError(f"box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, "
                         f"got {arr.tolist()}")
    return corners


def _check_mask(mask, height: int, width: int) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != (height, width):
        raise InputError(f"mask must have the frame's shape (H, W) = ({height}, {width}), "
                         f"got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError("mask must be finite (no NaN or inf); nonzero pixels are the object")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"mask must be boolean or numeric, got dtype {arr.dtype}")
    return arr != 0


def check_prompt(prompt: Prompt, frame_hw: tuple[int, int], image_size: int,
                 device: torch.device | str = "cpu") -> CheckedPrompt:
    """Check ``prompt``, made on a frame of ``frame_hw`` = (H, W), and convert it for a model
    input of ``image_size`` pixels (tensors on ``device``). The one check of a prompt."""
    if not isinstance(prompt, Prompt):
        raise InputError(f"a prompt must be an engine.prompts.Prompt, got "
                         f"{type(prompt).__name__}")
    points, labels, box, mask = prompt.points, prompt.labels, prompt.box, prompt.mask
    height, width = frame_hw
    made_for = {"prompt": prompt, "frame_hw": (int(height), int(width)),
                "image_size": int(image_size)}
    if mask is not None:
        if points is not None or labels is not None or box is not None:
            raise InputError("give either a mask or clicks/box on one call, not both")
        return CheckedPrompt(**made_for, mask=_mask_to_model(_check_mask(mask, height, width),
                                                             image_size, device))
    xy, lab = _check_points(points, labels, height, width)
    corners = _check_box(box, height, width) if box is not None else None
    if corners is None and len(xy) == 0:
        raise InputError("empty prompt: give points with labels, a box, or a mask")
    if corners is not None:
        xy = np.concatenate([corners, xy])
        lab = np.concatenate([BOX_LABELS, lab])
    coords = torch.tensor(xy, dtype=torch.float32)[None]  # (1, N, 2)
    coords = coords / torch.tensor([width, height], dtype=torch.float32) * image_size
    labels_t = torch.tensor(lab, dtype=torch.int32)[None]  # (1, N)
    return CheckedPrompt(**made_for, coords=coords.to(device), labels=labels_t.to(device),
                         has_box=corners is not None)


def _mask_to_model(mask: np.ndarray, image_size: int, device) -> torch.Tensor:
    """(H, W) bool -> (1, 1, S, S) float32 {0, 1} at the model input size."""
    t = torch.from_numpy(mask).to(device=device, dtype=torch.float32)[None, None]
    if t.shape[-2:] == (image_size, image_size):
        return t
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False,
                      antialias=True)
    return (t >= 0.5).float()
