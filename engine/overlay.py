"""The ~/overlay picture: the input frame with each visible object's mask tinted in its colour,
its outline, its box and its id. Pure numpy/OpenCV on (H, W, 3) uint8 RGB."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per label (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(frame: np.ndarray, objects: list[tuple[int, int, np.ndarray, tuple | None]],
                   alpha: float = 0.5, banner: str = "") -> np.ndarray:
    """frame (H, W, 3) RGB; objects: (object id, label, (H, W) bool mask, box or None) for the
    visible ones; box = (x0, y0, x1, y1) in pixels. Returns a new RGB image."""
    out = frame.copy()
    for obj_id, label, mask, box in objects:
        c = np.array(colour(label), np.float32)
        if mask.any():
            out[mask] = (out[mask] * (1 - alpha) + c * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in c), 1)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(v) for v in c), 1)
            cv2.putText(out, str(obj_id), (x0 + 2, max(y0 - 3, 9)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, tuple(int(v) for v in c), 1, cv2.LINE_AA)
    if banner:
        cv2.putText(out, banner, (3, out.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
