"""Seeded synthetic camera scenes with exact ground-truth masks.

Textured objects (ellipses, boxes, polygons, stars) move, rotate and scale over a textured,
slowly panning background under changing light; objects occlude each other and may leave the
frame and come back. Each frame comes with one visible-pixel mask per object, computed from
exactly what was drawn (later objects hide earlier ones).

    scene = Scene(width=320, height=240, num_objects=3, seed=7)
    for frame, masks in scene.frames(60): ...   # frame (H, W, 3) uint8 RGB; masks {id: (H, W) bool}
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("ellipse", "box", "polygon", "star")


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A (h, w, 3) float texture around colour ``base``: stripes, checks or smooth noise."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes at a random angle
        a, period = rng.uniform(0, math.pi), rng.uniform(6, 16)
        pattern = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period)
    elif kind == 1:  # checks
        cell = int(rng.integers(5, 12))
        pattern = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
    else:  # smooth noise
        small = rng.standard_normal((max(h // 8, 2), max(w // 8, 2))).astype(np.float32)
        pattern = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    contrast = rng.uniform(20, 50)
    return np.clip(base[None, None, :] + contrast * pattern[..., None], 0, 255)


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) uint8 silhouette of the given kind, centred."""
    m = np.zeros((size, size), np.uint8)
    c, r = size // 2, size // 2 - 1
    if kind == "ellipse":
        cv2.ellipse(m, (c, c), (r, int(r * rng.uniform(0.5, 1.0))), 0, 0, 360, 1, -1)
    elif kind == "box":
        h = int(r * rng.uniform(0.5, 1.0))
        cv2.rectangle(m, (c - r, c - h), (c + r, c + h), 1, -1)
    else:
        n = int(rng.integers(5, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n)) if kind == "polygon" else \
            np.linspace(0, 2 * math.pi, 2 * n, endpoint=False)
        radii = rng.uniform(0.6, 1.0, n) * r if kind == "polygon" else \
            np.where(np.arange(2 * n) % 2 == 0, r, r * 0.45)
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1)
        cv2.fillPoly(m, [pts.astype(np.int32)], 1)
    return m


@dataclass
class SceneObject:
    """One object: its appearance and its motion (position in pixels, angle in degrees)."""

    obj_id: int
    sprite: np.ndarray  # (s, s, 3) float texture
    silhouette: np.ndarray  # (s, s) uint8
    pos: np.ndarray  # (2,) centre x, y
    vel: np.ndarray  # (2,) pixels per frame
    angle: float
    spin: float  # degrees per frame
    scale: float
    scale_rate: float  # relative change per frame (oscillating)
    bounce: bool  # bounce off the borders, or fly out and wrap around (exit and re-entry)


class Scene:
    """A reproducible scene: same seed, same frames and masks."""

    def __init__(self, width: int = 320, height: int = 240, num_objects: int = 3, seed: int = 0,
                 object_size: tuple[int, int] = (40, 80), exits: bool = False,
                 lighting: bool = True) -> None:
        self.width, self.height, self.seed = width, height, seed
        self.lighting = lighting
        rng = np.random.default_rng(seed)
        self._rng = rng
        pad = 64
        self.background = _texture(rng, height + pad, width + pad, rng.uniform(60, 190, 3))
        self.pan = rng.uniform(-0.5, 0.5, 2)
        self.objects = [self._make_object(i + 1, rng, object_size, exits) for i in range(num_objects)]

    def _make_object(self, obj_id: int, rng, size_range, exits: bool) -> SceneObject:
        size = int(rng.integers(*size_range))
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        sil = _shape_mask(kind, size, rng)
        sprite = _texture(rng, size, size, rng.uniform(0, 255, 3))
        speed = rng.uniform(1.0, 4.0)
        heading = rng.uniform(0, 2 * math.pi)
        margin = size
        pos = np.array([rng.uniform(margin, self.width - margin),
                        rng.uniform(margin, self.height - margin)])
        return SceneObject(obj_id, sprite, sil, pos,
                           speed * np.array([math.cos(heading), math.sin(heading)]),
                           rng.uniform(0, 360), rng.uniform(-4, 4), 1.0,
                           rng.uniform(0.005, 0.02), bounce=not exits)

    def _step(self, obj: SceneObject, t: int) -> None:
        obj.pos = obj.pos + obj.vel
        obj.angle += obj.spin
        obj.scale = 1.0 + 0.25 * math.sin(t * obj.scale_rate * 2 * math.pi)
        half = obj.silhouette.shape[0] * obj.scale / 2
        for axis, limit in ((0, self.width), (1, self.height)):
            if obj.bounce:
                if obj.pos[axis] < half or obj.pos[axis] > limit - half:
                    obj.vel[axis] = -obj.vel[axis]
                    obj.pos[axis] = min(max(obj.pos[axis], half), limit - half)
            elif obj.pos[axis] < -3 * half:
                obj.pos[axis] = limit + 2 * half
            elif obj.pos[axis] > limit + 3 * half:
                obj.pos[axis] = -2 * half

    def _warp(self, obj: SceneObject, image: np.ndarray, flags: int) -> np.ndarray:
        s = obj.silhouette.shape[0]
        rot = cv2.getRotationMatrix2D((s / 2, s / 2), obj.angle, obj.scale)
        rot[:, 2] += obj.pos - s / 2
        return cv2.warpAffine(image, rot, (self.width, self.height), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def render(self, t: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Draw frame t (objects must have been stepped to t): RGB uint8 and visible masks."""
        ox = int(16 + 16 * math.sin(t * 0.02 + self.pan[0]))
        oy = int(16 + 16 * math.cos(t * 0.015 + self.pan[1]))
        canvas = self.background[oy:oy + self.height, ox:ox + self.width].copy()
        owner = np.zeros((self.height, self.width), np.int32)
        for obj in self.objects:  # later objects are in front
            sil = self._warp(obj, obj.silhouette, cv2.INTER_NEAREST).astype(bool)
            sprite = self._warp(obj, obj.sprite.astype(np.float32), cv2.INTER_LINEAR)
            canvas[sil] = sprite[sil]
            owner[sil] = obj.obj_id
        if self.lighting:
            canvas = canvas * (1.0 + 0.2 * math.sin(t * 0.05))
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        return frame, {o.obj_id: owner == o.obj_id for o in self.objects}

    def frames(self, count: int):
        """Yield (frame, masks) for t = 0 .. count-1."""
        for t in range(count):
            if t:
                for obj in self.objects:
                    self._step(obj, t)
            yield self.render(t)


def click_inside(mask: np.ndarray) -> tuple[float, float] | None:
    """A click (x, y) deep inside ``mask``: the pixel farthest from its border, or None."""
    if not mask.any():
        return None
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)
