"""Where each tracked object is in 3D: masks + an aligned depth image + pinhole intrinsics.

Pure numpy, no ROS. For one object and one frame (``locate_object``):

1. Only the mask's bounding box is read (the tracker gives it; else it is computed), and only
   its depth pixels are converted to metres (``depth * scale``; 0, negative and non-finite
   values are holes).
2. The object's depth ``z0`` is the median of the valid depths inside the mask eroded by
   ``erosion_px`` (a square of side 2 * erosion_px + 1): the mask's rim, where depth sensors
   bleed background into the object (and a tracker's mask overshoots), is left out. A mask too
   thin to survive the erosion uses all of its pixels.
3. Inliers: the mask's pixels with a valid depth within ``band`` of ``z0``, where band is the
   larger of ``band_m`` and 3 robust standard deviations (1.4826 x the median absolute deviation
   of the eroded depths, so a slanted or curved surface keeps all of its pixels).
4. Each inlier pixel (u, v) with depth z back-projects to the camera's optical frame
   (x right, y down, z forward): X = (u - cx) z / fx, Y = (v - cy) z / fy, Z = z.
   The centroid is the mean of the inlier points, the extent max - min per axis, and
   ``num_valid`` the number of inliers. For a flat patch with no rim bleed the centroid is the
   exact centroid of its visible surface samples (pixel centres).

A depth image of another size than the mask but the same aspect ratio (the same field of view
at another resolution, e.g. depth at half the colour resolution) is accepted: each depth pixel
takes the mask's value at its centre (nearest colour pixel), and the intrinsics are the depth
image's. Another aspect ratio is refused (ValueError).

With fewer than ``min_pixels`` inliers the object has no position (``has_position`` False,
NaN centroid and extent). Pixel (u, v) is the centre of column u, row v, as in ROS's
CameraInfo (K maps a point to the pixel whose centre it hits).

    intr = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5)
    pos = locate_object(depth_mm, 0.001, intr, mask)   # 16UC1 depth in millimetres
    pos.centroid, pos.extent, pos.num_valid
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # standard deviation of a normal distribution per median absolute deviation
MEDIAN_SAMPLES = 2048  # depth samples the median needs at most (a regular subsample beyond)
ASPECT_TOLERANCE = 0.01  # relative difference of the x and y scale factors of a resized depth


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the depth image (pixels). Raises ValueError when unusable."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"intrinsics must be finite numbers, got fx={self.fx}, "
                             f"fy={self.fy}, cx={self.cx}, cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be > 0 pixels, got fx={self.fx}, fy={self.fy} "
                             "(missing or zero camera intrinsics)")

    @classmethod
    def from_k(cls, k) -> "Intrinsics":
        """From a row-major 3x3 camera matrix (CameraInfo.k): fx=k[0], cx=k[2], fy=k[4],
        cy=k[5]."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise ValueError(f"camera matrix must have 9 values (row-major 3x3), got {len(k)}")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5])

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in the optical frame -> (N, 2) pixel coordinates u, v."""
        p = np.asarray(points, np.float64)
        return np.stack([self.fx * p[:, 0] / p[:, 2] + self.cx,
                         self.fy * p[:, 1] / p[:, 2] + self.cy], axis=1)


@dataclass(frozen=True)
class ObjectPosition:
    """One object's place in the depth camera's optical frame (metres)."""

    centroid: np.ndarray  # (3,) x, y, z; NaN when has_position is False
    extent: np.ndarray  # (3,) size along x, y, z (max - min of the inliers); NaN likewise
    num_valid: int  # mask pixels with a valid depth near the object's depth (the inliers)
    points: np.ndarray | None = None  # (N, 3) float32 inliers on a points_stride pixel grid

    @property
    def has_position(self) -> bool:
        return bool(np.isfinite(self.centroid).all())


def _unknown(num_valid: int, keep_points: bool) -> ObjectPosition:
    nan = np.full(3, np.nan)
    return ObjectPosition(nan, nan.copy(), num_valid,
                          np.zeros((0, 3), np.float32) if keep_points else None)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive pixel bounds (x0, y0, x1, y1) of a boolean mask, or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1) x (2r+1) square; pixels outside the array count as outside
    the mask. Separable: a horizontal then a vertical pass of shifted ANDs."""
    if radius <= 0:
        return mask
    h, w = mask.shape
    if h <= 2 * radius or w <= 2 * radius:
        return np.zeros_like(mask)
    rows = mask.copy()
    for k in range(1, radius + 1):
        rows[:, k:] &= mask[:, :-k]
        rows[:, :-k] &= mask[:, k:]
    rows[:, :radius] = False
    rows[:, -radius:] = False
    out = rows.copy()
    for k in range(1, radius + 1):
        out[k:] &= rows[:-k]
        out[:-k] &= rows[k:]
    out[:radius] = False
    out[-radius:] = False
    return out


