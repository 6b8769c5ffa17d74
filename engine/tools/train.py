"""Train the project's compact SAM 2 model (``engine.config.COMPACT``) on the synthetic world.

Trained as SAM 2 is, in two stages, with scenes drawn on the fly from a seed range disjoint
from the benchmark's (``engine.tools.synthetic.TRAIN_SEED_BASE``):

1. **images**: image encoder + prompt encoder + mask decoder on single frames. Each object gets
   a click or a box, then one corrective click on its largest error (with the previous mask
   logits fed back, as the tracker refines). Losses: focal + dice on the masks (the best of the
   three candidates when there are three), L1 on the predicted IoU of every candidate, BCE on
   object presence.
2. **clips**: clips through the memory path run by the tracker's own step
   (``engine.tracking_step.TrackingStep``, the code ``StreamingTracker`` runs), with gradients:
   the same memory banks, admission rule (the model's ``memory_min_iou``) and temporal slots,
   the same multimask rule and presence gating. Frame 0 is prompted (click, box or mask; a
   click or box sometimes refined by a corrective click); later frames are tracked from the
   model's own memory; sometimes one frame gets a corrective click and becomes a prompted
   frame. Clips of ``--clip-len`` to ``--clip-len-max`` frames are trained with truncated
   backpropagation through time: every ``--tbptt`` frames the loss so far is backpropagated and
   the banks are cut from the graph (their contents stay), so long streams cost the memory of
   one window. The presence head is trained on visibility and, on tracked frames, on whether
   the chosen mask is on the object (``--presence-on-target``: "absent" when less than that share
   of a non-empty mask lies on the object), so a mask that has wandered onto something else is
   called absent instead of being kept with confidence (an empty or too small mask on the
   object stays "present": the mask loss corrects it; ``--off-target-weight`` weighs those
   "lost" frames in the presence term). Frames just after an object comes back into view
   (after an occlusion or an exit) weigh ``1 + --reacquire-weight`` in the loss
   (``--reacquire-frames`` of them). The image encoder stays frozen; the decoder and prompt
   encoder learn at ``--pretrained-lr-scale`` times the rate of the parts that are new in this
   stage. Two initialisations make the new memory path learn within a CPU budget (see
   ``match_memory_attention_output`` and ``init_memory_locality``).

    python -m engine.tools.train --out engine/weights/sam2_ros_compact.pt --seed 0   # both stages

or one stage at a time (``--clip-steps 0``, then ``--init <image stage> --image-steps 0``);
engine/weights/TRAINING.md records the commands that made the bundled weights.

Speed: ``--workers N`` draws the batches in N worker processes, ahead of the training loop
(the data of step k depend only on the seed, the stage and k, so a run gives the same batches
with any number of workers); on CUDA the image encoder and the memory attention run under
bfloat16 autocast (as the torch runtime's bf16 precision runs them), the rest in fp32 with TF32
products. ``--time-limit-s`` stops a run cleanly before that wall-clock time (the learning rate
follows whichever of the step count and the time limit runs out first), saving the checkpoint
and the resumable state. On the CPU one thread by default (on a CPU shared with other jobs,
more threads spin and slow down). Writes the checkpoint in Meta's format
(``{"model": state_dict}``), so ``engine.checkpoint`` loads it strictly.
"""
from __future__ import annotations

import argparse
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import COMPACT, MAX_COND_FRAMES, ModelConfig
from ..memory_bank import MemoryBank, MemorySelection
from ..model.sam2 import DecoderOutput, ImageFeatures, SAM2Model
from ..tracking_step import (MEMORY_DTYPE, PREV_LOGITS_CLAMP, TrackingStep, normalise,
                             resize_frame)
from .synthetic import TRAIN_SEED_BASE, Exit, Occlusion, Scene

# SAM 2's loss weights (sam2.1 training config): focal x20, dice x1, IoU x1, presence x1.
W_FOCAL, W_DICE, W_IOU, W_PRESENCE = 20.0, 1.0, 1.0, 1.0
FRAME_SIZES = ((320, 240), (320, 240), (256, 256), (320, 180), (240, 240))
WORLDS = ("classic", "broad")
ENCODE_CHUNK = 128  # frames per image-encoder call in the clip stage
LONG_SCENE = 60  # broad world: scenes longer than this get recurring events


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    image_steps: int = 2000
    clip_steps: int = 2000
    image_batch: int = 8  # frames per image step
    objects_per_image: int = 3
    clip_batch: int = 2  # clips per clip step
    clip_len: int = 6  # frames per clip (trained ones, after any burn-in)
    clip_len_max: int = 0  # > clip_len: each step draws its clip length in clip_len..this
    objects_per_clip: int = 3
    image_lr: float = 1e-3
    clip_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 40
    grad_clip: float = 1.0
    log_every: int = 10
    save_every: int = 100
    freeze_encoder_in_clips: bool = True  # the encoder keeps its image-stage weights
    pretrained_lr_scale: float = 0.3  # clip stage: decoder / prompt encoder learn slower
    memory_init: bool = True  # clip stage from step 0: the two initialisations of the memory path
    absent_weight: float = 1.0  # clip stage: weight of absent frames in the presence loss
    event_rate: float = 1.0  # clip stage: scales the chance of an occlusion / exit per clip
    correct_rate: float = 0.3  # clip stage: chance that a clip gets one corrective click
    burn_in: int = 0  # clip stage: up to this many frames (drawn per step) tracked before the
    # trained ones without gradients, so later frames of a stream are trained too
    recent_drop: float = 0.0  # clip stage: chance that a tracked frame sees no recent spatial
    # memories (prompted frames' and the pointers only): it learns to hold on to the prompt
    tbptt: int = 0  # clip stage: backpropagate every this many frames, cutting the banks'
    # graph there (0: the whole clip at once)
    presence_on_target: float = 0.0  # clip stage: on tracked frames the presence target is 0
    # where the object is visible but less than this share of the chosen mask lies on it (the
    # mask is on something else); 0: the target is visibility alone
    off_target_weight: float = 1.0  # clip stage, with presence_on_target: weight of the
    # presence loss on frames where the object is in view and the mask is off it
    reacquire_weight: float = 0.0  # clip stage: frames just after an object reappears weigh
    reacquire_frames: int = 8  # 1 + reacquire_weight, for this many frames
    memory_rule: str = "model"  # clip stage: the admission rule trained with ("model", "all"
    # or an IoU threshold), as StreamingTracker's memory_min_iou
    world: str = "classic"  # scenes: "classic" (engine.tools.synthetic) or "broad"
    # (engine.tools.world, training families only)
    classic_share: float = 0.0  # world "broad": this share of the clips from "classic"


