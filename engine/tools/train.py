"""Train the project's compact SAM 2 model (``engine.config.COMPACT``) on the synthetic world.

Trained as SAM 2 is, in two stages, with scenes drawn on the fly by ``engine.tools.synthetic`` from a
seed range disjoint from the benchmark's (``TRAIN_SEED_BASE``):

1. **images**: image encoder + prompt encoder + mask decoder on single frames. Each object gets
   a click or a box, then one corrective click on its largest error (with the previous mask
   logits fed back, as the tracker refines). Losses: focal + dice on the masks (the best of the
   three candidates when there are three), L1 on the predicted IoU of every candidate, BCE on
   object presence.
2. **clips**: short clips through the memory path, chained from ``SAM2Model``'s per-frame
   methods exactly as ``engine.tracker`` chains them (same ``MemoryBank`` selection, temporal
   slots and pointer encodings), but differentiably. Frame 0 is prompted (click, box or mask);
   later frames are tracked from memory; sometimes one frame gets a corrective click and
   becomes a prompted frame. Clips contain occlusions, exits and look-alikes, so absent frames
   train the presence head and re-acquisition. The image encoder stays frozen; the decoder and
   prompt encoder learn at 0.3 times the rate of the parts that are new in this stage. Two
   initialisations make the new memory path learn within a CPU budget (see
   ``match_memory_attention_output`` and ``init_memory_locality``).

    python -m engine.tools.train --out engine/weights/sam2_ros_compact.pt --seed 0   # both stages

or one stage at a time (``--clip-steps 0``, then ``--init <image stage> --image-steps 0``);
engine/weights/TRAINING.md records the commands that made the bundled weights.

Runs on CUDA when available (``--device``; bfloat16 autocast there), else on the CPU in fp32
with one thread by default (on a CPU shared with other jobs, more threads spin and slow
down). Writes the checkpoint in Meta's format (``{"model": state_dict}``), so
``engine.checkpoint`` loads it strictly.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..config import COMPACT, ModelConfig
from ..memory_bank import MemoryBank, MemoryEntry, MemorySelection
from ..model.sam2 import NO_OBJ_SCORE, SAM2Model
from .synthetic import TRAIN_SEED_BASE, Exit, Occlusion, Scene

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREV_LOGITS_CLAMP = 32.0  # as the tracker clamps fed-back logits
# SAM 2's loss weights (sam2.1 training config): focal x20, dice x1, IoU x1, presence x1.
W_FOCAL, W_DICE, W_IOU, W_PRESENCE = 20.0, 1.0, 1.0, 1.0
FRAME_SIZES = ((320, 240), (320, 240), (256, 256), (320, 180), (240, 240))


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    image_steps: int = 2000
    clip_steps: int = 2000
    image_batch: int = 8  # frames per image step
    objects_per_image: int = 3
    clip_batch: int = 2  # clips per clip step
    clip_len: int = 6
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


# ---------------------------------------------------------------------------- data
def _preprocess(frames: list[np.ndarray], size: int, device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frames -> (B, 3, S, S) normalised, as ``StreamingTracker`` does."""
    out = []
    for frame in frames:
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False,
                                  antialias=True)
        out.append(image)
    x = torch.cat(out).to(device).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def _mask_to_model(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (S, S) bool, resized as ``engine.prompts`` resizes mask prompts."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return (t[0, 0] >= 0.5).numpy()


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


def _targets(masks: dict[int, np.ndarray], min_area: int) -> list[int]:
    """Ids that can be prompted: objects and look-alikes (not panels), visible enough."""
    return [k for k, m in masks.items() if k < 200 and int(m.sum()) >= min_area]


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, 3, S, S)
    index: torch.Tensor  # (N,) image of each object
    gt: np.ndarray  # (N, S, S) bool at model resolution


def sample_image_batch(rng, cfg: TrainConfig, size: int, device) -> ImageBatch:
    frames, index, gts = [], [], []
    while len(frames) < cfg.image_batch:
        t = int(rng.integers(0, 12))
        scene = random_scene(rng, span=4, start=t + 100)  # no scripted events in view
        for frame, masks in scene.frames(t + 1):
            pass
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
    return ImageBatch(_preprocess(frames, size, device), torch.tensor(index, device=device),
                      np.stack(gts))


