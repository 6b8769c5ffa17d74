"""sensor_msgs images <-> numpy without cv_bridge, and prompt requests -> engine prompts.

Inputs are decoded to (H, W, 3) uint8 RGB, the tracker's format; every failure raises the
engine's ``InputError`` (``engine/errors.py``, a ValueError with a ``kind``) whose message says
what was wrong with the message. Outputs fill
``msg.data`` from ``bytes`` (assigning a numpy array to a message field is ~100x slower).
Nothing here imports rclpy: messages are only read and filled by attribute.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.errors import InputError
from engine.prompts import MAX_POINTS, Prompt


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
# Default cap on an input image's sides (raw and compressed alike; parameter max_image_side):
# 8K video fits, a decompression bomb does not. Checked before anything is allocated or decoded.
MAX_SIDE = 8192


def check_size(w: int, h: int, max_side: int, what: str) -> None:
    """Refuse an empty image or one with a side over ``max_side``."""
    if h <= 0 or w <= 0:
        raise InputError(f"empty image ({w}x{h}, {what})", "empty")
    if h > max_side or w > max_side:
        raise InputError(f"image too large ({w}x{h}, {what}): at most {max_side} pixels a side "
                         "(parameter max_image_side)", "too_large")


def image_to_rgb(msg, max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. Raises InputError with the reason."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        shown = enc if len(enc) <= 32 else enc[:32] + "..."
        raise InputError(f"unsupported image encoding {shown!r}; accepted: "
                         f"{', '.join(ENCODINGS)}", "encoding")
    channels, dtype, conversion = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(w, h, max_side, f"encoding {enc}")
    row = w * channels * np.dtype(dtype).itemsize
    if step < row:
        raise InputError(f"step {step} is shorter than a row of {w} {enc} pixels ({row} bytes)",
                         "step")
    data = msg.data
    if len(data) < h * step:
        raise InputError(f"truncated image: {len(data)} bytes of data, expected height*step = "
                         f"{h}*{step} = {h * step}", "truncated")
    if enc.startswith("yuv") or enc in ("uyvy", "yuyv"):
        if w % 2:
            raise InputError(f"{enc} needs an even width, got {w}", "odd_width")
    buf = np.frombuffer(data, np.uint8, count=h * step).reshape(h, step)[:, :row]
    img = buf
    if dtype == np.uint16:  # keep the 8 most significant bits
        img = (buf.view(">u2" if msg.is_bigendian else "<u2") >> 8).astype(np.uint8)
    img = img.reshape(h, w, channels) if channels > 1 else img.reshape(h, w)
    if conversion is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), conversion)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size): C0-CF except DHT C4, JPG C8, DAC CC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from a PNG or JPEG header without decoding any pixel.
    InputError for any other format or a header that does not say its size."""
    head = bytes(data[:32])
    if head.startswith(_PNG_SIGNATURE):
        # signature, then the IHDR chunk: length (4), b"IHDR", width (4), height (4), big-endian
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise InputError("corrupt compressed image (png): no IHDR header", "corrupt")
        return "png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        return ("jpeg", *_jpeg_size(data))
    raise InputError(f"unsupported compressed format (first bytes {head[:8].hex()}): "
                     "accepted: jpeg, png (as image_transport's compressed plugin sends)",
                     "format")


