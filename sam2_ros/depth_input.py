"""Aligned depth for sam2_node: recent depth images and the latest CameraInfo, paired with a
colour frame by stamp, checked and handed to ``engine.depth``.

No message_filters: the executor thread only stores what arrives (a bounded deque of depth
messages, the newest CameraInfo); the worker thread, once a colour frame is tracked, takes the
depth image with the frame's stamp, else the nearest one within ``depth_tolerance_s``, and
decodes only that one. Nothing waits for depth: a frame without usable depth is published in 2D
with its objects' positions unknown.

Resize rule: a depth image of another size than the colour frame with the same aspect ratio
(the same field of view at another resolution) is used, each depth pixel taking the mask's
value at its centre; its CameraInfo must then be for the depth image's size.

Refusals (``InputError``, text "<kind>: <what was wrong and what was expected>"), each counted:
a depth image of another aspect ratio than the colour frame, an unknown encoding, truncated
data, a missing CameraInfo or one with a zero or non-finite camera matrix or of another size
than the depth, and no depth image within the tolerance of the frame's stamp. Nothing here
imports rclpy.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.depth import Intrinsics, same_field_of_view

from .conversions import InputError


class DepthError(InputError):
    """A depth input the node cannot use: "<kind>: <what was wrong and what was expected>";
    its kind (the log is throttled per kind) is the text before the colon."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind=message.split(":", 1)[0])

# encoding -> (dtype, metres per unit)
DEPTH_ENCODINGS: dict[str, tuple[np.dtype, float]] = {
    "16UC1": (np.dtype(np.uint16), 0.001),  # millimetres (RealSense, OAK, ...)
    "mono16": (np.dtype(np.uint16), 0.001),
    "32FC1": (np.dtype(np.float32), 1.0),  # metres (ZED, ...)
}
_EXPECTED = "16UC1 or mono16 (millimetres) or 32FC1 (metres)"


def _ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def depth_array(msg) -> tuple[np.ndarray, float]:
    """sensor_msgs/Image of depth -> ((H, W) array viewing its data, metres per unit)."""
    enc = msg.encoding
    if enc not in DEPTH_ENCODINGS:
        raise DepthError(f"encoding: depth image encoding {enc!r} is not supported; expected "
                         f"{_EXPECTED}")
    dtype, scale = DEPTH_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * dtype.itemsize
    if h == 0 or w == 0:
        raise DepthError(f"empty: depth image is {w}x{h}")
    if step < row or step % dtype.itemsize:
        raise DepthError(f"step: depth image step {step} does not fit rows of {w} {enc} pixels "
                         f"({row} bytes, a multiple of {dtype.itemsize})")
    if len(msg.data) < h * step:
        raise DepthError(f"truncated: depth image has {len(msg.data)} bytes, expected "
                         f"height*step = {h}*{step} = {h * step}")
    order = ">" if msg.is_bigendian else "<"
    arr = np.frombuffer(msg.data, dtype.newbyteorder(order), count=h * step // dtype.itemsize)
    return arr.reshape(h, step // dtype.itemsize)[:, :w], scale


def intrinsics_from_info(info, width: int, height: int) -> Intrinsics:
    """The pinhole intrinsics of a CameraInfo (its K) for a depth image of width x height."""
    if info is None:
        raise DepthError("camera_info: no CameraInfo received on depth/camera_info yet; the "
                         "depth image's intrinsics (K) are needed")
    if (info.width, info.height) not in ((0, 0), (width, height)):
        raise DepthError(f"camera_info: CameraInfo is for {info.width}x{info.height} images but "
                         f"the depth image is {width}x{height}")
    try:
        return Intrinsics.from_k(info.k)
    except ValueError as err:
        raise DepthError(f"camera_info: bad camera matrix K {list(info.k)}: {err}") from None


@dataclass(frozen=True)
class PairedDepth:
    """The depth for one colour frame, ready for ``engine.depth``."""

    depth: np.ndarray  # (h, w): the colour frame's size or its aspect ratio
    scale: float  # metres per unit
    intrinsics: Intrinsics
    header: Any  # the depth image's header (frame_id: the frame of the positions)


class DepthInput:
    """Bounded buffers of depth images and the latest CameraInfo; counters for /diagnostics.

    ``on_depth`` / ``on_info`` run on the executor thread, ``pair`` on the worker; a lock
    guards the buffers and counters."""

    def __init__(self, queue_size: int) -> None:
        self._depth: deque[tuple[int, Any]] = deque(maxlen=queue_size)
        self._info = None
        self._lock = threading.Lock()
        self.received = self.paired = self.refused = self.missing = 0
        self.last_refusal = ""
        self.last_outcome = ""  # of the latest frame: paired | refused | missing

    def on_depth(self, msg) -> None:
        with self._lock:
            self._depth.append((_ns(msg.header.stamp), msg))
            self.received += 1

    def on_info(self, msg) -> None:
        with self._lock:
            self._info = msg

    def pair(self, stamp_ns: int, frame_hw: tuple[int, int],
             tolerance_s: float) -> PairedDepth | None:
        """The depth for the colour frame stamped ``stamp_ns`` of (H, W) pixels; None while no
        depth image has arrived at all (counted as missing); InputError (counted) when the
        nearest one is unusable."""
        with self._lock:
            candidates, info = list(self._depth), self._info
        if not candidates:
            with self._lock:
                self.missing += 1
                self.last_outcome = "missing"
            return None
        try:
            return self._check(stamp_ns, frame_hw, tolerance_s, candidates, info)
        except InputError as err:
            with self._lock:
                self.refused += 1
                self.last_refusal, self.last_outcome = str(err), "refused"
            raise

    @staticmethod
    def _check(stamp_ns, frame_hw, tolerance_s, candidates, info) -> PairedDepth:
        depth_ns, msg = min(candidates, key=lambda c: abs(c[0] - stamp_ns))
        gap_s = (depth_ns - stamp_ns) / 1e9
        if abs(gap_s) > tolerance_s:
            newest = max(c[0] for c in candidates)
            raise DepthError(
                f"stamp: the nearest depth image is {abs(gap_s):.3f} s "
                f"{'newer' if gap_s > 0 else 'older'} than the colour frame (newest depth "
                f"{(newest - stamp_ns) / 1e9:+.3f} s from it); expected one within "
                f"depth_tolerance_s = {tolerance_s:g} s")
        depth, scale = depth_array(msg)
        (h, w), (hd, wd) = frame_hw, depth.shape
        if not same_field_of_view((h, w), (hd, wd)):
            raise DepthError(f"size: depth image is {wd}x{hd} but the colour frame is {w}x{h}, "
                             "another aspect ratio; an aligned depth image has the colour "
                             "image's size (e.g. RealSense aligned_depth_to_color) or its field "
                             "of view at another resolution")
        return PairedDepth(depth, scale, intrinsics_from_info(info, wd, hd), msg.header)

    def counters(self) -> dict[str, str]:
        """The key/values of the depth status in /diagnostics."""
        with self._lock:
            return {"depth_images_received": str(self.received),
                    "frames_with_depth": str(self.paired),
                    "frames_depth_refused": str(self.refused),
                    "frames_without_depth": str(self.missing),
                    "last_refusal": self.last_refusal,
                    "camera_info_received": str(self._info is not None).lower()}

    def on_paired(self) -> None:
        """The paired depth was used (counted apart from ``pair``: the caller may still fail)."""
        with self._lock:
            self.paired += 1
            self.last_outcome = "paired"