@dataclass
class ClipBatch:
    images: torch.Tensor  # (B*T, 3, S, S), clip-major
    frame_of: torch.Tensor  # (N, T) image index of each object's frame t
    gt: np.ndarray  # (N, T, S, S) bool at model resolution


def sample_clip_batch(rng, cfg: TrainConfig, size: int, device, burn_in: int = 0) -> ClipBatch:
    """Clips of ``cfg.clip_len + burn_in`` frames."""
    frames, frame_of, gts = [], [], []
    t_len = cfg.clip_len + burn_in
    while len(frames) < cfg.clip_batch * t_len:
        stride = int(rng.integers(1, 4))
        start = int(rng.integers(0, 10))
        span = stride * (t_len - 1)
        scene = random_clip_scene(rng, span=span, start=start, event_rate=cfg.event_rate)
        wanted = [start + stride * i for i in range(t_len)]
        clip = [(f, m) for t, (f, m) in enumerate(scene.frames(wanted[-1] + 1)) if t in wanted]
        ids = _targets(clip[0][1], min_area=60)
        if not ids:
            continue
        # objects with a scripted event first (so absences are common), then object 1 when it
        # has look-alikes, then the others
        scripted = {e.target for e in scene.occlusions} | {e.target for e in scene.exit_schedule}
        copied = any(o.role == "distractor" for o in scene.objects)
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
    return ClipBatch(_preprocess(frames, size, device), torch.tensor(frame_of, device=device),
                     np.concatenate(gts))


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
class Decoded:
    """Decoder output for N objects, kept differentiable (masks not yet gated by presence)."""

    multimasks: torch.Tensor  # (N, M, 4h, 4w) raw logits
    ious: torch.Tensor  # (N, M)
    best: torch.Tensor  # (N,) chosen candidate (highest predicted IoU, as the tracker)
    low_res: torch.Tensor  # (N, 1, 4h, 4w) chosen, gated: absent -> NO_OBJ_SCORE
    obj_ptr: torch.Tensor  # (N, d)
    obj_logits: torch.Tensor  # (N, 1)


def decode(model: SAM2Model, feat, high_res, coords, labels, mask_logits, multimask) -> Decoded:
    """``SAM2Model.decode`` with the raw candidate logits kept for the losses."""
    out, raw, best = model.decode_candidates(feat, high_res, coords, labels, mask_logits,
                                             multimask)
    return Decoded(raw, out.ious, best, out.low_res_masks, out.obj_ptr, out.object_score_logits)