def same_field_of_view(mask_hw: tuple[int, int], depth_hw: tuple[int, int]) -> bool:
    """Do images of these sizes (H, W) have the same aspect ratio (ASPECT_TOLERANCE)?"""
    sx, sy = mask_hw[1] / depth_hw[1], mask_hw[0] / depth_hw[0]
    return abs(sx - sy) <= ASPECT_TOLERANCE * max(sx, sy)


def resample_mask(mask: np.ndarray, box: tuple[int, int, int, int] | None,
                  shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """``mask`` (H, W) on the pixel grid of a depth image of ``shape`` (h, w) with the same
    field of view: depth pixel (u, v) takes mask pixel (floor((u + 0.5) W / w),
    floor((v + 0.5) H / h)). Returns the (h, w) mask and bounds on that grid containing it (or
    None when empty). ValueError when the aspect ratios differ."""
    (hc, wc), (hd, wd) = mask.shape, shape
    if not same_field_of_view((hc, wc), (hd, wd)):
        raise ValueError(f"depth is {wd}x{hd} but the mask is {wc}x{hc}, another aspect ratio; "
                         "the depth image must be aligned with the colour image: the same size, "
                         "or the same field of view at another resolution")
    out = np.zeros(shape, bool)
    box = mask_box(mask) if box is None else box
    if box is None:
        return out, None
    sx, sy = wc / wd, hc / hd
    x0, y0, x1, y1 = box  # the depth pixels whose centres fall in the box, and one more
    dx0, dx1 = max(0, math.floor(x0 / sx - 0.5)), min(wd - 1, math.ceil((x1 + 1) / sx))
    dy0, dy1 = max(0, math.floor(y0 / sy - 0.5)), min(hd - 1, math.ceil((y1 + 1) / sy))
    cols = np.minimum(((np.arange(dx0, dx1 + 1) + 0.5) * sx).astype(np.intp), wc - 1)
    rows = np.minimum(((np.arange(dy0, dy1 + 1) + 0.5) * sy).astype(np.intp), hc - 1)
    sub = mask[rows[:, None], cols[None, :]]
    if not sub.any():
        return out, None
    out[dy0:dy1 + 1, dx0:dx1 + 1] = sub
    return out, (dx0, dy0, dx1, dy1)


def _median(values: np.ndarray) -> float:
    """Median of a 1-D array (left unchanged)."""
    v = values.copy()
    mid = v.size // 2
    v.partition(mid)
    if v.size % 2:
        return float(v[mid])
    return float(0.5 * (v[mid] + v[:mid].max()))


def locate_object(depth: np.ndarray, scale: float, intrinsics: Intrinsics, mask: np.ndarray,
                  box: tuple[int, int, int, int] | None = None, *, erosion_px: int = 2,
                  band_m: float = 0.05, min_pixels: int = 10,
                  points_stride: int = 0) -> ObjectPosition:
    """The 3D centroid, extent and inlier count of the object under ``mask`` (see the module
    docstring for the method).

    depth: (H, W) depth image of any numeric dtype, aligned with ``mask`` (same size, or the
    same field of view at another resolution: see the module docstring);
    scale: metres per depth unit (0.001 for 16UC1 millimetres, 1.0 for 32FC1 metres);
    mask: bool; box: the mask's inclusive bounds (x0, y0, x1, y1) if known (or any box
    containing it);
    points_stride: when > 0, also return the inlier points on every stride-th image row and
    column.
    """
    keep = points_stride > 0
    if depth.shape != mask.shape:
        mask, box = resample_mask(mask, box, depth.shape)
    else:
        box = mask_box(mask) if box is None else box
    if box is None:
        return _unknown(0, keep)
    x0, y0, x1, y1 = (int(v) for v in box)
    m = mask[y0:y1 + 1, x0:x1 + 1]
    z = depth[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    if scale != 1.0:
        z *= np.float32(scale)
    valid = m & (z > 0)
    if depth.dtype.kind == "f":
        valid &= np.isfinite(z)  # NaN > 0 is False already; +inf is not
    z0, band = _depth_band(z, valid, erode(m, erosion_px) & valid, band_m)
    if z0 is None:
        return _unknown(0, keep)
    inl = valid & (np.abs(z - np.float32(z0)) <= np.float32(band))
    n = int(np.count_nonzero(inl))
    if n < max(min_pixels, 1):
        return _unknown(n, keep)
    # Sums over the inliers by rows and columns (no per-pixel gather):
    # x = (u - cx) z / fx, y = (v - cy) z / fy with u = x0 + column, v = y0 + row.
    zin = np.where(inl, z, np.float32(0))
    du = (np.arange(x0, x1 + 1) - intrinsics.cx) / intrinsics.fx
    dv = (np.arange(y0, y1 + 1) - intrinsics.cy) / intrinsics.fy
    col_sum, row_sum = zin.sum(axis=0, dtype=np.float64), zin.sum(axis=1, dtype=np.float64)
    centroid = np.array([col_sum @ du, row_sum @ dv, col_sum.sum()]) / n
    # Extent: for a fixed pixel column, x grows or shrinks with z (sign of du), so the extreme
    # x of a column is at its nearest or farthest inlier; likewise y by rows.
    far = np.where(inl, z, np.float32(-np.inf))
    near = np.where(inl, z, np.float32(np.inf))
    extent = np.array([_span(du, near.min(axis=0), far.max(axis=0)),
                       _span(dv, near.min(axis=1), far.max(axis=1)),
                       float(far.max() - near.min())])
    points = None
    if keep:
        s = points_stride  # every s-th image row and column: the same pixels every frame
        rows, cols = slice((-y0) % s, None, s), slice((-x0) % s, None, s)
        vs, us = np.nonzero(inl[rows, cols])
        zs = z[rows, cols][vs, us].astype(np.float64)
        points = np.stack([du[cols][us] * zs, dv[rows][vs] * zs, zs], axis=1).astype(np.float32)
    return ObjectPosition(centroid, extent, n, points)


def _depth_band(z: np.ndarray, valid: np.ndarray, inner: np.ndarray,
                band_m: float) -> tuple[float | None, float]:
    """The object's depth (median of the eroded mask's valid depths, of all valid ones when
    the erosion leaves none) and the inlier band around it; (None, 0) with no valid depth.
    Long sets are read on a regular grid of about MEDIAN_SAMPLES pixels."""
    for sel in (inner, valid):
        step = max(1, math.ceil(math.sqrt(sel.size / MEDIAN_SAMPLES)))
        core = z[::step, ::step][sel[::step, ::step]] if step > 1 else z[sel]
        if core.size == 0 and step > 1:
            core = z[sel]
        if core.size:
            z0 = _median(core)
            mad = _median(np.abs(core - np.float32(z0)))
            return z0, max(band_m, 3.0 * MAD_TO_SIGMA * mad)
    return None, 0.0


def _span(d: np.ndarray, near: np.ndarray, far: np.ndarray) -> float:
    """max - min of d[i] * z over columns (or rows) i whose inlier depths span [near, far]."""
    used = np.isfinite(near)
    d, near, far = d[used], near[used].astype(np.float64), far[used].astype(np.float64)
    lo = np.minimum(d * near, d * far)
    hi = np.maximum(d * near, d * far)
    return float(hi.max() - lo.min())


def locate_objects(depth: np.ndarray, scale: float, intrinsics: Intrinsics,
                   masks: dict[int, np.ndarray],
                   boxes: dict[int, tuple[int, int, int, int] | None] | None = None,
                   **options) -> dict[int, ObjectPosition]:
    """``locate_object`` for each object id of ``masks`` (boxes by the same ids, optional);
    ``options`` as there."""
    boxes = boxes or {}
    return {obj_id: locate_object(depth, scale, intrinsics, mask, boxes.get(obj_id), **options)
            for obj_id, mask in masks.items()}
