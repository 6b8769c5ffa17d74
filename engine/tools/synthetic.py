"""Seeded synthetic camera scenes with exact ground-truth masks.

Textured objects (ellipses, boxes, polygons, stars, blobs, crosses, triangles) move, rotate and
scale over a textured, cluttered, slowly panning background under changing light; objects
occlude each other and may leave the frame and come back. Each frame comes with one
visible-pixel mask per drawn object, computed from exactly what was drawn (later objects hide
earlier ones).

    scene = Scene(width=320, height=240, num_objects=3, seed=7)
    for frame, masks in scene.frames(60): ...   # frame (H, W, 3) uint8 RGB; masks {id: (H, W) bool}

Scripted phenomena, on top of free motion (ids: objects 1..n, distractors 101.., occluders 201..):

* ``distractors=k``: k look-alike copies of object 1 (same silhouette and texture, colour
  shifted a little), moving on their own;
* ``occlusions=(Occlusion(target, start, duration),)``: a panel slides over the target, hides
  it completely for ``duration`` frames from ``start``, then slides off;
* ``exit_schedule=(Exit(target, start, away),)``: from ``start`` the target heads out through
  the nearest border, stays out ``away`` frames, then comes back the way it left;
* ``exits=True``: every object flies out and wraps around to the opposite border.

Depth (``Scene.depth``, ``Scene.intrinsics``, ``Scene.true_positions``): an aligned depth image
with exact geometry, for the 3D outputs. A pinhole camera with a 60 degree horizontal field of
view looks at a slanted background plane (4 m at the top row, 3 m at the bottom); every object is
a flat patch facing the camera, the first drawn farthest (2.4 m) and each later one nearer (down
to 0.8 m), so drawing order and depth agree. Optional holes and edge bleed imitate depth sensors.
Depth draws on a random generator of its own: frames and masks are the same with or without it.

``evaluation_set`` lists the held-out clips of the tracking benchmark, one phenomenon each;
training (``engine.tools.train``) draws its scenes from a disjoint seed range (``TRAIN_SEED_BASE``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..depth import Intrinsics

SHAPES = ("ellipse", "box", "polygon", "star", "blob", "cross", "triangle")
TEXTURES = ("stripes", "checks", "noise", "dots", "gradient")
PHENOMENA = ("motion", "occlusion", "exit", "distractors")
DISTRACTOR_ID0, OCCLUDER_ID0 = 101, 201
TRAIN_SEED_BASE = 1 << 40  # training scenes use seeds >= this; evaluation clips stay far below
OCCLUDER_RAMP = 4  # frames an occluding panel takes to slide over its target (and off again)
EXIT_FRAMES = 8  # frames a scheduled exit takes to leave the frame (and to come back)
BACKGROUND_DEPTH = (4.0, 3.0)  # metres at the top and the bottom row: a slanted plane
OBJECT_DEPTH = (2.4, 0.8)  # metres: the first-drawn object, the last-drawn one
HORIZONTAL_FOV_DEG = 60.0


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A (h, w, 3) float texture around colour ``base``."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":  # at a random angle
        a, period = rng.uniform(0, math.pi), rng.uniform(6, 16)
        pattern = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period)
    elif kind == "checks":
        cell = int(rng.integers(5, 12))
        pattern = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
    elif kind == "noise":  # smooth noise
        small = rng.standard_normal((max(h // 8, 2), max(w // 8, 2))).astype(np.float32)
        pattern = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "dots":
        period = rng.uniform(7, 14)
        pattern = (np.cos(xx * 2 * math.pi / period) * np.cos(yy * 2 * math.pi / period) > 0.4)
        pattern = pattern * 2.0 - 1.0
    else:  # linear gradient across the texture
        a = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(a) + yy * math.sin(a)
        pattern = (ramp - ramp.mean()) / (np.abs(ramp - ramp.mean()).max() + 1e-6)
    contrast = rng.uniform(20, 50)
    tint = rng.uniform(0.6, 1.0, 3)  # the pattern need not be grey
    return np.clip(base[None, None, :] + contrast * pattern[..., None] * tint, 0, 255)


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) uint8 silhouette of the given kind, centred, within radius size/2 - 1."""
    m = np.zeros((size, size), np.uint8)
    c, r = size // 2, size // 2 - 1
    if kind == "ellipse":
        cv2.ellipse(m, (c, c), (r, int(r * rng.uniform(0.5, 1.0))), 0, 0, 360, 1, -1)
    elif kind == "box":
        h = int(r * rng.uniform(0.5, 1.0))
        cv2.rectangle(m, (c - r, c - h), (c + r, c + h), 1, -1)
    elif kind == "cross":
        a, b = int(r * rng.uniform(0.3, 0.5)), int(r * rng.uniform(0.3, 0.5))
        cv2.rectangle(m, (c - r, c - a), (c + r, c + a), 1, -1)
        cv2.rectangle(m, (c - b, c - r), (c + b, c + r), 1, -1)
    else:
        if kind == "polygon":
            n = int(rng.integers(5, 8))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(0.6, 1.0, n) * r
        elif kind == "star":
            n = int(rng.integers(5, 8))
            angles = np.linspace(0, 2 * math.pi, 2 * n, endpoint=False)
            radii = np.where(np.arange(2 * n) % 2 == 0, r, r * 0.45)
        elif kind == "triangle":
            angles = np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
            radii = np.full(3, float(r))
        else:  # blob: a smooth random radius around the centre
            angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
            radii = np.ones(48)
            for k in (2, 3):
                radii += rng.uniform(0.05, 0.2) * np.cos(k * angles + rng.uniform(0, 6.3))
            radii = r * radii / radii.max()
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1)
        cv2.fillPoly(m, [pts.astype(np.int32)], 1)
    return m


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background with a few painted, static shapes (clutter, not objects)."""
    canvas = _texture(rng, h, w, rng.uniform(60, 190, 3))
    for _ in range(int(rng.integers(0, 5))):
        size = int(rng.integers(16, 48))
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        sil = _shape_mask(kind, size, rng).astype(bool)
        paint = _texture(rng, size, size, rng.uniform(0, 255, 3))
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        patch = canvas[y:y + size, x:x + size]
        patch[sil] = 0.5 * patch[sil] + 0.5 * paint[sil]  # faded: painted on, not an object
    return canvas


def _reach(obj: SceneObject) -> float:
    """The farthest any drawn pixel of ``obj`` gets from its centre, at any angle and scale."""
    s = obj.silhouette.shape[0]
    ys, xs = np.nonzero(obj.silhouette)
    radius = np.hypot(xs + 0.5 - s / 2, ys + 0.5 - s / 2).max() + 1.0
    return float(radius * (1 + obj.scale_amp))


@dataclass(frozen=True)
class Occlusion:
    """A panel hides object ``target`` completely on frames ``start .. start + duration - 1``
    (it slides in over the ``OCCLUDER_RAMP`` frames before and off over those after)."""

    target: int
    start: int
    duration: int


@dataclass(frozen=True)
class Exit:
    """Object ``target`` heads out of the frame at ``start`` (fully out within ``EXIT_FRAMES``
    frames), stays out for ``away`` frames, then comes back in the way it left."""

    target: int
    start: int
    away: int


@dataclass
class SceneObject:
    """One drawn thing: appearance and motion (position in pixels, angle in degrees)."""

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
    role: str = "object"  # object | distractor | occluder
    phase: str = "free"  # scripted exits: free | leaving | away | returning
    phase_until: int = 0  # frame at which the "away" phase ends
    scale_amp: float = 0.25


class Scene:
    """A reproducible scene: same seed (and arguments), same frames and masks."""

    def __init__(self, width: int = 320, height: int = 240, num_objects: int = 3, seed: int = 0,
                 object_size: tuple[int, int] = (40, 80), exits: bool = False,
                 lighting: bool = True, distractors: int = 0,
                 occlusions: tuple[Occlusion, ...] = (), exit_schedule: tuple[Exit, ...] = (),
                 clutter: bool = True) -> None:
        self.width, self.height, self.seed = width, height, seed
        self.lighting = lighting
        rng = np.random.default_rng(seed)
        self._rng = rng
        pad = 64
        self.background = (_background(rng, height + pad, width + pad) if clutter else
                           _texture(rng, height + pad, width + pad, rng.uniform(60, 190, 3)))
        self.pan = rng.uniform(-0.5, 0.5, 2)
        self.light = rng.uniform(0.5, 1.5, 3)  # per-channel phase of the light's colour drift
        self.objects = [self._make_object(i + 1, rng, object_size, exits)
                        for i in range(num_objects)]
        for k in range(distractors):
            self.objects.append(self._look_alike(DISTRACTOR_ID0 + k, self.objects[0], rng))
        self.occlusions = tuple(occlusions)
        self.exit_schedule = tuple(exit_schedule)
        self._occluders = {}
        for k, occ in enumerate(self.occlusions):
            panel = self._make_occluder(OCCLUDER_ID0 + k, self._by_id(occ.target), rng)
            self._occluders[panel.obj_id] = (occ, rng.uniform(0, 2 * math.pi))
            self.objects.append(panel)  # drawn last: in front of everything

    # ----------------------------------------------------------------- making
    def _make_object(self, obj_id: int, rng, size_range, exits: bool) -> SceneObject:
        size = int(rng.integers(*size_range))
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        sil = _shape_mask(kind, size, rng)
        sprite = _texture(rng, size, size, rng.uniform(0, 255, 3))
        speed = rng.uniform(1.0, 4.0)
        heading = rng.uniform(0, 2 * math.pi)
        margin = min(size, self.width // 3, self.height // 3)
        pos = np.array([rng.uniform(margin, self.width - margin),
                        rng.uniform(margin, self.height - margin)])
        return SceneObject(obj_id, sprite, sil, pos,
                           speed * np.array([math.cos(heading), math.sin(heading)]),
                           rng.uniform(0, 360), rng.uniform(-4, 4), 1.0,
                           rng.uniform(0.005, 0.02), bounce=not exits)

    def _look_alike(self, obj_id: int, model: SceneObject, rng) -> SceneObject:
        """A copy of ``model`` (same silhouette and texture, colour shifted) elsewhere."""
        shift = rng.uniform(-1, 1, 3)
        shift = shift / (np.linalg.norm(shift) + 1e-6) * rng.uniform(30, 60)
        size = model.silhouette.shape[0]
        margin = min(size, self.width // 3, self.height // 3)
        heading, speed = rng.uniform(0, 2 * math.pi), rng.uniform(1.0, 4.0)
        pos = np.array([rng.uniform(margin, self.width - margin),
                        rng.uniform(margin, self.height - margin)])
        return SceneObject(obj_id, np.clip(model.sprite + shift, 0, 255), model.silhouette.copy(),
                           pos, speed * np.array([math.cos(heading), math.sin(heading)]),
                           rng.uniform(0, 360), rng.uniform(-4, 4), 1.0, model.scale_rate,
                           bounce=model.bounce, role="distractor")

    def _make_occluder(self, obj_id: int, target: SceneObject, rng) -> SceneObject:
        """A square panel wide enough to cover ``target`` at any angle and scale."""
        size = int(math.ceil(2 * _reach(target))) + 8
        sil = np.zeros((size, size), np.uint8)
        sil[1:-1, 1:-1] = 1
        sprite = _texture(rng, size, size, rng.uniform(0, 255, 3))
        return SceneObject(obj_id, sprite, sil, np.array([-10.0 * size, -10.0 * size]),
                           np.zeros(2), 0.0, 0.0, 1.0, 0.0, bounce=False, role="occluder",
                           scale_amp=0.0)

    def _by_id(self, obj_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.obj_id == obj_id:
                return obj
        raise KeyError(f"no object {obj_id} in this scene")

    # ----------------------------------------------------------------- motion
    def _half(self, obj: SceneObject) -> float:
        return obj.silhouette.shape[0] * obj.scale / 2

    def _step(self, obj: SceneObject, t: int) -> None:
        if obj.role == "occluder":
            return  # placed by _place_occluders once its target has moved
        for ex in self.exit_schedule:
            if ex.target == obj.obj_id:
                self._script_exit(obj, ex, t)
        if obj.phase == "away":
            return  # parked outside the frame
        obj.pos = obj.pos + obj.vel
        obj.angle += obj.spin
        obj.scale = 1.0 + obj.scale_amp * math.sin(t * obj.scale_rate * 2 * math.pi)
        if obj.phase in ("leaving", "returning"):
            return
        half = self._half(obj)
        for axis, limit in ((0, self.width), (1, self.height)):
            if obj.bounce:
                if obj.pos[axis] < half or obj.pos[axis] > limit - half:
                    obj.vel[axis] = -obj.vel[axis]
                    obj.pos[axis] = min(max(obj.pos[axis], half), limit - half)
            elif obj.pos[axis] < -3 * half:
                obj.pos[axis] = limit + 2 * half
            elif obj.pos[axis] > limit + 3 * half:
                obj.pos[axis] = -2 * half

    def _script_exit(self, obj: SceneObject, ex: Exit, t: int) -> None:
        """Drive a scheduled exit: leave through the nearest border, wait, come back."""
        reach = _reach(obj)
        limits = np.array([self.width, self.height], float)
        if t == ex.start:
            gaps = [obj.pos[0], limits[0] - obj.pos[0], obj.pos[1], limits[1] - obj.pos[1]]
            side = int(np.argmin(gaps))
            axis, sign = side // 2, (-1 if side % 2 == 0 else 1)
            # fast enough to be fully out within EXIT_FRAMES frames
            speed = max(float(np.linalg.norm(obj.vel)), (gaps[side] + reach) / EXIT_FRAMES)
            obj.vel = np.zeros(2)
            obj.vel[axis] = sign * speed
            obj.phase = "leaving"
        elif obj.phase == "leaving":
            if np.any(obj.pos < -reach) or np.any(obj.pos > limits + reach):
                obj.phase, obj.phase_until = "away", t + ex.away
                obj.vel = -obj.vel
        elif obj.phase == "away" and t >= obj.phase_until:
            obj.phase = "returning"
        elif obj.phase == "returning":
            if np.all(obj.pos > reach) and np.all(obj.pos < limits - reach):
                obj.phase = "free"

    def _place_occluders(self, t: int) -> None:
        """Each panel sits on its target while the occlusion lasts and slides in/out around it."""
        for obj in self.objects:
            if obj.obj_id not in self._occluders:
                continue
            occ, heading = self._occluders[obj.obj_id]
            target = self._by_id(occ.target)
            before, after = occ.start - t, t - (occ.start + occ.duration - 1)
            off = max(before, after, 0) / OCCLUDER_RAMP  # 0 while covering, 1 = one ramp away
            if off > 1.5:
                obj.pos = np.array([-10.0, -10.0]) * obj.silhouette.shape[0]  # out of sight
                continue
            dist = off * obj.silhouette.shape[0] * 1.2
            obj.pos = target.pos + dist * np.array([math.cos(heading), math.sin(heading)])

    # -------------------------------------------------------------- drawing
    def _warp(self, obj: SceneObject, image: np.ndarray, flags: int) -> np.ndarray:
        s = obj.silhouette.shape[0]
        rot = cv2.getRotationMatrix2D((s / 2, s / 2), obj.angle, obj.scale)
        rot[:, 2] += obj.pos - s / 2
        return cv2.warpAffine(image, rot, (self.width, self.height), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def render(self, t: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Draw frame t (objects must have been stepped to t): RGB uint8 and visible masks."""
        self._place_occluders(t)
        ox = int(16 + 16 * math.sin(t * 0.02 + self.pan[0]))
        oy = int(16 + 16 * math.cos(t * 0.015 + self.pan[1]))
        canvas = self.background[oy:oy + self.height, ox:ox + self.width].copy()
        owner = np.zeros((self.height, self.width), np.int32)
        for obj in self.objects:  # later objects are in front
            sil = self._warp(obj, obj.silhouette, cv2.INTER_NEAREST).astype(bool)
            if not sil.any():
                continue
            sprite = self._warp(obj, obj.sprite.astype(np.float32), cv2.INTER_LINEAR)
            canvas[sil] = sprite[sil]
            owner[sil] = obj.obj_id
        if self.lighting:  # overall brightness and a slow drift of the light's colour
            gain = 1.0 + 0.2 * math.sin(t * 0.05)
            colour = 1.0 + 0.06 * np.sin(t * 0.03 * self.light + self.light)
            canvas = canvas * (gain * colour)[None, None, :]
        frame = np.clip(canvas, 0, 255).astype(np.uint8)
        return frame, {o.obj_id: owner == o.obj_id for o in self.objects}

    # ---------------------------------------------------------------- depth
    @property
    def intrinsics(self) -> Intrinsics:
        """The camera's pinhole intrinsics (square pixels, principal point at the centre)."""
        f = 0.5 * self.width / math.tan(math.radians(HORIZONTAL_FOV_DEG) / 2)
        return Intrinsics(fx=f, fy=f, cx=(self.width - 1) / 2, cy=(self.height - 1) / 2)

    def object_depth(self, obj_id: int) -> float:
        """Depth (m) of an object's flat face: by drawing order, the first farthest."""
        order = [o.obj_id for o in self.objects].index(obj_id)
        return float(np.linspace(*OBJECT_DEPTH, max(len(self.objects), 2))[order])

    def depth(self, masks: dict[int, np.ndarray], holes: float = 0.0,
              bleed: bool = False) -> np.ndarray:
        """(H, W) float32 depth in metres for a frame's visible ``masks``: exact, or with a
        fraction ``holes`` of pixels missing (0) and, with ``bleed``, pixels at depth edges
        reading between the near and the far side (the mean of the min and max around them)."""
        v = np.arange(self.height, dtype=np.float64)[:, None]
        top, bottom = BACKGROUND_DEPTH  # inverse depth is affine in v on a plane
        inv = 1 / top + (1 / bottom - 1 / top) * v / max(self.height - 1, 1)
        z = np.repeat(1.0 / inv, self.width, axis=1).astype(np.float32)
        for obj_id, mask in masks.items():
            z[mask] = self.object_depth(obj_id)
        if bleed:
            kernel = np.ones((3, 3), np.uint8)
            near, far = cv2.erode(z, kernel), cv2.dilate(z, kernel)
            edge = far - near > 0.1
            z[edge] = 0.5 * (near[edge] + far[edge])
        if holes > 0:
            if not hasattr(self, "_depth_rng"):
                self._depth_rng = np.random.default_rng([self.seed, 19])
            z[self._depth_rng.random(z.shape) < holes] = 0.0
        return z

    def true_positions(self, masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Exact 3D centroid (m, camera optical frame) of each object's visible face: the mean
        of its visible pixel centres back-projected at its depth. Objects out of view: none."""
        k, out = self.intrinsics, {}
        for obj_id, mask in masks.items():
            cols, rows = mask.sum(axis=0), mask.sum(axis=1)  # pixel counts per column / row
            n = cols.sum()
            if n:
                z = self.object_depth(obj_id)
                u, v = cols @ np.arange(mask.shape[1]) / n, rows @ np.arange(mask.shape[0]) / n
                out[obj_id] = np.array([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z])
        return out

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


# ------------------------------------------------------------------ evaluation clips
@dataclass(frozen=True)
class ClipSpec:
    """One benchmark clip: a scene, how many frames, which object is prompted on frame 0."""

    name: str
    phenomenon: str
    seed: int
    num_frames: int
    scene_args: dict = field(default_factory=dict)
    target: int = 1

    def scene(self) -> Scene:
        return Scene(seed=self.seed, **self.scene_args)

    def frames(self):
        """Yield (frame, target mask) for the clip's frames."""
        for frame, masks in self.scene().frames(self.num_frames):
            yield frame, masks[self.target]


def phenomenon_args(phenomenon: str, rng: np.random.Generator, num_frames: int,
                    width: int = 320, height: int = 240) -> dict:
    """Scene arguments (besides the seed) of a clip showing ``phenomenon``; object 1 is the
    target. Events start late enough for a clean first frame and end before the clip does."""
    if phenomenon not in PHENOMENA:
        raise ValueError(f"unknown phenomenon {phenomenon!r}; known: {', '.join(PHENOMENA)}")
    if num_frames < 16:
        raise ValueError(f"a clip needs at least 16 frames to show {phenomenon}, got {num_frames}")
    args = dict(width=width, height=height, num_objects=int(rng.integers(2, 5)),
                object_size=(36, 76))
    if phenomenon == "occlusion":
        start = int(rng.integers(num_frames // 5, num_frames // 2))
        duration = int(rng.integers(4, max(5, num_frames // 4)))
        args["occlusions"] = (Occlusion(1, start, duration),)
    elif phenomenon == "exit":
        start = int(rng.integers(num_frames // 8, num_frames // 3))
        args["exit_schedule"] = (Exit(1, start, int(rng.integers(3, max(4, num_frames // 5)))),)
    elif phenomenon == "distractors":
        args["distractors"] = int(rng.integers(1, 3))
    return args


def _clean_start(clip: ClipSpec, min_area: int = 300, min_fraction: float = 0.85) -> bool:
    """Is the target well in view on frame 0 (not hidden behind other objects)?"""
    scene = clip.scene()
    target = scene._by_id(clip.target)
    area = int(next(scene.frames(1))[1][clip.target].sum())
    return area >= max(min_area, min_fraction * int(target.silhouette.sum()))


def evaluation_set(per_phenomenon: int = 8, num_frames: int = 48, width: int = 320,
                   height: int = 240, split: int = 0) -> list[ClipSpec]:
    """The held-out clips: ``per_phenomenon`` (at most 99) of each phenomenon, fully determined
    by the arguments. Each clip's seed is the first of ``split * 10**6 + k * 10**4 + i * 100 +
    attempt`` (k: phenomenon, i: clip) whose target is well in view on frame 0, so a single
    click can define it. ``split`` picks another disjoint set of the same kind; every seed here
    is far below ``TRAIN_SEED_BASE``."""
    if not 0 < per_phenomenon < 100:
        raise ValueError(f"per_phenomenon must be 1..99, got {per_phenomenon}")
    clips = []
    for k, phenomenon in enumerate(PHENOMENA):
        for i in range(per_phenomenon):
            for attempt in range(100):
                seed = split * 1_000_000 + k * 10_000 + i * 100 + attempt
                rng = np.random.default_rng([seed, 7])
                args = phenomenon_args(phenomenon, rng, num_frames, width, height)
                clip = ClipSpec(f"{phenomenon}-{i:02d}", phenomenon, seed, num_frames, args)
                if _clean_start(clip):
                    break
            clips.append(clip)
    return clips
