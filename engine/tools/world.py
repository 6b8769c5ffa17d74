"""A broad, domain-randomised synthetic world with exact visible-pixel masks.

``engine.tools.synthetic`` draws the project's original clips (ellipses, boxes and a few other
convex-ish shapes, gentle motion); its ``Scene`` and ``evaluation_set`` stay as they are, since
published figures depend on them. This module draws a much broader world for training and for
measuring generalisation:

* **shapes** (``SHAPE_FAMILIES``): the original seven plus non-convex and holed ones (rings,
  discs with holes, C, L, T, U shapes, crescents, stars with deep notches, frames, arrows) and
  thin elongated ones (bars, zigzags);
* **textures** (``TEXTURE_FAMILIES``), for object fills and for cluttered backgrounds (painted
  shapes, cables, a static copy of an object's silhouette): stripes, checks, smooth noise,
  gradients, dots, waves, marble, camouflage, wood, plaid, cells. All procedural: no
  photograph ships with this project's installed packages, and no dependency is added for one;
* **motion patterns** (``MOTION_PATTERNS``) of the objects: linear, curvy (Lissajous), orbit,
  random walk, jerky (sudden turns), spiral, stop-and-go; every object also rotates and
  changes scale (zoom towards and away from the camera);
* **phenomena** (``WORLD_PHENOMENA``):
  ``camera`` (pan, zoom and shake of the whole view),
  ``sensor`` (Gaussian noise, defocus and motion blur, JPEG artefacts),
  ``lighting`` (brightness ramps, a moving light gradient, colour casts, flicker, moving soft
  shadows),
  ``occluder`` (a panel or pole that crosses the object's path and moves on; it does not follow),
  ``exit`` (the object leaves through one border and re-enters through any border, anywhere),
  ``lookalike`` (a copy of the object, colour shifted a little, crosses it),
  ``interact`` (the other prompted objects cross the first one).

Object ids as in ``engine.tools.synthetic``: objects 1..n (the first ``prompted`` of them are
the targets), look-alikes 101.., occluders 201... Every frame comes with one mask per drawn
thing: exactly the pixels where it was drawn and not covered by something drawn later (holes
show what lies behind). Masks are geometric: camera, lighting and sensor effects change the
pixels' values (noise, blur across edges, JPEG) but not who owns a pixel.

Every random choice comes from the seed: the same arguments give the same frames and masks, and
``render(t)`` draws any frame directly (trajectories are computed for all frames up front), in
any order.

**Training and held out.** ``HELD_OUT_SHAPES``, ``HELD_OUT_TEXTURES`` and ``HELD_OUT_MOTIONS``
are whole families kept out of training; ``TRAIN_SHAPES``, ``TRAIN_TEXTURES`` and
``TRAIN_MOTIONS`` are the rest. The trainer's one entry point is::

    scene = sample_training_scene(rng, width=320, height=240, num_frames=8)
    for frame, masks in scene.frames(8): ...   # (H, W, 3) uint8 RGB; {id: (H, W) bool}
    frame, masks = scene.render(5)              # or any frame directly
    scene.targets                               # prompted object ids, e.g. (1, 2)
    scene.events                                # scripted events: kind, target, start, end

It draws training families only (backgrounds and clutter too), random phenomena, and a seed
from the training range (``TRAIN_SEED_BASE`` and up). In a scene without ``event_every`` each
scripted event it has happens once, around frames num_frames/5 .. 3*num_frames/5; an exit needs
about 20+ frames to fit (it is left out when it does not), crossings fit in 8. For long streams
pass ``event_every`` (one event every that many frames, about).

``held_out_set`` and ``long_streams`` (the generalisation benchmark,
``engine.benchmarks.quality``) draw held-out families only, from seeds far below it;
``check_held_out`` raises if a scene uses a held-out family where it should not.

Cost: rendering a 320x240 frame takes about 1-3 ms with every phenomenon on, building a scene
(textures, trajectories) 5-25 ms (``python -m engine.tools.world --bench``;
engine/benchmarks/results/quality.md has the measured figures).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .synthetic import DISTRACTOR_ID0, OCCLUDER_ID0, TRAIN_SEED_BASE, _shape_mask

SHAPE_FAMILIES = ("ellipse", "box", "polygon", "star", "blob", "cross", "triangle",  # original
                  "ring", "holed_disc", "c_shape", "l_shape", "t_shape", "deep_star", "bar",
                  "crescent", "u_shape", "frame", "arrow", "zigzag")
TEXTURE_FAMILIES = ("stripes", "checks", "noise", "gradient", "dots", "waves", "marble", "camo",
                    "wood", "plaid", "cells")
MOTION_PATTERNS = ("linear", "curvy", "orbit", "random_walk", "jerky", "spiral", "stop_go")
WORLD_PHENOMENA = ("camera", "sensor", "lighting", "occluder", "exit", "lookalike", "interact")
EVENT_KINDS = ("occluder", "exit", "lookalike", "interact")  # scripted around a time

# Whole families kept out of training; the held-out benchmark uses only these.
HELD_OUT_SHAPES = ("crescent", "u_shape", "frame", "arrow", "zigzag")
HELD_OUT_TEXTURES = ("wood", "plaid", "cells")
HELD_OUT_MOTIONS = ("spiral", "stop_go")
TRAIN_SHAPES = tuple(s for s in SHAPE_FAMILIES if s not in HELD_OUT_SHAPES)
TRAIN_TEXTURES = tuple(s for s in TEXTURE_FAMILIES if s not in HELD_OUT_TEXTURES)
TRAIN_MOTIONS = tuple(s for s in MOTION_PATTERNS if s not in HELD_OUT_MOTIONS)

# Chance that sample_training_scene switches each phenomenon on.
TRAINING_PHENOMENON_RATE = {"camera": 0.4, "sensor": 0.4, "lighting": 0.5, "occluder": 0.3,
                            "exit": 0.3, "lookalike": 0.35, "interact": 0.35}
HELD_OUT_SEED_BASE = 50_000_000  # held-out clips and long streams: far below TRAIN_SEED_BASE
EXIT_RAMP = (6, 12)  # frames an exit takes to leave the frame (and to come back in)


# ------------------------------------------------------------------------------ shapes
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the centre of a (size, size) square."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx - c, yy - c


def shape_silhouette(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) uint8 0/1 silhouette of family ``kind``, centred in the square."""
    if kind in ("ellipse", "box", "polygon", "star", "blob", "cross", "triangle"):
        return _shape_mask(kind, size, rng)
    if kind not in SHAPE_FAMILIES:
        raise ValueError(f"unknown shape family {kind!r}; known: {', '.join(SHAPE_FAMILIES)}")
    x, y = _grid(size)
    r = size / 2 - 1
    rad = np.hypot(x, y)
    if kind == "ring":
        squash = rng.uniform(0.7, 1.0)
        rr = np.hypot(x, y / squash)
        m = (rr <= r) & (rr >= r * rng.uniform(0.45, 0.72))
    elif kind == "holed_disc":
        m = rad <= r
        for _ in range(int(rng.integers(2, 5))):
            hr = r * rng.uniform(0.12, 0.24)
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, r - hr - 2)
            m &= np.hypot(x - d * math.cos(a), y - d * math.sin(a)) > hr
    elif kind == "c_shape":
        gap = rng.uniform(0.5, 1.2)  # half-angle of the opening, radians
        m = (rad <= r) & (rad >= r * rng.uniform(0.4, 0.65))
        m &= np.abs(np.arctan2(y, x)) > gap
    elif kind in ("l_shape", "t_shape", "u_shape", "frame"):
        t = r * rng.uniform(0.25, 0.45)  # arm thickness
        box = (np.abs(x) <= r * 0.85) & (np.abs(y) <= r * 0.85)
        if kind == "l_shape":
            m = box & ((x <= -r * 0.85 + t) | (y >= r * 0.85 - t))
        elif kind == "t_shape":
            m = box & ((y <= -r * 0.85 + t) | (np.abs(x) <= t / 2))
        elif kind == "u_shape":
            m = box & ((np.abs(x) >= r * 0.85 - t) | (y >= r * 0.85 - t))
        else:  # frame: a square with a square hole
            m = box & ((np.abs(x) >= r * 0.85 - t * 0.7) | (np.abs(y) >= r * 0.85 - t * 0.7))
    elif kind == "deep_star":
        n = int(rng.integers(4, 9))
        inner = rng.uniform(0.15, 0.32)
        phase = (np.arctan2(y, x) + rng.uniform(0, 2 * math.pi)) * n / (2 * math.pi)
        tri = np.abs(2 * (phase - np.floor(phase)) - 1)  # 1 at a tip, 0 in a notch
        m = rad <= r * (inner + (1 - inner) * tri)
    elif kind == "bar":
        w = max(r * rng.uniform(0.08, 0.22), min(2.5, size / 10))  # at least ~5 px wide
        m = (np.abs(x) <= r * 0.95) & (np.abs(y) <= w)
    elif kind == "crescent":
        off = r * rng.uniform(0.3, 0.6)
        m = (rad <= r) & (np.hypot(x - off, y) > r * rng.uniform(0.7, 0.95))
    elif kind == "arrow":
        shaft = r * rng.uniform(0.15, 0.3)
        head = rng.uniform(-0.1, 0.3) * r
        m = ((x <= head) & (x >= -r * 0.95) & (np.abs(y) <= shaft))
        m |= (x >= head) & (x <= r * 0.95) & (np.abs(y) <= (r * 0.95 - x) * rng.uniform(0.7, 1.1))
    else:  # zigzag: a thick polyline across the square
        k = int(rng.integers(3, 6))
        xs = np.linspace(-r * 0.85, r * 0.85, k + 1)
        ys = np.where(np.arange(k + 1) % 2 == 0, -1, 1) * r * rng.uniform(0.3, 0.6)
        pts = np.stack([xs + (size - 1) / 2, ys + (size - 1) / 2], 1)
        m8 = np.zeros((size, size), np.uint8)
        cv2.polylines(m8, [np.round(pts).astype(np.int32)], False, 1,
                      thickness=max(int(r * rng.uniform(0.15, 0.3)), min(5, size // 5)))
        return m8
    return m.astype(np.uint8)


# ----------------------------------------------------------------------------- textures
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 smooth noise in about [-1, 1] with features of about ``cell`` pixels."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _rotated(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, math.pi)
    ca, sa = math.cos(a), math.sin(a)
    return xx * ca + yy * sa, -xx * sa + yy * ca


def _pattern(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 pattern in [0, 1] of texture family ``kind``; 'camo' and 'cells' give
    integer levels (0, 1, 2, ...) meant for a palette instead."""
    if kind == "stripes":
        u, _ = _rotated(rng, h, w)
        p = 0.5 + 0.5 * np.sin(u * 2 * math.pi / rng.uniform(4, 20))
        return (p > 0.5).astype(np.float32) if rng.random() < 0.5 else p
    if kind == "checks":
        u, v = _rotated(rng, h, w)
        cell = rng.uniform(4, 16)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "noise":
        p = sum(_smooth_noise(rng, h, w, cell) * amp
                for cell, amp in ((rng.uniform(12, 40), 1.0), (rng.uniform(3, 8), 0.5)))
        return np.clip(0.5 + 0.3 * p, 0, 1)
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if rng.random() < 0.5:
            u, _ = _rotated(rng, h, w)
        else:
            u = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
        return (u - u.min()) / (np.ptp(u) + 1e-6)
    if kind == "dots":
        u, v = _rotated(rng, h, w)
        period = rng.uniform(5, 16)
        d = np.hypot((u % period) - period / 2, (v % period) - period / 2)
        return (d < period * rng.uniform(0.15, 0.4)).astype(np.float32)
    if kind == "waves":
        u, v = _rotated(rng, h, w)
        p = np.sin(u * 2 * math.pi / rng.uniform(6, 20)
                   + rng.uniform(1, 4) * np.sin(v * 2 * math.pi / rng.uniform(15, 50)))
        return 0.5 + 0.5 * p
    if kind == "marble":
        u, _ = _rotated(rng, h, w)
        turb = _smooth_noise(rng, h, w, rng.uniform(10, 30)) * rng.uniform(2, 6)
        return 0.5 + 0.5 * np.sin(u * 2 * math.pi / rng.uniform(10, 30) + turb)
    if kind == "camo":
        p = _smooth_noise(rng, h, w, rng.uniform(8, 25))
        return np.digitize(p, np.quantile(p[::4, ::4], [0.33, 0.66])).astype(np.float32)
    if kind == "wood":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        stretch = rng.uniform(0.2, 0.6)  # rings elongated along the grain
        rr = np.hypot(xx - cx, (yy - cy) * stretch)
        grain = _smooth_noise(rng, h, w, rng.uniform(6, 14)) * rng.uniform(0.5, 1.5)
        ring = (rr / rng.uniform(3, 9) + grain) % 1.0
        return np.clip(ring ** rng.uniform(0.5, 2.0), 0, 1)
    if kind == "plaid":  # handled by _texture (two stripe sets in two colours)
        raise AssertionError("plaid is coloured in _texture")
    if kind == "cells":  # Voronoi cells, computed at half resolution
        hs, ws = max(1, h // 2), max(1, w // 2)
        n = int(rng.integers(6, 30))
        px, py = rng.uniform(0, ws, n), rng.uniform(0, hs, n)
        yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
        d = (xx[None] - px[:, None, None]) ** 2 + (yy[None] - py[:, None, None]) ** 2
        label = np.argmin(d, axis=0).astype(np.float32)
        return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    raise ValueError(f"unknown texture family {kind!r}; known: {', '.join(TEXTURE_FAMILIES)}")


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` RGB colours; sometimes close to each other (low contrast)."""
    base = rng.uniform(0, 255, 3)
    spread = rng.choice([25.0, 70.0, 140.0])
    return np.clip(base + rng.uniform(-spread, spread, (n, 3)), 0, 255).astype(np.float32)


def make_texture(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w, 3) uint8 texture of family ``kind`` in random colours."""
    if kind == "plaid":
        c = _colours(rng, 3)
        a, b = (_pattern("stripes", rng, h, w)[..., None] for _ in range(2))
        out = c[0] * (1 - a) * (1 - b) + c[1] * a * (1 - b) + c[2] * b
    elif kind in ("camo", "cells"):
        level = _pattern(kind, rng, h, w).astype(np.int64)
        palette = _colours(rng, int(level.max()) + 1)
        out = palette[level]
        if kind == "cells":  # dark seams between cells
            edge = cv2.morphologyEx(level.astype(np.float32), cv2.MORPH_GRADIENT,
                                    np.ones((3, 3), np.uint8)) > 0
            out[edge] *= rng.uniform(0.3, 0.8)
    else:
        p = _pattern(kind, rng, h, w).astype(np.float32)
        c = _colours(rng, 2)
        out = cv2.merge([c[0, i] + (c[1, i] - c[0, i]) * p for i in range(3)])
        return out.astype(np.uint8)  # a mix of two colours: already within 0..255
    return np.clip(out, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- motion
def _pattern_path(kind: str, rng: np.random.Generator, n: int, speed: float,
                  scale: float) -> np.ndarray:
    """(n, 2) displacement from the start (row 0 is 0) of motion pattern ``kind``; ``speed`` in
    pixels per frame, ``scale`` the frame's size (for the extent of curvy paths)."""
    t = np.arange(n, dtype=np.float64)
    if kind == "linear":
        h = rng.uniform(0, 2 * math.pi)
        d = speed * t[:, None] * np.array([math.cos(h), math.sin(h)])
    elif kind in ("curvy", "orbit", "spiral"):
        amp = rng.uniform(0.15, 0.4) * scale * np.array([1.0, rng.uniform(0.5, 1.0)])
        w = speed / amp.mean() * rng.choice([-1, 1])
        ph = rng.uniform(0, 2 * math.pi)
        if kind == "curvy":  # Lissajous: two frequencies
            w2 = w * rng.uniform(1.3, 2.5)
            ph2 = rng.uniform(0, 2 * math.pi)
            d = np.stack([amp[0] * np.sin(w * t + ph), amp[1] * np.sin(w2 * t + ph2)], 1)
        else:
            rad = np.ones(n)
            if kind == "spiral":  # radius swells and shrinks: in and out of a whirl
                rad = 0.2 + 0.8 * (0.5 + 0.5 * np.sin(t * abs(w) * rng.uniform(0.15, 0.3)
                                                      + rng.uniform(0, 6.3)))
            d = np.stack([amp[0] * rad * np.cos(w * t + ph), amp[0] * rad * np.sin(w * t + ph)],
                         1)
    else:  # velocity-driven patterns
        if kind == "random_walk":
            v = np.cumsum(rng.standard_normal((n + 24, 2)) * 0.6, 0)
            k = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
            v = np.stack([np.convolve(v[:, a], k / k.sum(), "valid") for a in range(2)], 1)[:n]
            v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6) * speed
        elif kind == "jerky":  # straight runs with sudden turns
            v = np.zeros((n, 2))
            i = 0
            while i < n:
                run = int(rng.integers(5, 20))
                h = rng.uniform(0, 2 * math.pi)
                v[i:i + run] = speed * rng.uniform(0.7, 1.5) * np.array([math.cos(h), math.sin(h)])
                i += run
        elif kind == "stop_go":  # still, then a fast dash in a new direction, and again
            v = np.zeros((n, 2))
            i = int(rng.integers(0, 10))
            while i < n:
                run = int(rng.integers(4, 14))
                h = rng.uniform(0, 2 * math.pi)
                v[i:i + run] = speed * rng.uniform(1.5, 3.0) * np.array([math.cos(h), math.sin(h)])
                i += run + int(rng.integers(4, 20))
        else:
            raise ValueError(f"unknown motion pattern {kind!r}; known: "
                             f"{', '.join(MOTION_PATTERNS)}")
        d = np.concatenate([np.zeros((1, 2)), np.cumsum(v[:-1], 0)])
    return d - d[0]


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` into [lo, hi] as a ball bouncing between two walls."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


# ------------------------------------------------------------------------------ things
@dataclass(frozen=True)
class Event:
    """A scripted event on frames ``start .. end - 1``: ``kind`` (one of ``EVENT_KINDS``)
    happening to object ``target``; ``actor`` is the id of the thing that crosses it
    (occluder, look-alike or other object; 0 for an exit); ``at``: the frame it passes over
    the target's centre (-1 for an exit). Exits change the target's path on ``start .. end - 1``,
    crossings by a look-alike or another object the actor's path; such spans of one object never
    overlap, and nothing crosses an object while it is out of view."""

    kind: str
    target: int
    start: int
    end: int
    actor: int = 0
    at: int = -1


@dataclass
class Thing:
    """One drawn thing: appearance, family names and its per-frame pose (world coordinates)."""

    obj_id: int
    role: str  # object | lookalike | occluder
    shape: str
    texture: str
    motion: str
    sprite: np.ndarray  # (s, s, 3) uint8
    silhouette: np.ndarray  # (s, s) uint8
    pos: np.ndarray = field(repr=False, default=None)  # (n, 2) centre x, y
    angle: np.ndarray = field(repr=False, default=None)  # (n,) degrees
    scale: np.ndarray = field(repr=False, default=None)  # (n,)
    shown: np.ndarray = field(repr=False, default=None)  # (n,) bool: drawn at all

    @property
    def reach(self) -> float:
        """The farthest a drawn pixel gets from the centre, at scale 1."""
        s = self.silhouette.shape[0]
        ys, xs = np.nonzero(self.silhouette)
        return float(np.hypot(xs + 0.5 - s / 2, ys + 0.5 - s / 2).max()) + 1.0


def _check_pool(name: str, pool, known) -> tuple[str, ...]:
    pool = tuple(pool)
    unknown = [p for p in pool if p not in known]
    if not pool or unknown:
        raise ValueError(f"{name}: expected a non-empty subset of {', '.join(known)}, "
                         f"got {pool!r}")
    return pool


class WorldScene:
    """A reproducible scene of the broad world; see the module docstring.

    ``num_frames``: frames the trajectories are computed for (``render(t)`` needs
    0 <= t < num_frames). ``num_objects`` objects (ids 1..n), the first ``prompted`` of them
    targets. ``shapes``, ``textures``, ``motions``: the families to draw from (objects,
    background and clutter alike). ``phenomena``: names from ``WORLD_PHENOMENA``. Scripted
    events (``EVENT_KINDS`` among ``phenomena``) happen once each in a short scene, or one every
    ``event_every`` frames (kinds drawn at random) when that is given.
    """

    def __init__(self, width: int = 320, height: int = 240, num_frames: int = 48, seed: int = 0,
                 *, num_objects: int = 3, prompted: int = 1, shapes=TRAIN_SHAPES,
                 textures=TRAIN_TEXTURES, motions=TRAIN_MOTIONS, phenomena=(),
                 event_every: int | None = None, object_size: tuple[int, int] | None = None,
                 speed: tuple[float, float] = (1.0, 5.0), clutter: bool = True) -> None:
        if width < 32 or height < 32 or num_frames < 1:
            raise ValueError(f"need width, height >= 32 and num_frames >= 1, got {width}x"
                             f"{height}, {num_frames} frames")
        if not 1 <= prompted <= num_objects:
            raise ValueError(f"prompted must be 1..num_objects ({num_objects}), got {prompted}")
        self.shapes = _check_pool("shapes", shapes, SHAPE_FAMILIES)
        self.textures = _check_pool("textures", textures, TEXTURE_FAMILIES)
        self.motions = _check_pool("motions", motions, MOTION_PATTERNS)
        self.phenomena = tuple(p for p in WORLD_PHENOMENA if p in set(phenomena))
        unknown = set(phenomena) - set(WORLD_PHENOMENA)
        if unknown:
            raise ValueError(f"unknown phenomena {sorted(unknown)}; known: "
                             f"{', '.join(WORLD_PHENOMENA)}")
        self.width, self.height, self.num_frames, self.seed = width, height, num_frames, seed
        self.targets = tuple(range(1, prompted + 1))
        rng = np.random.default_rng([seed, 2026])
        unit = min(width, height) / 240
        if object_size is None:
            object_size = (max(12, int(36 * unit)), max(16, int(96 * unit)))
        self._object_size = object_size
        self._speed = speed
        n = num_frames
        self._camera = self._make_camera(rng, n)
        self.things: list[Thing] = [self._make_thing(rng, i + 1, "object")
                                    for i in range(num_objects)]
        for thing in self.things:
            self._free_motion(rng, thing, self._start_position(rng, thing))
        self.events = self._schedule(rng, event_every)
        self._make_background(rng, clutter)
        self._make_lighting(rng, n)
        self._make_sensor(rng, n)
        # drawing order: objects in a random depth order, look-alikes among them, occluders last
        movable = [t for t in self.things if t.role != "occluder"]
        order = rng.permutation(len(movable))
        self._draw = [movable[i] for i in order] + [t for t in self.things
                                                    if t.role == "occluder"]

    # ------------------------------------------------------------------ making
    def _make_thing(self, rng, obj_id: int, role: str) -> Thing:
        size = int(rng.integers(*self._object_size))
        shape = self.shapes[int(rng.integers(len(self.shapes)))]
        texture = self.textures[int(rng.integers(len(self.textures)))]
        motion = self.motions[int(rng.integers(len(self.motions)))]
        sil = shape_silhouette(shape, size, rng)
        if not sil.any():  # degenerate draw at a tiny size: fall back to a disc
            sil = shape_silhouette("ellipse", size, rng)
        sprite = make_texture(texture, rng, size, size)
        return Thing(obj_id, role, shape, texture, motion, sprite, sil)

    def _start_position(self, rng, thing: Thing) -> np.ndarray:
        r = min(thing.reach, self.width / 3, self.height / 3)
        return np.array([rng.uniform(r, self.width - r), rng.uniform(r, self.height - r)])

    def _bounds(self, thing: Thing) -> tuple[np.ndarray, np.ndarray]:
        """Where the centre may wander in free motion: up to 40% of the object outside."""
        m = min(0.6 * thing.reach, self.width / 4, self.height / 4)
        return np.array([m, m]), np.array([self.width - m, self.height - m])

    def _free_motion(self, rng, thing: Thing, start: np.ndarray) -> None:
        n = self.num_frames
        t = np.arange(n, dtype=np.float64)
        speed = rng.uniform(*self._speed) * min(self.width, self.height) / 240
        thing._path = _pattern_path(thing.motion, rng, n, speed, min(self.width, self.height))
        lo, hi = self._bounds(thing)
        thing.pos = np.stack([_reflect(start[a] + thing._path[:, a], lo[a], hi[a])
                              for a in range(2)], 1)
        spin = rng.uniform(-5, 5) if rng.random() < 0.7 else rng.uniform(-1, 1)
        thing.angle = rng.uniform(0, 360) + spin * t + rng.uniform(0, 20) * np.sin(
            t * rng.uniform(0.02, 0.1) + rng.uniform(0, 6.3))
        zoom = rng.uniform(0.05, 0.35)  # object moving towards / away from the camera
        log_s = zoom * (np.sin(t * rng.uniform(0.01, 0.06) + rng.uniform(0, 6.3)))
        thing.scale = np.exp(log_s - log_s[0])
        thing.shown = np.ones(n, bool)

    def _continue_free(self, thing: Thing, t0: int, p0: np.ndarray) -> None:
        """From frame ``t0`` on, free motion again (its own pattern) starting at ``p0``."""
        lo, hi = self._bounds(thing)
        d = thing._path[t0:] - thing._path[t0]
        thing.pos[t0:] = np.stack([_reflect(p0[a] + d[:, a], lo[a], hi[a]) for a in range(2)], 1)

    # ------------------------------------------------------------------ events
    def _schedule(self, rng, event_every: int | None) -> list[Event]:
        kinds = [k for k in EVENT_KINDS if k in self.phenomena]
        n = self.num_frames
        if not kinds:
            return []
        if event_every:
            times = np.arange(event_every // 2, n - 12, event_every)
            times = times + rng.integers(-event_every // 5, event_every // 5 + 1, len(times))
            plan = [(kinds[int(rng.integers(len(kinds)))], int(t)) for t in times]
        else:
            plan = [(k, int(rng.integers(max(1, n // 5), max(2, (3 * n) // 5))))
                    for k in rng.permutation(kinds)]
        events = []
        self._busy = {}  # object id -> first frame after its last scripted event
        for kind, t in sorted(plan, key=lambda p: p[1]):
            target = self.targets[int(rng.integers(len(self.targets)))]
            t = max(1, min(t, n - 2), self._busy.get(target, 0) + 2)
            if t >= n - 2:
                continue
            ev = getattr(self, f"_event_{kind}")(rng, target, t)
            if ev is not None:
                events.append(ev)
                busy = self._busy
                if kind == "exit":
                    busy[target] = ev.end
                else:
                    busy[target] = max(busy.get(target, 0), ev.at)
                if kind in ("interact", "lookalike"):
                    busy[ev.actor] = max(busy.get(ev.actor, 0), ev.end)
        return events

    def _event_exit(self, rng, target: int, start: int) -> Event | None:
        """Leave through the nearest border (in screen coordinates), stay out, come back in
        through a random border at a random place, then move freely again."""
        thing = self.things[target - 1]
        n = self.num_frames
        leave = int(rng.integers(*EXIT_RAMP))
        away = int(rng.integers(3, max(4, min(40, n // 5))))
        back = int(rng.integers(*EXIT_RAMP))
        end = start + leave + away + back
        if end >= n:
            return None
        reach = thing.reach * float(thing.scale[start:end + 1].max()) * self._zoom_max + 2
        p = self._to_screen(start, thing.pos[start])
        gaps = [p[0], self.width - p[0], p[1], self.height - p[1]]
        side = int(np.argmin(gaps))
        out = p.copy()
        out[side // 2] = -reach if side % 2 == 0 else (self.width, self.height)[side // 2] + reach
        entry_side = int(rng.integers(4))
        axis = entry_side // 2
        enter = np.array([rng.uniform(0, self.width), rng.uniform(0, self.height)])
        enter[axis] = -reach if entry_side % 2 == 0 else (self.width, self.height)[axis] + reach
        lo, hi = self._bounds(thing)
        r = min(thing.reach, self.width / 3, self.height / 3)
        dest = np.array([rng.uniform(r, self.width - r), rng.uniform(r, self.height - r)])
        for k in range(leave + 1):
            thing.pos[start + k] = self._to_world(start + k, p + (out - p) * k / leave)
        thing.shown[start + leave + 1:start + leave + away] = False
        for k in range(back + 1):
            tt = start + leave + away + k
            thing.pos[tt] = self._to_world(tt, enter + (dest - enter) * k / back)
        self._continue_free(thing, end, np.clip(thing.pos[end], lo, hi))
        return Event("exit", target, start, end)

    def _crossing(self, rng, crosser: Thing, target: Thing, at: int) -> tuple[int, int] | None:
        """Make ``crosser`` move in a straight line through ``target``'s centre at frame ``at``,
        then freely again; returns the frames it is on that line."""
        n = self.num_frames
        speed = rng.uniform(2, 7) * min(self.width, self.height) / 240
        guess = max(0, at - 15)
        dist = float(np.linalg.norm(target.pos[at] - crosser.pos[guess]))
        run = int(np.clip(dist / speed, 4, 40))
        t0 = max(0, at - run, self._busy.get(crosser.obj_id, 0))  # after its last event
        t1 = min(n - 1, at + run)
        if t0 == at:
            return None
        aim = target.pos[at]
        v = (aim - crosser.pos[t0]) / (at - t0)
        lo, hi = self._bounds(crosser)
        k = np.arange(t1 - t0 + 1)[:, None]
        line = crosser.pos[t0] + v * k
        crosser.pos[t0:at + 1] = line[:at - t0 + 1]
        after = np.clip(aim, lo, hi) + v * (k[at - t0:] - (at - t0))
        crosser.pos[at:t1 + 1] = np.stack([_reflect(after[:, a], lo[a], hi[a])
                                          for a in range(2)], 1)
        crosser.shown[t0:t1 + 1] = True
        if t1 + 1 < n:
            self._continue_free(crosser, t1, crosser.pos[t1])
        return t0, t1 + 1

    def _event_interact(self, rng, target: int, at: int) -> Event | None:
        others = [t for t in self.things if t.role == "object" and t.obj_id != target
                  and self._busy.get(t.obj_id, -1000) < at - 20]
        if not others:
            return None
        prompted = [t for t in others if t.obj_id in self.targets]
        pool = prompted or others
        crosser = pool[int(rng.integers(len(pool)))]
        span = self._crossing(rng, crosser, self.things[target - 1], at)
        return None if span is None else Event("interact", target, *span, crosser.obj_id, at)

    def _event_lookalike(self, rng, target: int, at: int) -> Event | None:
        model = self.things[target - 1]
        k = sum(t.role == "lookalike" for t in self.things)
        shift = rng.uniform(-1, 1, 3)
        shift = shift / (np.linalg.norm(shift) + 1e-6) * rng.uniform(15, 50)
        twin = Thing(DISTRACTOR_ID0 + k, "lookalike", model.shape, model.texture,
                     self.motions[int(rng.integers(len(self.motions)))],
                     np.clip(model.sprite + shift, 0, 255).astype(np.uint8),
                     model.silhouette.copy())
        self._free_motion(rng, twin, self._start_position(rng, twin))
        twin.scale = model.scale.copy()
        twin.angle = model.angle + rng.uniform(-60, 60)
        span = self._crossing(rng, twin, model, at)
        if span is None:
            return None
        self.things.append(twin)
        return Event("lookalike", target, *span, twin.obj_id, at)

    def _event_occluder(self, rng, target: int, at: int) -> Event | None:
        """A panel or a pole on a straight line across the whole view, over the target at
        frame ``at``; before and after it is out of sight."""
        model = self.things[target - 1]
        k = sum(t.role == "occluder" for t in self.things)
        reach = model.reach * float(model.scale[at])
        kind = rng.choice(["panel", "pole", "shape"])
        if kind == "panel":  # wide enough to hide the target completely
            size = int(2 * reach * rng.uniform(1.1, 1.6)) + 4
            sil = np.zeros((size, size), np.uint8)
            sil[1:-1, 1:-1] = 1
        elif kind == "pole":  # a long thin bar: hides a stripe of it
            size = int(max(self.width, self.height) * 0.9)
            sil = np.zeros((size, size), np.uint8)
            half = max(2, int(reach * rng.uniform(0.2, 0.6)))
            sil[:, size // 2 - half:size // 2 + half] = 1
        else:
            size = int(2 * reach * rng.uniform(1.0, 1.8)) + 4
            sil = shape_silhouette(self.shapes[int(rng.integers(len(self.shapes)))], size, rng)
        texture = self.textures[int(rng.integers(len(self.textures)))]
        panel = Thing(OCCLUDER_ID0 + k, "occluder", str(kind), texture, "linear",
                      make_texture(texture, rng, size, size), sil)
        n = self.num_frames
        speed = rng.uniform(4, 12) * min(self.width, self.height) / 240
        heading = rng.uniform(0, 2 * math.pi)
        v = speed * np.array([math.cos(heading), math.sin(heading)])
        t = np.arange(n, dtype=np.float64)
        panel.pos = model.pos[at] + v * (t - at)[:, None]
        panel.angle = np.full(n, rng.uniform(0, 180) if kind != "panel" else 0.0)
        panel.scale = np.ones(n)
        # drawn only while it can be in view (its centre within a frame-size margin)
        span = panel.reach + max(self.width, self.height)
        c = np.array([self.width / 2, self.height / 2])
        panel.shown = np.linalg.norm(panel.pos - c, axis=1) < span
        self.things.append(panel)
        on = np.flatnonzero(panel.shown)
        return Event("occluder", target, int(on[0]), int(on[-1]) + 1, panel.obj_id, at)

    # ------------------------------------------------------------------ camera
    def _make_camera(self, rng, n: int) -> np.ndarray:
        """(n, 2, 3) world -> screen affine maps. Identity on frame 0; with 'camera', a pan
        (drift or sway), a zoom in and out and some shake."""
        cams = np.zeros((n, 2, 3))
        cams[:, 0, 0] = cams[:, 1, 1] = 1.0
        self._zoom_max = 1.0
        self._view_margin = np.array([4.0, 4.0])
        if "camera" not in self.phenomena:
            return cams
        t = np.arange(n, dtype=np.float64)
        unit = min(self.width, self.height) / 240
        if rng.random() < 0.5:  # sway
            amp = rng.uniform(10, 45, 2) * unit
            pan = amp * (np.sin(t[:, None] * rng.uniform(0.01, 0.05, 2) + rng.uniform(0, 6.3, 2)))
        else:  # drift, turning back and forth
            pan = np.cumsum(np.tile(rng.uniform(-1, 1, 2), (n, 1)) * unit, 0)
            pan = _reflect(pan, -40 * unit, 40 * unit)
        pan -= pan[0]
        zoom = np.exp(rng.uniform(0.05, 0.3) * np.sin(t * rng.uniform(0.01, 0.05)
                                                      * rng.choice([-1, 1])))
        shake = rng.uniform(0, 3) * unit
        jitter = rng.standard_normal((n, 2)) * shake
        jitter[0] = 0
        roll = np.radians(rng.uniform(0, 1.5) * rng.standard_normal(n) + rng.uniform(-4, 4)
                          * np.sin(t * rng.uniform(0.005, 0.02)))
        roll -= roll[0]
        c = np.array([self.width / 2, self.height / 2])
        for i in range(n):  # screen = zoom * R(roll) (world - c - pan) + c + jitter
            co, si = math.cos(roll[i]) * zoom[i], math.sin(roll[i]) * zoom[i]
            a = np.array([[co, -si], [si, co]])
            cams[i, :, :2] = a
            cams[i, :, 2] = c + jitter[i] - a @ (c + pan[i])
        self._zoom_max = float(zoom.max())
        # how far beyond the frame the view reaches in world coordinates (for the background)
        half = np.array([self.width, self.height]) / 2
        extent = np.abs(pan).max(0) + half * math.sqrt(2) / zoom.min() - half
        self._view_margin = extent + np.abs(jitter).max() + 8
        return cams

    def _to_screen(self, t: int, p: np.ndarray) -> np.ndarray:
        return self._camera[t, :, :2] @ p + self._camera[t, :, 2]

    def _to_world(self, t: int, p: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self._camera[t, :, :2], p - self._camera[t, :, 2])

    # -------------------------------------------------------------- background
    def _make_background(self, rng, clutter: bool) -> None:
        mx, my = (int(math.ceil(m)) for m in self._view_margin)
        h, w = self.height + 2 * my, self.width + 2 * mx
        self._bg_origin = np.array([-mx, -my], float)  # world coordinates of pixel (0, 0)
        self.background_texture = self.textures[int(rng.integers(len(self.textures)))]
        bg = make_texture(self.background_texture, rng, h, w)
        if clutter:
            for _ in range(int(rng.integers(0, 7))):  # painted shapes: part of the background
                size = int(rng.integers(12, 60))
                sil = shape_silhouette(self.shapes[int(rng.integers(len(self.shapes)))], size,
                                       rng).astype(bool)
                paint = make_texture(self.textures[int(rng.integers(len(self.textures)))], rng,
                                     size, size)
                y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
                a = rng.uniform(0.5, 1.0)
                patch = bg[y:y + size, x:x + size]
                patch[sil] = (a * paint[sil] + (1 - a) * patch[sil]).astype(np.uint8)
            for _ in range(int(rng.integers(0, 4))):  # cables
                pts = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], 1)
                colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
                cv2.polylines(bg, [pts.astype(np.int32)], False, colour,
                              int(rng.integers(1, 6)))
            if rng.random() < 0.3:  # a static copy of an object's silhouette, painted on
                model = self.things[0]
                s = model.silhouette.shape[0]
                if s < min(h, w) - 2:
                    y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
                    sil = model.silhouette.astype(bool)
                    shift = rng.uniform(-40, 40, 3)
                    bg[y:y + s, x:x + s][sil] = np.clip(model.sprite[sil] + shift, 0, 255)
        self.background = bg

    # ------------------------------------------------------------- light, sensor
    def _make_lighting(self, rng, n: int) -> None:
        """Per-frame lighting: a gain map at 1/8 resolution and a colour, or None."""
        self._light = None
        if "lighting" not in self.phenomena:
            return
        t = np.arange(n, dtype=np.float64)
        ramp = np.exp(rng.uniform(-0.6, 0.4) * np.clip(
            (t - rng.uniform(0, n)) / max(1.0, rng.uniform(0.2, 1.0) * n), -1, 1))
        gain = ramp / ramp[0] * np.exp(rng.uniform(-0.2, 0.1))
        flicker_rate = rng.choice([0.0, 0.1, 0.3])
        flicker = np.where(rng.random(n) < flicker_rate, rng.uniform(0.7, 1.3, n), 1.0)
        gain = gain * flicker
        cast_amp = rng.uniform(0, 0.25, 3)
        cast = 1 + cast_amp * np.sin(t[:, None] * rng.uniform(0.005, 0.05, 3)
                                     + rng.uniform(0, 6.3, 3))
        if rng.random() < 0.3:  # a sudden change of light colour
            step = int(rng.integers(0, n))
            cast[step:] *= rng.uniform(0.75, 1.25, 3)
        hs, ws = max(2, self.height // 8), max(2, self.width // 8)
        yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float64)
        xx, yy = xx * self.width / ws, yy * self.height / hs
        tilt_a = rng.uniform(0, 2 * math.pi) + t * rng.uniform(-0.02, 0.02)
        tilt = rng.uniform(0, 0.5)
        shadows = []
        for _ in range(int(rng.integers(0, 3))):  # soft shadows moving across the view
            start = np.array([rng.uniform(-0.3, 1.3) * self.width,
                              rng.uniform(-0.3, 1.3) * self.height])
            vel = rng.uniform(-4, 4, 2)
            sig = rng.uniform(25, 90, 2)
            shadows.append((start, vel, sig, rng.uniform(0.3, 0.65)))
        self._light = (gain, cast, xx, yy, tilt, tilt_a, shadows)

    def _light_map(self, t: int) -> np.ndarray:
        gain, cast, xx, yy, tilt, tilt_a, shadows = self._light
        u = ((xx - self.width / 2) * math.cos(tilt_a[t]) + (yy - self.height / 2)
             * math.sin(tilt_a[t])) / max(self.width, self.height)
        g = gain[t] * (1 + tilt * u)
        for start, vel, sig, depth in shadows:
            c = start + vel * t
            g = g * (1 - depth * np.exp(-0.5 * (((xx - c[0]) / sig[0]) ** 2
                                               + ((yy - c[1]) / sig[1]) ** 2)))
        small = np.clip(g[..., None] * cast[t][None, None, :], 0.3, 1.6).astype(np.float32)
        return cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def _make_sensor(self, rng, n: int) -> None:
        """Noise, blur and JPEG settings per frame, or None."""
        self._sensor = None
        if "sensor" not in self.phenomena:
            return
        sigma = rng.uniform(0, 12) if rng.random() < 0.8 else 0.0
        pad = 16
        noise = None
        if sigma > 0.5:
            noise = (rng.standard_normal((self.height + pad, self.width + pad, 3),
                                         dtype=np.float32) * sigma).astype(np.int16)
        offsets = rng.integers(0, pad, (n, 2))
        t = np.arange(n, dtype=np.float64)
        defocus = np.clip(rng.uniform(-1.5, 2.5) + rng.uniform(0, 1.5) * np.sin(
            t * rng.uniform(0.02, 0.1) + rng.uniform(0, 6.3)), 0, 3)
        motion_len = np.where(rng.random(n) < rng.choice([0.0, 0.3, 0.7]),
                              rng.integers(3, 10, n), 0)
        motion_ang = rng.uniform(0, 180) + rng.uniform(-30, 30, n)
        quality = np.where(rng.random() < 0.7, rng.integers(8, 60, n), 0)  # 0: no JPEG
        self._sensor = (noise, offsets, defocus, motion_len, motion_ang, quality)

    def _apply_sensor(self, t: int, frame: np.ndarray) -> np.ndarray:
        noise, offsets, defocus, motion_len, motion_ang, quality = self._sensor
        if defocus[t] > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), float(defocus[t]))
        if motion_len[t]:
            k = int(motion_len[t])
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(motion_ang[t]), 1)
            kernel = cv2.warpAffine(kernel, rot, (k, k))
            frame = cv2.filter2D(frame, -1, kernel / max(kernel.sum(), 1e-6))
        if noise is not None:
            oy, ox = offsets[t]
            frame = cv2.add(frame, noise[oy:oy + self.height, ox:ox + self.width],
                            dtype=cv2.CV_8U)
        if quality[t]:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(quality[t])])
            frame = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return frame

    # ------------------------------------------------------------------ drawing
    def _pose(self, t: int, thing: Thing) -> np.ndarray:
        """The 2x3 map from sprite pixels to screen pixels on frame ``t``."""
        s = thing.silhouette.shape[0]
        rot = cv2.getRotationMatrix2D((s / 2, s / 2), float(thing.angle[t]),
                                      float(thing.scale[t]))
        rot[:, 2] += thing.pos[t] - s / 2
        cam = self._camera[t]
        out = cam[:, :2] @ rot
        out[:, 2] += cam[:, 2]
        return out

    def _warp_roi(self, t: int, thing: Thing):
        """(y0, y1, x0, x1, matrix) of the screen box the thing can cover, or None."""
        m = self._pose(t, thing)
        s = thing.silhouette.shape[0]
        corners = m[:, :2] @ np.array([[0, s, 0, s], [0, 0, s, s]], float) + m[:, 2:]
        x0, y0 = np.floor(corners.min(1)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(1)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        m = m.copy()
        m[:, 2] -= (x0, y0)
        return y0, y1, x0, x1, m

    def render(self, t: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Frame ``t``: (H, W, 3) uint8 RGB and {id: (H, W) bool visible pixels} for every
        thing in the scene (all False while it is out of view)."""
        if not 0 <= t < self.num_frames:
            raise ValueError(f"frame {t} outside 0..{self.num_frames - 1} of this scene")
        w, h = self.width, self.height
        cam = self._camera[t]
        if "camera" not in self.phenomena:  # a still camera: the identity on every frame
            ox, oy = (int(round(-v)) for v in self._bg_origin)
            canvas = self.background[oy:oy + h, ox:ox + w].copy()
        else:
            m = cam.copy()
            m[:, 2] += cam[:, :2] @ self._bg_origin
            canvas = cv2.warpAffine(self.background, m, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
        owner = np.zeros((h, w), np.uint8)
        boxes = {}
        for k, thing in enumerate(self._draw, start=1):
            if not thing.shown[t]:
                continue
            roi = self._warp_roi(t, thing)
            if roi is None:
                continue
            y0, y1, x0, x1, m = roi
            sil = cv2.warpAffine(thing.silhouette, m, (x1 - x0, y1 - y0),
                                 flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
            if not sil.any():
                continue
            sprite = cv2.warpAffine(thing.sprite, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            np.copyto(canvas[y0:y1, x0:x1], sprite, where=sil[..., None])
            np.copyto(owner[y0:y1, x0:x1], np.uint8(k), where=sil)
            boxes[k] = (y0, y1, x0, x1)
        masks = {}
        for k, thing in enumerate(self._draw, start=1):
            mask = np.zeros((h, w), bool)
            if k in boxes:
                y0, y1, x0, x1 = boxes[k]
                mask[y0:y1, x0:x1] = owner[y0:y1, x0:x1] == k
            masks[thing.obj_id] = mask
        frame = canvas
        if self._light is not None:
            frame = cv2.multiply(frame, self._light_map(t), dtype=cv2.CV_8U)
        if self._sensor is not None:
            frame = self._apply_sensor(t, frame)
        return frame, dict(sorted(masks.items()))

    def frames(self, count: int | None = None):
        """Yield (frame, masks) for t = 0 .. count-1 (default: every frame of the scene)."""
        count = self.num_frames if count is None else count
        if count > self.num_frames:
            raise ValueError(f"this scene has {self.num_frames} frames, asked for {count}")
        for t in range(count):
            yield self.render(t)

    # ------------------------------------------------------------------ queries
    def thing(self, obj_id: int) -> Thing:
        for thing in self.things:
            if thing.obj_id == obj_id:
                return thing
        raise KeyError(f"no object {obj_id} in this scene")

    def full_area(self, obj_id: int, t: int) -> int:
        """Pixels of ``obj_id`` inside the frame on frame ``t`` if nothing covered it."""
        thing = self.thing(obj_id)
        if not thing.shown[t]:
            return 0
        roi = self._warp_roi(t, thing)
        if roi is None:
            return 0
        y0, y1, x0, x1, m = roi
        return int(cv2.warpAffine(thing.silhouette, m, (x1 - x0, y1 - y0),
                                  flags=cv2.INTER_NEAREST, borderValue=0).sum())

    def families(self) -> dict[str, set[str]]:
        """Every shape, texture and motion family this scene uses (objects, look-alikes,
        occluders' textures, background and clutter are drawn from the same pools)."""
        things = self.things
        return {"shapes": {t.shape for t in things if t.role != "occluder"},
                "textures": {t.texture for t in things} | {self.background_texture},
                "motions": {t.motion for t in things if t.role != "occluder"}}


def check_held_out(scene: WorldScene, held_out: bool) -> None:
    """Raise unless every family ``scene`` draws from is held out (``held_out``) or none is."""
    pools = {"shapes": (scene.shapes, HELD_OUT_SHAPES),
             "textures": (scene.textures, HELD_OUT_TEXTURES),
             "motions": (scene.motions, HELD_OUT_MOTIONS)}
    for name, (pool, held) in pools.items():
        bad = [p for p in pool if (p in held) != held_out]
        if bad:
            raise ValueError(f"{name} {bad} are {'not ' if held_out else ''}held out")


# ---------------------------------------------------------------------------- training
def sample_training_scene(rng: np.random.Generator, width: int = 320, height: int = 240,
                          num_frames: int = 8, *, num_objects: int | None = None,
                          prompted: int | None = None, phenomena=None,
                          event_every: int | None = None) -> WorldScene:
    """A random scene for training: training families only, a seed from the training range
    (``TRAIN_SEED_BASE`` and up), and phenomena switched on at random
    (``TRAINING_PHENOMENON_RATE``) unless ``phenomena`` names them. ``num_objects`` (1-5) and
    ``prompted`` (1-3 targets) are drawn when not given. For long streams pass
    ``event_every`` (frames between scripted events)."""
    if num_objects is None:
        num_objects = int(rng.integers(1, 6))
    if prompted is None:
        prompted = int(rng.integers(1, min(3, num_objects) + 1))
    if phenomena is None:
        phenomena = [p for p in WORLD_PHENOMENA if rng.random() < TRAINING_PHENOMENON_RATE[p]]
    if "interact" in phenomena and num_objects < 2:
        num_objects = 2
    seed = TRAIN_SEED_BASE + int(rng.integers(1 << 40))
    return WorldScene(width, height, num_frames, seed, num_objects=num_objects,
                      prompted=min(prompted, num_objects), shapes=TRAIN_SHAPES,
                      textures=TRAIN_TEXTURES, motions=TRAIN_MOTIONS, phenomena=phenomena,
                      event_every=event_every)


# ---------------------------------------------------------------------------- held out
HELD_OUT_PHENOMENA = ("families", "camera", "sensor", "lighting", "occluder", "exit",
                      "lookalike", "interact")  # 'families': held-out families, nothing else


@dataclass(frozen=True)
class WorldClip:
    """One clip of the held-out benchmark: a world scene, its frames, its prompted targets."""

    name: str
    phenomenon: str
    seed: int
    num_frames: int
    scene_args: dict = field(default_factory=dict)

    def scene(self) -> WorldScene:
        return WorldScene(seed=self.seed, num_frames=self.num_frames, **self.scene_args)

    def frames(self):
        """Yield (frame, {id: mask}) for every frame."""
        yield from self.scene().frames()


HELD_OUT_ARGS = dict(shapes=HELD_OUT_SHAPES, textures=HELD_OUT_TEXTURES,
                     motions=HELD_OUT_MOTIONS)


def _clean_start(scene: WorldScene, min_area: int = 300, min_fraction: float = 0.85) -> bool:
    """Is every target well in view on frame 0 (big enough, hardly covered or cut)?"""
    _, masks = scene.render(0)
    for k in scene.targets:
        area = int(masks[k].sum())
        full = int(scene.thing(k).silhouette.sum())
        if area < max(min_area, min_fraction * full):
            return False
    return True


def _first_clean(name: str, phenomenon: str, base: int, num_frames: int, args: dict,
                 min_events: int = 0) -> WorldClip:
    for attempt in range(100):
        clip = WorldClip(name, phenomenon, base + attempt, num_frames, args)
        scene = clip.scene()
        if _clean_start(scene) and len(scene.events) >= min_events:
            return clip
    raise RuntimeError(f"no clean start for {name} in 100 seeds from {base}")


def held_out_set(per_phenomenon: int = 6, num_frames: int = 64, width: int = 320,
                 height: int = 240, split: int = 0) -> list[WorldClip]:
    """The held-out generalisation clips: ``per_phenomenon`` (1..99) of each of
    ``HELD_OUT_PHENOMENA``, held-out families only, fully determined by the arguments. 'interact'
    clips have 2-3 prompted targets, the others one. Each clip's seed is the first of
    ``HELD_OUT_SEED_BASE + split * 10**6 + k * 10**4 + i * 100 + attempt`` whose targets are
    well in view on frame 0 (and whose scripted event fits in the clip)."""
    if not 0 < per_phenomenon < 100:
        raise ValueError(f"per_phenomenon must be 1..99, got {per_phenomenon}")
    if num_frames < 24:
        raise ValueError(f"held-out clips need at least 24 frames, got {num_frames}")
    clips = []
    for k, phenomenon in enumerate(HELD_OUT_PHENOMENA):
        for i in range(per_phenomenon):
            rng = np.random.default_rng([split, k, i, 17])
            objects = int(rng.integers(2, 5))
            args = dict(width=width, height=height, num_objects=objects,
                        prompted=int(rng.integers(2, min(3, objects) + 1))
                        if phenomenon == "interact" else 1,
                        phenomena=() if phenomenon == "families" else (phenomenon,),
                        **HELD_OUT_ARGS)
            base = HELD_OUT_SEED_BASE + split * 1_000_000 + k * 10_000 + i * 100
            clips.append(_first_clean(f"{phenomenon}-{i:02d}", phenomenon, base, num_frames,
                                      args, int(phenomenon in EVENT_KINDS)))
    return clips


def long_streams(count: int = 4, num_frames: int = 600, event_every: int = 80,
                 width: int = 320, height: int = 240, split: int = 0) -> list[WorldClip]:
    """Long held-out streams: 2-3 prompted objects (of 3-4), held-out families, every
    phenomenon on, a scripted event every ``event_every`` frames (about)."""
    clips = []
    for i in range(count):
        rng = np.random.default_rng([split, i, 600])
        prompted = int(rng.integers(2, 4))
        args = dict(width=width, height=height, num_objects=prompted + int(rng.integers(0, 2)),
                    prompted=prompted, phenomena=WORLD_PHENOMENA, event_every=event_every,
                    **HELD_OUT_ARGS)
        base = HELD_OUT_SEED_BASE + 900_000 + split * 1_000_000 + i * 100
        clips.append(_first_clean(f"stream-{i:02d}", "long", base, num_frames, args))
    return clips


# ------------------------------------------------------------------------------- bench
def render_cost(repeats: int = 5, frames: int = 48, seed: int = 0) -> dict[str, float]:
    """Median ms per 320x240 frame (rendering only) and per scene (building), with every
    phenomenon on and with none: CPU time of this process, OpenCV on one thread (restored
    after), so that other load on a shared machine matters less than for wall time."""
    out = {}
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for label, phen in (("all phenomena", WORLD_PHENOMENA), ("no phenomena", ())):
            per_frame, per_scene = [], []
            for r in range(repeats):
                start = time.process_time()
                scene = WorldScene(320, 240, frames, seed + r, num_objects=3, prompted=2,
                                   phenomena=phen, event_every=16 if phen else None)
                built = time.process_time()
                for t in range(frames):
                    scene.render(t)
                done = time.process_time()
                per_scene.append((built - start) * 1e3)
                per_frame.append((done - built) * 1e3 / frames)
            out[f"{label}: per frame"] = float(np.median(per_frame))
            out[f"{label}: per scene build"] = float(np.median(per_scene))
    finally:
        cv2.setNumThreads(threads)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.tools.world",
                                description="Render cost of the broad synthetic world, or a "
                                "contact sheet of sample frames.")
    p.add_argument("--bench", action="store_true", help="print ms/frame and ms/scene")
    p.add_argument("--sheet", default=None, help="write a PNG of sample frames here")
    p.add_argument("--held-out", action="store_true", help="the sheet shows held-out clips")
    args = p.parse_args(argv)
    if args.bench:
        for k, v in render_cost().items():
            print(f"{k}: {v:.2f} ms")
    if args.sheet:
        if args.held_out:
            scenes = [c.scene() for c in held_out_set(1, 48)]
        else:
            rng = np.random.default_rng(0)
            scenes = [sample_training_scene(rng, num_frames=48) for _ in range(8)]
        rows = []
        for scene in scenes:
            tiles = []
            for t in (0, 20, 40):
                frame, masks = scene.render(t)
                edge = np.zeros(frame.shape[:2], bool)
                for k in scene.targets:
                    m = masks[k].astype(np.uint8)
                    edge |= cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
                tile = frame.copy()
                tile[edge] = (255, 0, 255)
                tiles.append(tile)
            rows.append(np.concatenate(tiles, 1))
        cv2.imwrite(args.sheet, np.concatenate(rows, 0)[..., ::-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
