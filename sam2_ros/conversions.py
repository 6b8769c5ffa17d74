"""sensor_msgs images <-> numpy without cv_bridge, and prompt requests -> checked arrays.

Inputs are decoded to (H, W, 3) uint8 RGB, the tracker's format; every failure raises
``InputError`` (a ValueError) whose message says what was wrong with the message. Outputs fill
``msg.data`` from ``bytes`` (assigning a numpy array to a message field is ~100x slower).
Nothing here imports rclpy: messages are only read and filled by attribute.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class InputError(ValueError):
    """A message the node cannot use; the text says why."""


# encoding -> (channels, dtype, cv2 conversion to RGB or None when already RGB / special)
_ENCODINGS: dict[str, tuple[int, np.dtype, int | None]] = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "8UC3": (3, np.uint8, cv2.COLOR_BGR2RGB),  # OpenCV's habit: 3 channels are BGR
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "8UC4": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "rgb16": (3, np.uint16, None),
    "bgr16": (3, np.uint16, cv2.COLOR_BGR2RGB),
    "yuv422": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),  # UYVY
    "uyvy": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),  # YUYV
    "yuyv": (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
    # OpenCV names Bayer patterns by the second row: ROS rggb == OpenCV BG.
    "bayer_rggb8": (1, np.uint8, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.uint8, cv2.COLOR_BayerGB2RGB),
}
ENCODINGS = tuple(_ENCODINGS)
MAX_SIDE = 16384  # refuse absurd sizes before allocating anything


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. Raises InputError with the reason."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise InputError(f"unsupported image encoding {enc!r}; accepted: {', '.join(ENCODINGS)}")
    channels, dtype, conversion = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise InputError(f"empty image ({w}x{h}, encoding {enc})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InputError(f"image too large ({w}x{h}); at most {MAX_SIDE} pixels a side")
    row = w * channels * np.dtype(dtype).itemsize
    if step < row:
        raise InputError(f"step {step} is shorter than a row of {w} {enc} pixels ({row} bytes)")
    data = msg.data
    if len(data) < h * step:
        raise InputError(f"truncated image: {len(data)} bytes of data, expected height*step = "
                         f"{h}*{step} = {h * step}")
    if enc.startswith("yuv") or enc in ("uyvy", "yuyv"):
        if w % 2:
            raise InputError(f"{enc} needs an even width, got {w}")
    buf = np.frombuffer(data, np.uint8, count=h * step).reshape(h, step)[:, :row]
    img = buf
    if dtype == np.uint16:  # keep the 8 most significant bits
        img = (buf.view(">u2" if msg.is_bigendian else "<u2") >> 8).astype(np.uint8)
    img = img.reshape(h, w, channels) if channels > 1 else img.reshape(h, w)
    if conversion is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), conversion)


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes) -> (H, W, 3) RGB."""
    fmt = msg.format or "unknown format"
    if len(msg.data) == 0:
        raise InputError(f"empty compressed image ({fmt})")
    if "compressedDepth" in fmt:
        raise InputError(f"compressedDepth images are not supported ({fmt!r})")
    buf = np.frombuffer(msg.data, np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # BGR; grey inputs are expanded
    except cv2.error as err:
        img = None
        fmt = f"{fmt}: {str(err).strip().splitlines()[-1]}"
    if img is None:
        raise InputError(f"corrupt compressed image ({fmt}, {len(buf)} bytes): cannot be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fill_image(msg, array: np.ndarray, encoding: str):
    """Fill sensor_msgs/Image ``msg`` from a (H, W) or (H, W, C) array; header left to caller."""
    h, w = array.shape[:2]
    array = np.ascontiguousarray(array)
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def label_image(masks: dict[int, np.ndarray], labels: dict[int, int], shape: tuple[int, int],
                dtype=np.uint8) -> np.ndarray:
    """(H, W) label image: 0 background, labels[obj] where that object's mask is set.

    Objects are painted in label order; where masks overlap the higher label wins."""
    out = np.zeros(shape, dtype)
    for obj_id in sorted(masks, key=lambda o: labels[o]):
        out[masks[obj_id]] = labels[obj_id]
    return out


@dataclass(frozen=True)
class Prompt:
    """An AddPrompt request as the arguments of ``StreamingTracker.add_prompt`` (pixels of the
    frame it was made on). The engine checks the values (inside the frame, finite, labels 0/1,
    box order, mask xor clicks) and says what is wrong; here only the message's structure."""

    points: np.ndarray | None  # (N, 2) float32 x, y
    labels: np.ndarray | None  # (N,) int32, 1 positive / 0 negative
    box: np.ndarray | None  # (4,) float32 x0, y0, x1, y1
    mask: np.ndarray | None  # (H, W) bool

    def kwargs(self) -> dict:
        return {"points": self.points, "labels": self.labels, "box": self.box, "mask": self.mask}

    def describe(self) -> str:
        parts = []
        if self.points is not None:
            pos = int((self.labels == 1).sum())
            parts.append(f"{pos} positive / {len(self.labels) - pos} negative click(s)")
        if self.box is not None:
            parts.append("a box")
        if self.mask is not None:
            parts.append(f"a mask of {int(self.mask.sum())} px")
        return " and ".join(parts) or "nothing"


def prompt_from_request(req, frame_shape: tuple[int, int]) -> Prompt:
    """An AddPrompt request for a frame of (H, W) pixels -> Prompt; InputError says why not."""
    h, w = frame_shape
    xs = np.asarray(req.points_x, np.float32)
    ys = np.asarray(req.points_y, np.float32)
    labels = np.asarray(req.labels, np.int32)
    if not (len(xs) == len(ys) == len(labels)):
        raise InputError(f"points and labels differ in length: {len(xs)} points_x, "
                         f"{len(ys)} points_y, {len(labels)} labels (need one label per point)")
    clicks = len(xs) > 0
    mask = None
    if req.mask.width or req.mask.height or len(req.mask.data):
        mask = _mask(req.mask, w, h)
    return Prompt(np.stack([xs, ys], axis=1) if clicks else None, labels if clicks else None,
                  np.asarray(req.box, np.float32) if req.has_box else None, mask)


def _mask(msg, w: int, h: int) -> np.ndarray:
    if msg.encoding not in ("mono8", "8UC1"):
        raise InputError(f"mask prompt must be mono8 (non-zero = object), got {msg.encoding!r}")
    if (msg.width, msg.height) != (w, h):
        raise InputError(f"mask prompt is {msg.width}x{msg.height}, the frame is {w}x{h}")
    mask = image_to_rgb(msg)[..., 0] > 0
    if not mask.any():
        raise InputError("mask prompt is empty (no non-zero pixel)")
    return mask