def _jpeg_size(data) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the start-of-frame; (width, height)."""
    view, i, n = memoryview(data), 2, len(data)
    while i + 4 <= n:
        if view[i] != 0xFF:
            break
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(view[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            return (int.from_bytes(view[i + 7:i + 9], "big"),
                    int.from_bytes(view[i + 5:i + 7], "big"))
        if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
            break
        i += 2 + length
    raise InputError("corrupt compressed image (jpeg): no frame header with its size",
                     "corrupt")


def compressed_to_rgb(msg, max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes) -> (H, W, 3) RGB.

    The size is read from the header first: an image over ``max_side`` is refused before a
    byte is decoded (a few KiB of PNG can decode to gigabytes)."""
    fmt = msg.format or "unknown format"
    if len(msg.data) == 0:
        raise InputError(f"empty compressed image ({fmt})", "empty")
    if "compressedDepth" in fmt:
        raise InputError(f"compressedDepth images are not supported ({fmt[:64]!r})", "format")
    kind, w, h = compressed_size(msg.data)
    check_size(w, h, max_side, f"{kind} header")
    buf = np.frombuffer(msg.data, np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # BGR; grey inputs are expanded
    except cv2.error as err:
        img = None
        kind = f"{kind}: {str(err).strip().splitlines()[-1]}"
    if img is None:
        raise InputError(f"corrupt compressed image ({kind}, {len(buf)} bytes): cannot be "
                         "decoded", "corrupt")
    if img.shape[:2] not in ((h, w), (w, h)):  # (w, h): a JPEG turned by its EXIF orientation
        raise InputError(f"corrupt compressed image ({kind}): decoded to {img.shape[1]}x"
                         f"{img.shape[0]}, its header says {w}x{h}", "corrupt")
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


def prompt_from_request(req, frame_shape: tuple[int, int]) -> Prompt:
    """An AddPrompt request for a frame of (H, W) pixels -> the engine's Prompt
    (engine/prompts.py), pixel arrays: points (N, 2) float32, labels (N,) int32, box (4,)
    float32, mask (H, W) bool. InputError says why not. Only the message's structure is
    checked here (sizes first, before anything is converted); the values (inside the frame,
    finite, labels 1/0, box order, mask xor clicks) are the engine's ``check_prompt``'s."""
    h, w = frame_shape
    check_prompt_size(req)
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


MASK_ROW_PADDING = 64  # bytes a mask prompt's row may carry beyond its width (alignment)


def check_prompt_size(req) -> None:
    """Refuse a request with more clicks than a prompt may have, or a mask prompt larger than
    an image may be: the cheap checks, made before anything is converted or queued."""
    n = max(len(req.points_x), len(req.points_y), len(req.labels))
    if n > MAX_POINTS:
        raise InputError(f"too many clicks: {n} in one prompt, at most {MAX_POINTS} (refine "
                         "with a few clicks at a time, or give a box or a mask)", "too_many_clicks")
    m = req.mask
    if m.width or m.height or len(m.data):
        w, h = int(m.width), int(m.height)
        check_size(w, h, MAX_SIDE, "mask prompt")
        limit = h * (w + MASK_ROW_PADDING)
        if len(m.data) > limit or int(m.step) > w + MASK_ROW_PADDING:
            raise InputError(f"mask prompt too large: {len(m.data)} bytes, step {m.step} for a "
                             f"{w}x{h} mono8 mask (expected height*step bytes with step <= "
                             f"width + {MASK_ROW_PADDING})", "mask_size")


def _mask(msg, w: int, h: int) -> np.ndarray:
    if msg.encoding not in ("mono8", "8UC1"):
        raise InputError(f"mask prompt must be mono8 (non-zero = object), got "
                         f"{msg.encoding[:32]!r}", "mask")
    if (msg.width, msg.height) != (w, h):
        raise InputError(f"mask prompt is {msg.width}x{msg.height}, the frame is {w}x{h}", "mask")
    mask = image_to_rgb(msg)[..., 0] > 0
    if not mask.any():
        raise InputError("mask prompt is empty (no non-zero pixel)")
    return mask


# ------------------------------------------------------------------- per-object mask patches
def fill_track_mask(track, mask: np.ndarray, box: tuple[int, int, int, int] | None) -> None:
    """Set an ObjectTrack's ``mask`` (mono8 255/0 cropped to ``box``, inclusive pixel bounds
    (x0, y0, x1, y1) of ``mask``), its offset and its float ``box`` (pixel edges)."""
    if box is None:
        return
    x0, y0, x1, y1 = box
    fill_image(track.mask, mask[y0:y1 + 1, x0:x1 + 1].astype(np.uint8) * 255, "mono8")
    track.mask_x_offset, track.mask_y_offset = int(x0), int(y0)
    track.box = [float(x0), float(y0), float(x1 + 1), float(y1 + 1)]


def masks_from_tracks(tracks) -> dict[int, np.ndarray]:
    """Every object's full (image_height, image_width) bool mask, from one Tracks message
    alone; an object with an empty mask gets an all-False mask. InputError if a patch does not
    fit the image (a message from another producer, or damaged)."""
    h, w = int(tracks.image_height), int(tracks.image_width)
    out: dict[int, np.ndarray] = {}
    for obj in tracks.objects:
        full = np.zeros((h, w), bool)
        m = obj.mask
        if m.width and m.height:
            if m.encoding not in ("mono8", "8UC1"):
                raise InputError(f"object {obj.object_id}: mask patch must be mono8, got "
                                 f"{m.encoding[:32]!r}", "mask")
            x0, y0 = int(obj.mask_x_offset), int(obj.mask_y_offset)
            if x0 + m.width > w or y0 + m.height > h:
                raise InputError(f"object {obj.object_id}: mask patch {m.width}x{m.height} at "
                                 f"({x0}, {y0}) does not fit the {w}x{h} image", "mask")
            full[y0:y0 + m.height, x0:x0 + m.width] = image_to_rgb(m)[..., 0] > 0
        out[int(obj.object_id)] = full
    return out