# ---------------------------------------------------------------------------- data
def _mask_to_model(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (S, S) bool, resized as ``engine.prompts`` resizes mask prompts."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return (t[0, 0] >= 0.5).numpy()


def _frames_to_model(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frames -> (B, 3, S, S) uint8, resized as the tracker resizes them
    (``engine.tracking_step.resize_frame``); ``normalise`` makes them model input."""
    return torch.cat([resize_frame(f, size) for f in frames])


def random_scene(rng: np.random.Generator, span: int, start: int) -> Scene:
    """A random training scene whose scripted events fall in frames ``start .. start+span``."""
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    n = int(rng.integers(1, 6))
    lo = int(rng.integers(18, 50))
    size = (lo, lo + int(rng.integers(12, 50)))
    events = dict(occlusions=(), exit_schedule=())
    if rng.random() < 0.35:
        events["occlusions"] = (Occlusion(int(rng.integers(1, n + 1)),
                                          start + int(rng.integers(1, max(2, span - 1))),
                                          int(rng.integers(1, 7))),)
    if rng.random() < 0.3:
        events["exit_schedule"] = (Exit(int(rng.integers(1, n + 1)),
                                        start + int(rng.integers(0, max(1, span // 2))),
                                        int(rng.integers(1, 6))),)
    distractors = int(rng.integers(1, 3)) if rng.random() < 0.35 else 0
    seed = TRAIN_SEED_BASE + int(rng.integers(1 << 40))
    return Scene(width, height, n, seed=seed, object_size=size, exits=rng.random() < 0.1,
                 distractors=distractors, **events)


def random_clip_scene(rng: np.random.Generator, span: int, start: int,
                      event_rate: float = 1.0) -> Scene:
    """A random scene for clip training: like ``random_scene`` but with events more often and
    long enough that a clip can lose its object for most of its frames (occluded or out of
    view), and look-alikes of object 1 half the time. ``event_rate`` scales the chance of an
    occlusion (0.4) and of an exit (0.35)."""
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    n = int(rng.integers(1, 6))
    lo = int(rng.integers(18, 50))
    size = (lo, lo + int(rng.integers(12, 50)))
    events = dict(occlusions=(), exit_schedule=())
    if rng.random() < 0.4 * event_rate:
        events["occlusions"] = (Occlusion(int(rng.integers(1, n + 1)),
                                          start + int(rng.integers(1, max(2, span // 2))),
                                          int(rng.integers(1, max(2, 2 * span // 3)))),)
    if rng.random() < 0.35 * event_rate:
        events["exit_schedule"] = (Exit(int(rng.integers(1, n + 1)),
                                        start + int(rng.integers(0, max(1, span // 3))),
                                        int(rng.integers(1, max(2, span // 2)))),)
    distractors = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
    seed = TRAIN_SEED_BASE + int(rng.integers(1 << 40))
    return Scene(width, height, n, seed=seed, object_size=size, exits=rng.random() < 0.1,
                 distractors=distractors, **events)


def clip_frames(rng: np.random.Generator, cfg: TrainConfig, frames: int):
    """One training clip of ``frames`` frames from the configured world: a list of
    (frame (H, W, 3) uint8, {id: (H, W) bool}) and the ids with a scripted event (which
    ``sample_clip_batch`` prompts first, so that absences are common) and whether object 1 has
    look-alikes. Frames are taken every 1-3 scene frames from a random start."""
    stride = int(rng.integers(1, 4))
    start = int(rng.integers(0, 10))
    span = stride * (frames - 1)
    wanted = [start + stride * i for i in range(frames)]
    if cfg.world == "broad" and not (cfg.classic_share and rng.random() < cfg.classic_share):
        return _broad_clip(rng, cfg, wanted)
    scene = random_clip_scene(rng, span=span, start=start, event_rate=cfg.event_rate)
    keep = set(wanted)
    clip = [(f, m) for t, (f, m) in enumerate(scene.frames(wanted[-1] + 1)) if t in keep]
    scripted = {e.target for e in scene.occlusions} | {e.target for e in scene.exit_schedule}
    copied = any(o.role == "distractor" for o in scene.objects)
    return clip, scripted, copied


def _broad_clip(rng: np.random.Generator, cfg: TrainConfig, wanted: list[int]):
    """``clip_frames`` from the broad world (``engine.tools.world.sample_training_scene``:
    training families only). Scenes longer than ``LONG_SCENE`` frames get an event every
    25-50 frames (divided by ``cfg.event_rate``), shorter ones each of their events once."""
    from .world import sample_training_scene

    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    frames = wanted[-1] + 1
    every = None
    if frames > LONG_SCENE:
        every = max(8, int(rng.integers(25, 51) / max(cfg.event_rate, 1e-3)))
    scene = sample_training_scene(rng, width, height, frames, event_every=every)
    clip = [scene.render(t) for t in wanted]
    scripted = {e.target for e in scene.events}
    copied = any(t.role == "lookalike" for t in scene.things)
    return clip, scripted, copied


def _targets(masks: dict[int, np.ndarray], min_area: int) -> list[int]:
    """Ids that can be prompted: objects and look-alikes (not panels), visible enough."""
    return [k for k, m in masks.items() if k < 200 and int(m.sum()) >= min_area]


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, 3, S, S) uint8 (``normalise`` makes it model input)
    index: torch.Tensor  # (N,) image of each object
    gt: np.ndarray  # (N, S, S) bool at model resolution


def image_frame(rng, cfg: TrainConfig) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One training frame and its masks from the configured world (``cfg.world``; with
    "broad", ``cfg.classic_share`` of them from the classic world)."""
    t = int(rng.integers(0, 12))
    if cfg.world == "broad" and not (cfg.classic_share and rng.random() < cfg.classic_share):
        from .world import sample_training_scene

        width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
        return sample_training_scene(rng, width, height, t + 1).render(t)
    scene = random_scene(rng, span=4, start=t + 100)  # no scripted events in view
    for frame, masks in scene.frames(t + 1):
        pass
    return frame, masks


def sample_image_batch(rng, cfg: TrainConfig, size: int) -> ImageBatch:
    frames, index, gts = [], [], []
    while len(frames) < cfg.image_batch:
        frame, masks = image_frame(rng, cfg)
        ids = _targets(masks, min_area=40)
        if not ids:
            continue
        chosen = rng.permutation(ids)[:cfg.objects_per_image]
        gt = [_mask_to_model(masks[int(k)], size) for k in chosen]
        keep = [g for g in gt if g.any()]
        if not keep:
            continue
        index += [len(frames)] * len(keep)
        gts += keep
        frames.append(frame)
    return ImageBatch(_frames_to_model(frames, size), torch.tensor(index), np.stack(gts))


@dataclass
class ClipBatch:
    images: torch.Tensor  # (B*T, 3, S, S) uint8, clip-major
    frame_of: torch.Tensor  # (N, T) image index of each object's frame t
    gt: np.ndarray  # (N, T, S, S) bool at model resolution
    burn_in: int = 0  # the first frames, tracked without gradients or losses


def sample_clip_batch(rng, cfg: TrainConfig, size: int, burn_in: int = 0,
                      clip_len: int | None = None) -> ClipBatch:
    """``cfg.clip_batch`` clips of ``clip_len`` (default ``cfg.clip_len``) + ``burn_in``
    frames, up to ``cfg.objects_per_clip`` objects each, all visible on frame 0."""
    frames, frame_of, gts = [], [], []
    t_len = (clip_len or cfg.clip_len) + burn_in
    while len(frames) < cfg.clip_batch * t_len:
        clip, scripted, copied = clip_frames(rng, cfg, t_len)
        ids = _targets(clip[0][1], min_area=60)
        if not ids:
            continue
        # objects with a scripted event first (so absences are common), then object 1 when it
        # has look-alikes, then the others
        order = sorted(rng.permutation(ids),
                       key=lambda k: (k not in scripted, not (copied and k == 1)))
        chosen = [int(k) for k in order[:cfg.objects_per_clip]]
        gt = np.stack([[_mask_to_model(m[k], size) for _, m in clip] for k in chosen])
        if not gt[:, 0].reshape(len(chosen), -1).any(1).all():
            continue
        base = len(frames)
        frames += [f for f, _ in clip]
        frame_of += [[base + i for i in range(t_len)]] * len(chosen)
        gts.append(gt)
    return ClipBatch(_frames_to_model(frames, size), torch.tensor(frame_of),
                     np.concatenate(gts), burn_in)


def clip_length(rng, cfg: TrainConfig) -> int:
    """This step's clip length: ``clip_len``, or drawn in ``clip_len .. clip_len_max``."""
    if cfg.clip_len_max > cfg.clip_len:
        return int(rng.integers(cfg.clip_len, cfg.clip_len_max + 1))
    return cfg.clip_len


def make_batch(stage: str, cfg: TrainConfig, size: int, si: int, step: int):
    """The batch of step ``step`` of stage ``stage`` (index ``si``): a function of the seed,
    the stage and the step only (its own random generator), so any worker can make it."""
    rng = np.random.default_rng([cfg.seed, si, step, 0])
    if stage == "image":
        return sample_image_batch(rng, cfg, size)
    burn_in = int(rng.integers(0, cfg.burn_in + 1)) if cfg.burn_in else 0
    return sample_clip_batch(rng, cfg, size, burn_in, clip_length(rng, cfg))


def _worker_init() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _make_batch_task(args):
    """A batch with numpy arrays in place of tensors: it travels through a pipe, as plain
    pickled arrays (tensors would travel through shared memory, which may be small)."""
    batch = make_batch(*args)
    return replace(batch, images=batch.images.numpy(), **{
        k: getattr(batch, k).numpy() for k in ("index", "frame_of") if hasattr(batch, k)})


def _from_task(batch):
    return replace(batch, images=torch.from_numpy(batch.images), **{
        k: torch.from_numpy(getattr(batch, k)) for k in ("index", "frame_of")
        if hasattr(batch, k)})


class Batches:
    """Batches of steps ``first``, ``first + 1``, ... in order: made here (``workers`` 0) or
    by ``workers`` processes, at most ``ahead`` steps in advance (spawned processes: nothing of
    the parent's CUDA or thread state is inherited). Close it (or use ``with``)."""

    def __init__(self, stage: str, cfg: TrainConfig, size: int, si: int, first: int,
                 workers: int = 0, ahead: int | None = None) -> None:
        self.args = (stage, cfg, size, si)
        self.next = first
        self.pool = None
        self.pending: deque = deque()
        if workers > 0:
            import torch.multiprocessing as mp

            self.pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init)
            self.ahead = ahead or 2 * workers
            self.queued = first

    def _fill(self) -> None:
        while len(self.pending) < self.ahead:
            self.pending.append(self.pool.apply_async(_make_batch_task,
                                                      ((*self.args, self.queued),)))
            self.queued += 1

    def get(self):
        """The next step's batch."""
        step, self.next = self.next, self.next + 1
        if self.pool is None:
            return make_batch(*self.args, step)
        self._fill()
        batch = self.pending.popleft().get()
        self._fill()
        return _from_task(batch)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

# ------------------------------------------------------------------------- prompts
def _deepest(mask: np.ndarray) -> tuple[float, float]:
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def _random_pixel(rng, mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    return float(xs[i]) + rng.uniform(-0.4, 0.4), float(ys[i]) + rng.uniform(-0.4, 0.4)


def click_on(rng, mask: np.ndarray) -> tuple[float, float]:
    """A positive click inside ``mask``: its centre half the time, else anywhere inside."""
    if rng.random() < 0.5:
        return _deepest(mask)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return _random_pixel(rng, inner if inner.any() else mask)


def box_of(rng, mask: np.ndarray) -> list[tuple[float, float]]:
    """The box of ``mask`` with noise (up to 10% of its side), as two corner points."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    s = mask.shape[0] - 1
    jitter = 0.1 * np.array([x1 - x0 + 1, y1 - y0 + 1] * 2) * rng.uniform(-1, 1, 4)
    x0, y0, x1, y1 = np.clip(np.array([x0, y0, x1, y1], float) + jitter, 0, s)
    return [(min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))]


def corrective_click(rng, pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, int]:
    """A click on the larger error: positive on missed object, negative on false positive."""
    missed, extra = gt & ~pred, pred & ~gt
    if not missed.any() and not extra.any():
        return (*_deepest(gt), 1) if gt.any() else (*_random_pixel(rng, ~pred), 0)
    err, label = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
    xy = _deepest(err) if rng.random() < 0.5 else _random_pixel(rng, err)
    return (*xy, label)


# -------------------------------------------------------------------------- losses
def mask_losses(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, M, S, S), gt (N, 1, S, S) float -> focal (N, M), dice (N, M)."""
    logits = logits.float()
    gt = gt.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    p_t = prob * gt + (1 - prob) * (1 - gt)
    alpha = 0.25 * gt + 0.75 * (1 - gt)
    focal = (alpha * ce * (1 - p_t) ** 2).flatten(2).mean(-1)
    inter = (prob * gt).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + gt.flatten(2).sum(-1) + 1)
    return focal, dice


def actual_iou(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with (gt >= 0.5): (N, M, L, L), (N, 1, L, L) -> (N, M); empty/empty
    counts as 1."""
    pred = logits.detach() > 0
    g = (gt >= 0.5).expand_as(pred)
    inter = (pred & g).flatten(2).sum(-1).float()
    union = (pred | g).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@dataclass
class Decoded(DecoderOutput):
    """A decoder output with what the losses need besides: every candidate's raw logits
    ``raw`` (N, M, 4h, 4w), before absent objects are gated to "nothing here", and the chosen
    candidate ``best`` (N,) (highest predicted IoU, as the tracker chooses)."""

    raw: torch.Tensor | None = None
    best: torch.Tensor | None = None


def decode(model: SAM2Model, feat, high_res, coords, labels, mask_logits, multimask) -> Decoded:
    """``SAM2Model.decode`` with the raw candidate logits kept for the losses."""
    out, raw, best = model.decode_candidates(feat, high_res, coords, labels, mask_logits,
                                             multimask)
    return Decoded(*(getattr(out, k) for k in DecoderOutput.__dataclass_fields__), raw, best)


def on_target(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Share of each mask (logits > 0) that lies on the object (gt >= 0.5): (N, 1, L, L) both
    -> (N,); an empty mask counts as 1 (it is on nothing else)."""
    pred = logits.detach() > 0
    inside = (pred & (gt >= 0.5)).flatten(1).sum(1).float()
    area = pred.flatten(1).sum(1).float()
    return torch.where(area > 0, inside / area.clamp_min(1), torch.ones_like(area))


def sam_loss(out: Decoded, gt: torch.Tensor, absent_weight: float = 1.0,
             weight: torch.Tensor | None = None,
             presence_on_target: float = 0.0,
             off_target_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """SAM 2's loss for N objects: gt (N, 1, S, S) float; empty gt = object absent.
    Compared at half the input side L = S/2 (twice the decoder's resolution): soft
    (area-averaged) targets, logits upsampled bilinearly. ``weight`` (N,) scales each object's
    terms; ``presence_on_target`` > 0: the presence target is 0 also where the object is
    visible but less than this share of the chosen candidate's mask lies on it (a mask on
    the wrong thing: "absent"), and such frames weigh ``off_target_weight`` in the presence
    term."""
    present = gt.flatten(1).any(1).float()  # (N,)
    gt = F.avg_pool2d(gt, 2)  # (N, 1, L, L) coverage in [0, 1]
    logits = F.interpolate(out.raw.float(), size=gt.shape[-2:], mode="bilinear",
                           align_corners=False)  # (N, M, L, L)
    focal, dice = mask_losses(logits, gt)
    combo = W_FOCAL * focal + W_DICE * dice
    best = combo.argmin(dim=1)
    rows = torch.arange(len(best), device=gt.device)
    iou_err = (out.ious.float() - actual_iou(logits, gt)).abs().mean(1)
    w = torch.ones_like(present) if weight is None else weight.float()
    denom = present.sum().clamp_min(1)
    loss_mask = (combo[rows, best] * present * w).sum() / denom
    loss_iou = (iou_err * present * w).sum() / denom
    picked = logits[rows, out.best].unsqueeze(1)  # (N, 1, L, L): the tracker's choice
    chosen = actual_iou(picked, gt)[:, 0]  # no gradient
    on = on_target(picked, gt)
    target = present * (on >= presence_on_target).float()
    off = present * (1.0 - target)  # in view, the mask off it: "lost"
    w_obj = torch.where(present > 0, 1.0 + (off_target_weight - 1.0) * off, absent_weight) * w
    loss_obj = (F.binary_cross_entropy_with_logits(out.object_score_logits.float()[:, 0],
                                                   target, reduction="none") * w_obj).mean()
    total = loss_mask + W_IOU * loss_iou + W_PRESENCE * loss_obj
    with torch.no_grad():  # tensors: read (a device sync) only when logged
        said = (out.object_score_logits[:, 0] > 0).float()
        stats = {"mask": loss_mask.detach(), "iou_l1": loss_iou.detach(),
                 "obj": loss_obj.detach(), "J": (chosen * present).sum() / denom,
                 "obj_acc": (said == present).float().mean(),
                 # visible, the mask mostly off it, and called present: "lost and confident"
                 "lost_conf": (present * (on < 0.5).float() * said).sum() / denom}
    return total, stats


# ------------------------------------------------------------------------- stages
def _np_masks(low_res: torch.Tensor, model: SAM2Model) -> np.ndarray:
    return (model.upscale_masks(low_res.detach().float())[:, 0] > 0).cpu().numpy()


def _add_clicks(rng, coords, labels, pred: np.ndarray, gt: np.ndarray):
    """Append one corrective click per object to coords (N, P, 2) / labels (N, P)."""
    clicks = [corrective_click(rng, p, g) for p, g in zip(pred, gt)]
    xy = torch.tensor([[c[0], c[1]] for c in clicks], dtype=torch.float32, device=coords.device)
    lab = torch.tensor([c[2] for c in clicks], dtype=torch.int32, device=coords.device)
    return torch.cat([coords, xy[:, None]], 1), torch.cat([labels, lab[:, None]], 1)


def first_prompt(rng, gt: np.ndarray, kind: str, device):
    """Click or box prompts for N objects in model pixels: coords (N, P, 2), labels (N, P)."""
    if kind == "click":
        pts = [[click_on(rng, g)] for g in gt]
        lab = [[1] for _ in gt]
    else:
        pts = [box_of(rng, g) for g in gt]
        lab = [[2, 3] for _ in gt]
    return (torch.tensor(pts, dtype=torch.float32, device=device),
            torch.tensor(lab, dtype=torch.int32, device=device))


def _add_stats(into: dict, stats: dict, scale: float = 1.0) -> None:
    for k, v in stats.items():
        into[k] = into.get(k, 0.0) + v * scale


def prompt_and_refine(rng, model, feat, high_res, gt_np, gt, kind: str, refine: bool,
                      first_multimask: bool | None = None):
    """Image stage: decode a first click/box prompt, then (optionally) one corrective click.
    ``first_multimask`` None: three candidates for a single click (the image stage trains all
    four mask tokens, as SAM does). Returns the last output and the summed loss and stats."""
    coords, labels = first_prompt(rng, gt_np, kind, feat.device)
    multimask = labels.shape[1] == 1 if first_multimask is None else first_multimask
    out = decode(model, feat, high_res, coords, labels, None, multimask=multimask)
    loss, stats = sam_loss(out, gt)
    if refine:
        coords, labels = _add_clicks(rng, coords, labels, _np_masks(out.low_res_masks, model),
                                     gt_np)
        prev = out.low_res_masks.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
        out = decode(model, feat, high_res, coords, labels, prev, multimask=False)
        loss2, stats2 = sam_loss(out, gt)
        loss = loss + loss2
        stats = {k: (stats[k] + stats2[k]) / 2 for k in stats}
    return out, loss, stats


def image_step(rng, model, batch: ImageBatch, amp) -> tuple[torch.Tensor, dict]:
    device = model.no_mem_embed.device
    with amp():
        feats = model.encode_image(normalise(batch.images, device))
    idx = batch.index.to(device)
    feat = model.add_no_memory(feats.feat[idx])
    high_res = [h[idx] for h in feats.high_res]
    gt = torch.from_numpy(batch.gt).to(device).float()[:, None]
    kinds = np.where(rng.random(len(idx)) < 0.65, "click", "box")
    total, stats = 0.0, {}
    for kind in ("click", "box"):
        sel = np.nonzero(kinds == kind)[0]
        if len(sel) == 0:
            continue
        s = torch.from_numpy(sel).to(device)
        with amp():
            _, loss, st = prompt_and_refine(rng, model, feat[s], [h[s] for h in high_res],
                                            batch.gt[sel], gt[s], kind, refine=True)
        total = total + loss * len(sel) / len(idx)
        _add_stats(stats, st, len(sel) / len(idx))
    return total, stats


class TrainRuntime:
    """The runtime interface (engine/runtime/base.py) over a ``SAM2Model`` being trained, for
    ``TrackingStep``: gradients kept, the model left in its mode, and ``decode`` returning
    ``Decoded`` (the raw candidates the losses need). ``low_precision``: the image encoder and
    the memory attention under bfloat16 autocast, as the torch runtime's bf16 precision runs
    them (engine/runtime/torch_runtime.py); everything else in fp32."""

    name = "train"

    def __init__(self, model: SAM2Model, low_precision: bool = False) -> None:
        self.model = model
        self.glue = model
        self.cfg = model.cfg
        self.device = model.no_mem_embed.device
        self.low_precision = low_precision

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.low_precision)

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        with self._amp():
            f = self.model.encode_image(image)
        return ImageFeatures(f.feat.float(), f.pos.float(), [t.float() for t in f.high_res])

    def attend_memory(self, feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                      memory_valid=None) -> torch.Tensor:
        with self._amp():
            out = self.model.attend_memory(feat, pos, memory, memory_pos, num_obj_ptr_tokens,
                                           memory_valid)
        return out.float()

    def decode(self, feat, high_res, point_coords, point_labels, mask_logits,
               multimask: bool) -> Decoded:
        return decode(self.model, feat, high_res, point_coords, point_labels, mask_logits,
                      multimask)

    def decode_mask_prompt(self, feat, high_res, mask) -> DecoderOutput:
        return self.model.decode_mask_prompt(feat, high_res, mask)

    def encode_memory(self, feat, mask_logits_high_res, object_score_logits):
        return self.model.encode_memory(feat, mask_logits_high_res, object_score_logits)

    def encode_prompt_memory(self, feat, mask_logits_high_res, object_score_logits):
        return self.model.encode_prompt_memory(feat, mask_logits_high_res, object_score_logits)


def memory_rule(cfg: TrainConfig, model_cfg: ModelConfig) -> float | None:
    """The admission rule the clip stage trains with (``TrainConfig.memory_rule``)."""
    from ..config import parse_memory_rule

    rule = parse_memory_rule(cfg.memory_rule)
    return model_cfg.memory_min_iou if rule == "model" else rule


def reacquire_weights(visible: np.ndarray, frames: int, extra: float) -> np.ndarray:
    """(N, T) visibility -> (N, T) loss weights: 1, and ``1 + extra`` on the ``frames`` frames
    from each one where an object is back in view after at least one frame out of it."""
    weights = np.ones(visible.shape, np.float32)
    if extra <= 0 or frames <= 0:
        return weights
    back = visible[:, 1:] & ~visible[:, :-1]  # (N, T-1): in view at t+1, not at t
    for n, t in zip(*np.nonzero(back)):
        weights[n, t + 1:t + 1 + frames] = 1.0 + extra
    return weights


def _drop_recent(selection: MemorySelection) -> MemorySelection:
    """The prompted frames' spatial memories (slot 0) and every pointer: no recent memories."""
    return MemorySelection([(f, k) for f, k in selection.spatial if k == 0],
                           selection.pointers)


def _detach_banks(banks: list[MemoryBank]) -> None:
    for bank in banks:
        bank.detach()


@dataclass
class ClipResult:
    """What a clip step leaves: the mean loss of its trained frames (detached), the mean of
    each statistic, and, per frame, the objects' chosen low-res mask logits (N, 1, 4h, 4w)
    and the banks (for checks against the tracker)."""

    loss: torch.Tensor
    stats: dict
    masks: list[torch.Tensor]
    banks: list[MemoryBank]


def clip_step(rng, model: SAM2Model, batch: ClipBatch, runtime: TrainRuntime,
              cfg: TrainConfig, kind: str | None = None,
              prompts: tuple[torch.Tensor, torch.Tensor] | None = None) -> ClipResult:
    """One clip batch through the tracker's own step (``TrackingStep``): frame 0 prompted,
    later frames tracked from the banks it fills, with the admission rule of
    ``cfg.memory_rule``. Under gradients, the loss (the mean over the trained frames, those
    after ``batch.burn_in``) is backpropagated here, every ``cfg.tbptt`` frames and at the end,
    the banks cut from the graph after each backward pass (their contents stay).

    ``kind`` ("click", "box" or "mask") and ``prompts`` (coords, labels in model pixels) fix
    frame 0's prompt (default: drawn), for checks; ``cfg.correct_rate`` and
    ``cfg.recent_drop`` 0 make the step exactly the tracker's."""
    device = runtime.device
    n, t_len = batch.frame_of.shape
    burn_in = batch.burn_in
    step = TrackingStep(runtime, MAX_COND_FRAMES, memory_rule(cfg, model.cfg), MEMORY_DTYPE)
    images = normalise(batch.images, device)
    frame_of = batch.frame_of.to(device)
    grad = torch.is_grad_enabled()
    frozen = not any(p.requires_grad for p in model.image_encoder.parameters())
    if frozen:  # every frame once, without gradients
        with torch.no_grad():
            parts = [runtime.encode_image(images[i:i + ENCODE_CHUNK])
                     for i in range(0, len(images), ENCODE_CHUNK)]
        feats = ImageFeatures(torch.cat([p.feat for p in parts]),
                              torch.cat([p.pos for p in parts]),
                              [torch.cat([p.high_res[k] for p in parts]) for k in range(2)])

    def features(t: int) -> ImageFeatures:
        idx = frame_of[:, t]
        if frozen:
            return ImageFeatures(feats.feat[idx], feats.pos[idx], [h[idx] for h in feats.high_res])
        return runtime.encode_image(images[idx])

    gt_host = batch.gt.numpy() if isinstance(batch.gt, torch.Tensor) else batch.gt
    gt_dev = torch.from_numpy(np.ascontiguousarray(gt_host)).to(device)
    weights = torch.from_numpy(reacquire_weights(gt_host.reshape(n, t_len, -1).any(-1),
                                                 cfg.reacquire_frames,
                                                 cfg.reacquire_weight)).to(device)
    banks = [step.new_bank() for _ in range(n)]
    kind = kind or str(rng.choice(["click", "box", "mask"], p=[0.55, 0.25, 0.2]))
    correct_at = (int(rng.integers(max(1, burn_in), t_len))
                  if t_len > max(1, burn_in) and rng.random() < cfg.correct_rate else -1)
    trained = max(t_len - burn_in, 1)
    total, stats, terms = torch.zeros((), device=device), {}, 0
    masks: list[torch.Tensor] = []

    def frame(t: int):
        """Frame t's summed loss (None without one); its masks appended to ``masks``."""
        nonlocal terms
        ft = features(t)
        gt, gt_np = gt_dev[:, t, None].float(), gt_host[:, t]
        losses = []
        if t == 0:
            if kind == "mask":  # the mask is the output; the decoder only makes the pointer
                out = step.prompt(ft, banks, 0, True, mask=gt)
                masks.append(out.low_res_masks.detach())
                return None
            coords, labels = prompts or first_prompt(rng, gt_np, kind, device)
            out = step.prompt(ft, banks, 0, True, coords, labels)
            losses.append(sam_loss(out, gt))
            if prompts is None and rng.random() < 0.5:  # refined by a corrective click
                coords, labels = _add_clicks(rng, coords, labels,
                                             _np_masks(out.low_res_masks, model), gt_np)
                out = step.prompt(ft, banks, 0, True, coords, labels,
                                  out.low_res_masks.detach())
                losses.append(sam_loss(out, gt))
        else:
            drop = cfg.recent_drop and rng.random() < cfg.recent_drop
            out, _ = step.track(ft, banks, t,
                                (lambda b, i: _drop_recent(b.select(i))) if drop else None)
            losses.append(sam_loss(out, gt, cfg.absent_weight, weights[:, t],
                                   cfg.presence_on_target, cfg.off_target_weight))
            if t == correct_at:  # a corrective click makes this a prompted frame
                coords = ft.feat.new_zeros(n, 0, 2)
                labels = torch.zeros(n, 0, dtype=torch.int32, device=device)
                coords, labels = _add_clicks(rng, coords, labels,
                                             _np_masks(out.low_res_masks, model), gt_np)
                out = step.prompt(ft, banks, t, False, coords, labels,
                                  out.low_res_masks.detach())
                losses.append(sam_loss(out, gt, cfg.absent_weight, weights[:, t]))
        masks.append(out.low_res_masks.detach())
        if t < burn_in:
            return None
        for _, st in losses:
            _add_stats(stats, st)
        terms += len(losses)
        return sum(loss for loss, _ in losses)

    window = None
    for t in range(t_len):
        if t == burn_in and t > 0:  # encodings tabulated without gradients: again, with them
            step.refresh_encodings()
        with torch.set_grad_enabled(grad and t >= burn_in):
            loss = frame(t)
        if loss is not None:
            window = loss if window is None else window + loss
        end = t == t_len - 1 or (cfg.tbptt > 0 and t >= burn_in
                                 and (t - burn_in + 1) % cfg.tbptt == 0)
        if end and window is not None:
            total = total + window.detach()
            if grad and window.requires_grad:
                (window / trained).backward()
                _detach_banks(banks)
                step.refresh_encodings()
            window = None
    return ClipResult(total / trained, {k: v / max(terms, 1) for k, v in stats.items()},
                      masks, banks)


@torch.no_grad()
def match_memory_attention_output(model: SAM2Model, images: torch.Tensor) -> None:
    """Data-dependent init of the memory attention's final LayerNorm, before the clip stage:
    its (per-token normalised) output is rescaled to the scale and per-channel offsets of the
    raw frame features the image stage trained the decoder on. At this point the attention
    layers add little to their residual stream, so conditioned features start out close to the
    raw ones, and the decoder only has to learn what the memory adds."""
    tok = model.encode_image(images).feat.flatten(2).transpose(1, 2)  # (B, hw, C)
    mean, std = tok.mean(-1, keepdim=True), tok.std(-1, keepdim=True, unbiased=False)
    scale = std.mean()
    norm = model.memory_attention.norm
    norm.weight.fill_(float(scale))
    norm.bias.copy_((tok - scale * (tok - mean) / std.clamp_min(1e-6)).mean((0, 1)))


@torch.no_grad()
def init_memory_locality(model: SAM2Model, pairs: int = 8, strength: float = 3.0) -> None:
    """Give the memory cross-attention a locality prior at the start of the clip stage.

    RoPE makes the dot product of two *constant* vectors depend only on the offset between
    query and key. Setting the query and key biases to ``strength`` on the ``pairs``
    highest-frequency channel pairs of each axis makes every frame cell attend, at first,
    to the same cell (and its neighbours) of each remembered frame: the mask the memory holds
    there reaches the right place from the first step, instead of being averaged over the whole
    bank by near-uniform attention, which learns very slowly on this budget. Content terms
    take over as the weights train."""
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        head_dim = attn.internal_dim // attn.num_heads
        quarter = head_dim // 4  # frequencies per axis; channels: x pairs, then y pairs
        bias = torch.zeros(head_dim)
        for j in range(min(pairs, quarter)):
            for base in (0, head_dim // 2):
                bias[base + 2 * j: base + 2 * j + 2] = strength
        full = bias.repeat(attn.num_heads)
        attn.q_proj.bias.copy_(full)
        attn.k_proj.bias.copy_(full)


# -------------------------------------------------------------------------- driver
def _lr_at(step: int, steps: int, base: float, warmup: int, progress: float | None = None) -> float:
    """Linear warm-up, then a cosine down to 5% of ``base``; ``progress`` (0..1) overrides
    ``step / steps`` for the cosine (a run under a time limit)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, steps - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


# Parts the image stage trains; everything else (memory encoder and attention, pointer
# projections, temporal encodings, no-object embeddings) first learns in the clip stage.
IMAGE_STAGE_PARTS = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")


def _optimizer(model: SAM2Model, cfg: TrainConfig, lr: float,
               pretrained_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW, no weight decay on vectors; parts already trained by the image stage get
    ``pretrained_scale`` times the learning rate (group key "scale")."""
    groups = []
    for pretrained in (True, False):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad
                 and n.startswith(IMAGE_STAGE_PARTS) == pretrained]
        scale = pretrained_scale if pretrained else 1.0
        groups += [{"params": [p for _, p in named if p.ndim >= 2], "scale": scale,
                    "weight_decay": cfg.weight_decay},
                   {"params": [p for _, p in named if p.ndim < 2], "scale": scale,
                    "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def save_checkpoint(model: SAM2Model, path: Path) -> None:
    """Meta's format: {"model": state_dict}, fp32 tensors only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": state}, tmp)
    tmp.replace(path)


def check_config(cfg: TrainConfig) -> None:
    """Options that cannot work, named with what is expected."""
    from ..config import parse_memory_rule

    if cfg.world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {cfg.world!r}")
    parse_memory_rule(cfg.memory_rule)
    for name in ("clip_batch", "clip_len", "image_batch", "objects_per_clip",
                 "objects_per_image"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.tbptt < 0 or cfg.burn_in < 0:
        raise ValueError("tbptt and burn_in must be >= 0")
    if cfg.off_target_weight < 0 or (cfg.off_target_weight != 1.0
                                     and cfg.presence_on_target <= 0):
        raise ValueError("off_target_weight must be >= 0 and needs presence_on_target > 0 "
                         "(which says when a mask is off the target), got "
                         f"{cfg.off_target_weight} with {cfg.presence_on_target}")


def _next_step_s(durations) -> float:
    """Time to keep for one more step and the final save: 1.5 times the median of the recent
    steps (the first step of a stage, which waits for the workers to start, left out once
    others are known), plus 5 s."""
    recent = sorted(list(durations)[1:] or durations)
    return 1.5 * recent[len(recent) // 2] + 5.0


@torch.enable_grad()  # also when called from code that turned gradients off
def train(cfg: TrainConfig, model_cfg: ModelConfig, out: Path, work: Path, device: str,
          resume: bool = False, log=print, bf16: bool | None = None,
          init: Path | None = None, workers: int = 0,
          time_limit_s: float = 0.0) -> SAM2Model:
    """Run both stages (a stage with 0 steps is skipped); ``init``: start from these weights
    (a checkpoint in the official format). ``bf16`` autocast defaults to on for CUDA, off for
    the CPU (where the casts cost more than they save at these sizes). ``workers``: processes
    drawing the batches ahead (0: drawn here; they are spawned, so a script that calls this
    with workers needs the ``if __name__ == "__main__":`` guard). ``time_limit_s`` > 0: stop
    before this many seconds from the call, saving the checkpoint and the state ``resume``
    continues from."""
    t0 = time.time()
    check_config(cfg)
    torch.manual_seed(cfg.seed)
    model = SAM2Model(model_cfg).to(device).train()
    if init is not None:
        from ..checkpoint import load_weights, read_state_dict

        load_weights(model, read_state_dict(init, expected=model_cfg.name), init, model_cfg)
        log(f"initialised from {init}")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if kind == "cuda":  # fp32 parts: TF32 products
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    use_bf16 = kind == "cuda" if bf16 is None else bf16
    amp = lambda: torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731
    runtime = TrainRuntime(model, low_precision=use_bf16)
    stages = [("image", cfg.image_steps, cfg.image_lr), ("clip", cfg.clip_steps, cfg.clip_lr)]
    state_file = work / "train_state.pt"
    start_stage, start_step = 0, 0
    saved = None
    if resume and state_file.is_file():
        saved = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        start_stage, start_step = saved["stage"], saved["step"]
        log(f"resumed at stage {stages[start_stage][0]} step {start_step}")
    deadline = t0 + time_limit_s if time_limit_s > 0 else None
    stopped = False
    for si, (name, steps, base_lr) in enumerate(stages):
        if si < start_stage or steps == 0:
            continue
        if name == "clip" and cfg.freeze_encoder_in_clips:
            model.image_encoder.requires_grad_(False)
            model.sam_mask_decoder.conv_s0.requires_grad_(False)
            model.sam_mask_decoder.conv_s1.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _optimizer(model, cfg, base_lr,
                         cfg.pretrained_lr_scale if name == "clip" else 1.0)
        first = start_step if si == start_stage else 0
        if name == "clip" and first == 0 and cfg.memory_init:
            probe = sample_clip_batch(np.random.default_rng([cfg.seed, si, 1 << 30]), cfg,
                                      model_cfg.image_size)
            match_memory_attention_output(model, normalise(probe.images, device))
            init_memory_locality(model)
        if saved is not None and si == start_stage and "opt" in saved:
            opt.load_state_dict(saved["opt"])

        def save_state(next_step: int) -> None:
            work.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "stage": si,
                        "step": next_step}, state_file)
            save_checkpoint(model, out)

        durations: deque = deque(maxlen=8)
        stage_t0, waited, done = time.time(), 0.0, 0
        with Batches(name, cfg, model_cfg.image_size, si, first, workers) as batches:
            for step in range(first, steps):
                if deadline is not None and durations and \
                        time.time() + _next_step_s(durations) > deadline:
                    stopped = True
                    break
                began = time.time()
                progress = None
                if deadline is not None:  # whichever runs out first: steps or time
                    progress = max((step - cfg.warmup) / max(1, steps - cfg.warmup),
                                   (began - t0) / time_limit_s)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, steps, base_lr, cfg.warmup, progress) * g["scale"]
                batch = batches.get()
                waited += time.time() - began
                rng = np.random.default_rng([cfg.seed, si, step, 1])
                opt.zero_grad(set_to_none=True)
                if name == "image":
                    loss, stats = image_step(rng, model, batch, amp)
                    loss.backward()
                else:
                    result = clip_step(rng, model, batch, runtime, cfg)
                    loss, stats = result.loss, result.stats
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                done += 1
                durations.append(time.time() - began)
                if step % cfg.log_every == 0 or step == steps - 1:
                    parts = " ".join(f"{k} {float(v):.4f}" for k, v in stats.items())
                    spent = time.time() - stage_t0
                    frames = f" frames {batch.frame_of.shape[1]}" if name == "clip" else ""
                    log(f"{name} {step:5d}/{steps} loss {float(loss.detach()):.4f} {parts} "
                        f"gnorm {float(gnorm):.2f} lr {opt.param_groups[-1]['lr']:.2e}{frames} "
                        f"steps/s {done / spent:.3f} data-wait {waited / spent:.0%} "
                        f"elapsed {time.time() - t0:7.0f}s")
                if (step + 1) % cfg.save_every == 0 or step == steps - 1:
                    save_state(step + 1)
        if stopped:
            save_state(step)
            log(f"time limit: stopped before {name} step {step} of {steps} "
                f"({done} steps in {time.time() - stage_t0:.0f}s); --resume continues")
            break
        start_step = 0
    save_checkpoint(model, out)
    log(f"done in {time.time() - t0:.0f}s; wrote {out}")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("engine/weights/sam2_ros_compact.pt"))
    p.add_argument("--work-dir", type=Path, default=Path("build/train"),
                   help="training state for --resume")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (e.g. the image stage's output)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda[:N]")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (torch.set_num_threads); on a shared CPU 1 is fastest")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bfloat16 autocast (auto: on for CUDA only)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes drawing batches ahead of the training loop (0: none)")
    p.add_argument("--time-limit-s", type=float, default=0.0,
                   help="stop cleanly before this many seconds, saving checkpoint and state")
    p.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    for f, v in asdict(TrainConfig()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes", "on")) if isinstance(v, bool) \
            else type(v)
        p.add_argument("--" + f.replace("_", "-"), type=kind, default=v)
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    try:
        check_config(cfg)
    except ValueError as e:
        p.error(str(e))
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    log_file = None
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        log_file = args.log.open("a")

    def log(line: str) -> None:
        print(line, flush=True)
        if log_file is not None:
            log_file.write(line + "\n")
            log_file.flush()

    log(f"training {COMPACT.name} on {device} ({args.workers} data workers, time limit "
        f"{args.time_limit_s or 'none'}): {cfg}")
    bf16 = None if args.bf16 == "auto" else args.bf16 == "on"
    try:
        train(cfg, COMPACT, args.out, args.work_dir, device, args.resume, log=log, bf16=bf16,
              init=args.init, workers=args.workers, time_limit_s=args.time_limit_s)
    finally:
        if log_file is not None:
            log_file.close()


if __name__ == "__main__":
    main()