def sam_loss(model: SAM2Model, out: Decoded, gt: torch.Tensor,
             absent_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """SAM 2's loss for N objects: gt (N, 1, S, S) float; empty gt = object absent.
    Compared at half the input side L = S/2 (twice the decoder's resolution): soft
    (area-averaged) targets, logits upsampled bilinearly."""
    present = gt.flatten(1).any(1).float()  # (N,)
    gt = F.avg_pool2d(gt, 2)  # (N, 1, L, L) coverage in [0, 1]
    logits = F.interpolate(out.multimasks.float(), size=gt.shape[-2:], mode="bilinear",
                           align_corners=False)  # (N, M, L, L)
    focal, dice = mask_losses(logits, gt)
    combo = W_FOCAL * focal + W_DICE * dice
    best = combo.argmin(dim=1)
    rows = torch.arange(len(best), device=gt.device)
    iou_err = (out.ious.float() - actual_iou(logits, gt)).abs().mean(1)
    denom = present.sum().clamp_min(1)
    loss_mask = (combo[rows, best] * present).sum() / denom
    loss_iou = (iou_err * present).sum() / denom
    weight = torch.where(present > 0, 1.0, absent_weight)
    loss_obj = (F.binary_cross_entropy_with_logits(out.obj_logits.float()[:, 0], present,
                                                   reduction="none") * weight).mean()
    total = loss_mask + W_IOU * loss_iou + W_PRESENCE * loss_obj
    with torch.no_grad():
        chosen = actual_iou(logits[rows, out.best].unsqueeze(1), gt)[:, 0]
        stats = {"mask": float(loss_mask), "iou_l1": float(loss_iou), "obj": float(loss_obj),
                 "J": float((chosen * present).sum() / denom),
                 "obj_acc": float(((out.obj_logits[:, 0] > 0).float() == present).float().mean())}
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


def use_multimask(cfg: ModelConfig, initial: bool, num_points: int) -> bool:
    """SAM 2's rule for three candidate masks, as the tracker applies it (``_multimask``)."""
    return (cfg.multimask_output_in_sam and (initial or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)


def prompt_and_refine(rng, model, feat, high_res, gt_np, gt, kind: str, refine: bool,
                      first_multimask: bool | None = None):
    """Decode a first click/box prompt, then (optionally) one corrective click.
    ``first_multimask`` None: three candidates for a single click (the image stage trains all
    four mask tokens, as SAM does). Returns the last output and the summed loss and stats."""
    coords, labels = first_prompt(rng, gt_np, kind, feat.device)
    multimask = labels.shape[1] == 1 if first_multimask is None else first_multimask
    out = decode(model, feat, high_res, coords, labels, None, multimask=multimask)
    loss, stats = sam_loss(model, out, gt)
    if refine:
        coords, labels = _add_clicks(rng, coords, labels, _np_masks(out.low_res, model), gt_np)
        prev = out.low_res.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
        out = decode(model, feat, high_res, coords, labels, prev, multimask=False)
        loss2, stats2 = sam_loss(model, out, gt)
        loss = loss + loss2
        stats = {k: (stats[k] + stats2[k]) / 2 for k in stats}
    return out, loss, stats


def image_step(rng, model, batch: ImageBatch, amp) -> tuple[torch.Tensor, dict]:
    with amp():
        feats = model.encode_image(batch.images)
    idx = batch.index
    feat = model.add_no_memory(feats.feat[idx])
    high_res = [h[idx] for h in feats.high_res]
    gt = torch.from_numpy(batch.gt).to(feat.device).float()[:, None]
    kinds = np.where(rng.random(len(idx)) < 0.65, "click", "box")
    total, stats, parts = 0.0, {}, 0
    for kind in ("click", "box"):
        sel = np.nonzero(kinds == kind)[0]
        if len(sel) == 0:
            continue
        s = torch.from_numpy(sel).to(feat.device)
        with amp():
            _, loss, st = prompt_and_refine(rng, model, feat[s], [h[s] for h in high_res],
                                            batch.gt[sel], gt[s], kind, refine=True)
        total = total + loss * len(sel) / len(idx)
        for k, v in st.items():
            stats[k] = stats.get(k, 0.0) + v * len(sel) / len(idx)
        parts += 1
    return total, stats


def _assemble(model: SAM2Model, banks: list[MemoryBank], t: int, pos_table: torch.Tensor,
              recent: bool = True):
    """Memory tokens of N objects whose banks have the same layout (as the tracker's
    ``_assemble``, differentiable): tokens, pos (N, M, 64) and the pointer-token count.
    ``recent=False`` leaves out the recent frames' spatial memories (slots other than 0)."""
    sels = [b.select(t) for b in banks]
    if not recent:
        sels = [MemorySelection([(f, k) for f, k in s.spatial if k == 0], s.pointers)
                for s in sels]
    spatial = torch.stack([torch.cat([f.float() for f, _ in s.spatial]) for s in sels])
    spatial_pos = torch.cat([pos_table[slot] for _, slot in sels[0].spatial])
    ptrs = torch.stack([torch.stack([p.float() for p, _ in s.pointers]) for s in sels])
    ago = torch.tensor([a for _, a in sels[0].pointers], device=spatial.device)
    ptr_pos = model.pointer_pos(ago, model.cfg.max_obj_ptrs)
    ptr_tokens, ptr_tok_pos = model.pointer_tokens(ptrs, ptr_pos)
    n = spatial.shape[0]
    tokens = torch.cat([spatial, ptr_tokens.float()], 1)
    pos = torch.cat([spatial_pos[None].expand(n, -1, -1).float(), ptr_tok_pos.float()], 1)
    return tokens, pos, ptr_tokens.shape[1]


def _store(banks, t: int, mem: torch.Tensor, ptr: torch.Tensor, prompted: bool) -> None:
    """Memories (N, 64, h, w) and pointers (N, d) of frame t into each object's bank."""
    feats = mem.flatten(2).transpose(1, 2)  # (N, 64, h, w) -> (N, hw, 64)
    for i, bank in enumerate(banks):
        entry = MemoryEntry(t, feats[i], ptr[i])
        bank.add_prompted(entry) if prompted else bank.add_tracked(entry)


def clip_step(rng, model, batch: ClipBatch, amp, absent_weight: float = 1.0,
              correct_rate: float = 0.3, burn_in: int = 0,
              recent_drop: float = 0.0) -> tuple[torch.Tensor, dict]:
    """One clip batch through the memory path; the loss is the mean over its trained frames.

    With ``burn_in`` > 0 the first ``burn_in`` frames (the prompted frame 0 among them) are
    tracked without gradients or losses, so the trained frames condition on a memory bank
    full of the model's own earlier outputs, drift included, as on a long stream; they cost
    a forward pass each. ``recent_drop``: the chance that a tracked frame attends to the
    prompted frames' spatial memories and the object pointers only."""
    cfg = model.cfg
    frozen = not any(p.requires_grad for p in model.image_encoder.parameters())
    with torch.set_grad_enabled(not frozen), amp():
        feats = model.encode_image(batch.images)
    n, t_len = batch.frame_of.shape
    gt_all = torch.from_numpy(batch.gt).to(feats.feat.device).float()  # (N, T, S, S)
    banks = [MemoryBank(cfg.num_maskmem, cfg.max_obj_ptrs, 4) for _ in range(n)]
    total, stats, count = 0.0, {}, 0

    def add(loss, st):
        nonlocal total, count
        if not torch.is_grad_enabled():  # a burn-in frame: no loss
            return
        total = total + loss
        count += 1
        for k, v in st.items():
            stats[k] = stats.get(k, 0.0) + v

    pos_table = None
    kind = rng.choice(["click", "box", "mask"], p=[0.55, 0.25, 0.2])
    correct_at = int(rng.integers(max(1, burn_in), t_len)) if rng.random() < correct_rate else -1

    def frame(t: int) -> None:
        nonlocal pos_table
        idx = batch.frame_of[:, t]
        feat, pos = feats.feat[idx], feats.pos[idx]
        high_res = [h[idx] for h in feats.high_res]
        gt, gt_np = gt_all[:, t, None], batch.gt[:, t]
        if t == 0:
            if kind == "mask":  # the mask is the output; the decoder only makes the pointer
                given = model.decode_mask_prompt(feat, high_res, gt)
                out = Decoded(given.low_res_multimasks, given.ious,
                              torch.zeros_like(given.ious[:, 0], dtype=torch.long),
                              given.low_res_masks, given.obj_ptr, given.object_score_logits)
            else:
                multi = use_multimask(cfg, True, 1 if kind == "click" else 2)
                out, loss, st = prompt_and_refine(rng, model, model.add_no_memory(feat),
                                                  high_res, gt_np, gt, kind,
                                                  refine=rng.random() < 0.5,
                                                  first_multimask=multi)
                add(loss, st)
            mem, mpos = model.encode_prompt_memory(feat, model.upscale_masks(out.low_res),
                                                   out.obj_logits)
            if pos_table is None:
                pos_table = torch.cat([model.spatial_memory_pos(mpos[:1], s)
                                       for s in range(cfg.num_maskmem)])
            _store(banks, t, mem, out.obj_ptr, prompted=True)
            return
        recent = not (recent_drop and rng.random() < recent_drop)
        tokens, mem_pos, n_ptr = _assemble(model, banks, t, pos_table, recent)
        cond = model.attend_memory(feat, pos, tokens, mem_pos, n_ptr)
        out = decode(model, cond, high_res, None, None, None,
                     multimask=use_multimask(cfg, False, 0))
        loss, st = sam_loss(model, out, gt, absent_weight)
        add(loss, st)
        if t == correct_at:  # a corrective click makes this a prompted frame
            coords = feat.new_zeros(n, 0, 2)
            labels = torch.zeros(n, 0, dtype=torch.int32, device=feat.device)
            coords, labels = _add_clicks(rng, coords, labels, _np_masks(out.low_res, model),
                                         gt_np)
            prev = out.low_res.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
            out = decode(model, cond, high_res, coords, labels, prev,
                         multimask=use_multimask(cfg, False, 1))
            loss, st = sam_loss(model, out, gt, absent_weight)
            add(loss, st)
            mem, _ = model.encode_prompt_memory(feat, model.upscale_masks(out.low_res),
                                                out.obj_logits)
            _store(banks, t, mem, out.obj_ptr, prompted=True)
        else:
            mem, _ = model.encode_memory(feat, model.upscale_masks(out.low_res),
                                         out.obj_logits)
            _store(banks, t, mem, out.obj_ptr, prompted=False)

    with amp():
        for t in range(t_len):
            with torch.set_grad_enabled(t >= burn_in):
                frame(t)
    with torch.enable_grad():  # the trained frames' graph, whatever the caller's grad mode
        return total / max(count, 1), {k: v / max(count, 1) for k, v in stats.items()}


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
def _lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
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


@torch.enable_grad()  # also when called from code that turned gradients off
def train(cfg: TrainConfig, model_cfg: ModelConfig, out: Path, work: Path, device: str,
          resume: bool = False, log=print, bf16: bool | None = None,
          init: Path | None = None) -> SAM2Model:
    """Run both stages (a stage with 0 steps is skipped); ``init``: start from these weights
    (a checkpoint in the official format). ``bf16`` autocast defaults to on for CUDA, off for
    the CPU (where the casts cost more than they save at these sizes)."""
    torch.manual_seed(cfg.seed)
    model = SAM2Model(model_cfg).to(device).train()
    if init is not None:
        from ..checkpoint import load_weights, read_state_dict

        load_weights(model, read_state_dict(init, expected=model_cfg.name), init, model_cfg)
        log(f"initialised from {init}")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    use_bf16 = kind == "cuda" if bf16 is None else bf16
    amp = lambda: torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731
    stages = [("image", cfg.image_steps, cfg.image_lr), ("clip", cfg.clip_steps, cfg.clip_lr)]
    state_file = work / "train_state.pt"
    start_stage, start_step = 0, 0
    saved = None
    if resume and state_file.is_file():
        saved = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        start_stage, start_step = saved["stage"], saved["step"]
        log(f"resumed at stage {stages[start_stage][0]} step {start_step}")
    t0 = time.time()
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
                                      model_cfg.image_size, device)
            match_memory_attention_output(model, probe.images)
            init_memory_locality(model)
        if saved is not None and si == start_stage and "opt" in saved:
            opt.load_state_dict(saved["opt"])
        for step in range(first, steps):
            rng = np.random.default_rng([cfg.seed, si, step])  # data depend on (seed, stage, step)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, base_lr, cfg.warmup) * g["scale"]
            if name == "image":
                batch = sample_image_batch(rng, cfg, model_cfg.image_size, device)
                loss, stats = image_step(rng, model, batch, amp)
            else:
                burn_in = int(rng.integers(0, cfg.burn_in + 1)) if cfg.burn_in else 0
                batch = sample_clip_batch(rng, cfg, model_cfg.image_size, device, burn_in)
                loss, stats = clip_step(rng, model, batch, amp, cfg.absent_weight,
                                        cfg.correct_rate, burn_in, cfg.recent_drop)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if step % cfg.log_every == 0 or step == steps - 1:
                parts = " ".join(f"{k} {v:.4f}" for k, v in stats.items())
                log(f"{name} {step:5d}/{steps} loss {float(loss.detach()):.4f} {parts} "
                    f"gnorm {float(gnorm):.2f} lr {opt.param_groups[-1]['lr']:.2e} "
                    f"elapsed {time.time() - t0:7.0f}s")
            if (step + 1) % cfg.save_every == 0 or step == steps - 1:
                work.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "stage": si,
                            "step": step + 1}, state_file)
                save_checkpoint(model, out)
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
    for f, v in asdict(TrainConfig()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes", "on")) if isinstance(v, bool) \
            else type(v)
        p.add_argument("--" + f.replace("_", "-"), type=kind, default=v)
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    print(f"training {COMPACT.name} on {device}: {cfg}", flush=True)
    bf16 = None if args.bf16 == "auto" else args.bf16 == "on"
    train(cfg, COMPACT, args.out, args.work_dir, device, args.resume,
          log=lambda s: print(s, flush=True), bf16=bf16, init=args.init)


if __name__ == "__main__":
    main()
