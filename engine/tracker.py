"""Streaming SAM 2: follow prompted objects through a live stream, one frame at a time.

Per frame (``track``): the image encoder runs once; then every object, as one batch, attends to
its own memory bank, goes through the mask decoder and the memory encoder, and its bank takes
the new memory. Objects whose banks hold different numbers of memories are padded to a common
length and the padding is masked out of the attention. That computation is written once, in
``engine.tracking_step.TrackingStep``, which training (engine/tools/train.py) runs with
gradients: this class owns the objects, their interaction state and the current frame.

Prompts (``add_prompt``; ``apply_prompt`` takes one ``engine.prompts.Prompt``, or one already
checked) apply to the most recently tracked frame. A new object id starts a new
object there (decoded without memory, as SAM 2 does on an initial conditioning frame); more
clicks on an object refine it on that frame (clicks accumulate, the previous mask logits are fed
back). Either way the frame becomes a prompted (conditioning) frame of that object.

Behaviour follows SAM 2's video predictor (``sam2==1.1.0``) with these streaming choices:
frames are never read ahead; a frame's own result never conditions itself; object-pointer
temporal encodings are normalised by ``max_obj_ptrs - 1`` (the reference uses
``min(num_frames, max_obj_ptrs) - 1``: the same once a video has 16 frames); a refinement click
makes its frame a prompted frame (the reference's ``add_all_frames_to_correct_as_cond=True``);
small holes in masks are not filled (the reference fills them only with its CUDA extension).
Nothing is kept per processed frame beyond the fixed-capacity banks (see ``memory_bank``).

A tracker is driven by one thread at a time (the node calls it from its worker thread only:
frames and prompts are jobs of that one thread, sam2_ros/worker.py); it holds no lock.

One streaming policy goes beyond SAM 2 and is off for Meta's models: with ``memory_min_iou``
set (the model config's value by default; the project's compact model sets 0.5), a tracked
frame joins an object's memory only when the object is judged present and the decoder's IoU
estimate reaches the threshold, and the bank's recent memories are its last stored frames in
order (``MemoryBank(ordinal=True)``). Frames where the object is hidden, gone or misjudged then
neither push its last good views out of the bank nor teach it the wrong object.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import MAX_COND_FRAMES, ModelConfig
from .memory_layout import MemoryCapacity
from .memory_bank import MemoryBank
from .model.sam2 import DecoderOutput, ImageFeatures, SAM2Model
from .runtime import Runtime, TorchRuntime
from .errors import InputError, UnknownName
from .prompts import CheckedPrompt, Prompt, check_object_id, check_prompt
from .tracking_step import (IMAGENET_MEAN, IMAGENET_STD, MEMORY_DTYPE, MEMORY_DTYPES,
                            PREV_LOGITS_CLAMP, TrackingStep, normalise, resize_frame)

__all__ = ["FrameResult", "IMAGENET_MEAN", "IMAGENET_STD", "MEMORY_DTYPE", "MEMORY_DTYPES",
           "ObjectResult", "PREV_LOGITS_CLAMP", "StreamingTracker", "check_frame", "mask_box"]


@dataclass(frozen=True)
class ObjectResult:
    """One object on one frame.

    mask: (H, W) bool at the frame's resolution; presence: probability that the object is in
    the frame (sigmoid of ``presence_logit``); iou: the decoder's estimate of the mask's IoU;
    box: (x0, y0, x1, y1) inclusive pixel bounds of the mask, None when the mask is empty.
    """

    obj_id: int
    mask: np.ndarray
    presence: float
    presence_logit: float
    iou: float
    box: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class FrameResult:
    """Every tracked object on one frame (``frame_index`` counts ``track`` calls from 0)."""

    frame_index: int
    objects: dict[int, ObjectResult]


@dataclass(frozen=True)
class _Frame:
    """The most recently tracked frame: prompts apply to it."""

    index: int
    height: int
    width: int
    features: ImageFeatures  # batch 1


@dataclass(frozen=True)
class _FrameInputs:
    """An object's interaction state on one frame.

    initial: first prompted on this frame (decoded without memory); coords (1, N, 2) and
    labels (1, N): the clicks so far on this frame; logits (1, 1, 4h, 4w): its latest low-res
    mask logits on this frame (fed back with further clicks).
    """

    frame_index: int
    initial: bool
    coords: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class _Object:
    bank: MemoryBank
    inputs: _FrameInputs


def _check_capacity(runtime: Runtime, cfg: ModelConfig, max_cond_frames: int) -> None:
    """A graph runtime's fixed memory capacity must hold everything the banks can select."""
    have = getattr(runtime, "capacity", None)
    need = MemoryCapacity.for_bank(cfg, max_cond_frames)
    if have is not None and (have.spatial < need.spatial or have.pointers < need.pointers):
        raise InputError(
            f"the {runtime.name} runtime holds {have.spatial} spatial memories and "
            f"{have.pointers} object pointers, but max_cond_frames={max_cond_frames} needs "
            f"{need.spatial} and {need.pointers}: build it with "
            f"capacity=MemoryCapacity.for_bank(cfg, {max_cond_frames})")


class StreamingTracker:
    """SAM 2 video tracking over a live stream; see the module docstring."""

    def __init__(self, model: SAM2Model | None = None, max_objects: int = 16,
                 max_cond_frames: int = MAX_COND_FRAMES, runtime: Runtime | None = None,
                 memory_min_iou: float | None | str = "model",
                 memory_dtype: torch.dtype = MEMORY_DTYPE, clock=None) -> None:
        """``model``: the SAM2Model to run on the torch backend; with a ``runtime`` (which owns
        what it runs, engine/runtime/) it may be left out. ``clock``: an ``engine.timing``
        StageClock that times the pre- and postprocessing stages of each frame (the runtime's
        stages are timed by wrapping the runtime)."""
        self._clock = clock
        if runtime is None and model is None:
            raise InputError("StreamingTracker needs a model or a runtime")
        if runtime is not None and model is not None and model.cfg != runtime.cfg:
            raise InputError(f"the model ({model.cfg.name}, {model.cfg.image_size} px) is not "
                             f"the runtime's ({runtime.cfg.name}, {runtime.cfg.image_size} px)")
        cfg = runtime.cfg if runtime is not None else model.cfg
        if not isinstance(max_objects, int) or max_objects < 1:
            raise InputError(f"max_objects must be a positive integer, got {max_objects!r}")
        if memory_dtype not in MEMORY_DTYPES:
            raise InputError(f"memory_dtype must be one of {MEMORY_DTYPES}, got {memory_dtype!r}")
        self.memory_dtype = memory_dtype
        if memory_min_iou == "model":
            memory_min_iou = cfg.memory_min_iou
        elif memory_min_iou is not None and (isinstance(memory_min_iou, (bool, str))
                                             or not 0.0 <= memory_min_iou <= 1.0):
            raise InputError(f"memory_min_iou must be 'model', None or a number in [0, 1], "
                             f"got {memory_min_iou!r}")
        self.memory_min_iou = memory_min_iou
        self.runtime = runtime if runtime is not None else TorchRuntime(model.eval())
        self.glue = self.runtime.glue  # position encodings, pointer tokens, upscaling
        _check_capacity(self.runtime, cfg, max_cond_frames)
        self.cfg = cfg
        self.max_objects = max_objects
        self.max_cond_frames = max_cond_frames
        self.device = self.runtime.device
        # the per-frame computation and the memory policy (shared with training)
        self.step = TrackingStep(self.runtime, max_cond_frames, memory_min_iou, memory_dtype)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._objects: dict[int, _Object] = {}
        self._frame: _Frame | None = None
        self._next_index = 0
        self._new_bank()  # checks max_cond_frames now rather than at the first prompt

    @classmethod
    def from_checkpoint(cls, path: str | Path, model_name: str, image_size: int | None = None,
                        device: str | torch.device = "cpu", **kwargs) -> "StreamingTracker":
        """Load Meta's checkpoint ``path`` for model ``model_name`` (e.g. sam2.1_hiera_tiny)."""
        from .checkpoint import load_model

        return cls(load_model(path, model_name, image_size=image_size, device=device), **kwargs)

    # ----------------------------------------------------------------- public
    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def frame_index(self) -> int | None:
        """Index of the most recently tracked frame (None before the first)."""
        return None if self._frame is None else self._frame.index

    def bank(self, obj_id: int) -> MemoryBank:
        return self._object(obj_id).bank

    @torch.inference_mode()
    def mask_logits(self, obj_id: int) -> np.ndarray:
        """Object ``obj_id``'s mask logits on the current frame: (H, W) float32 at the frame's
        resolution, whose ``> 0`` is its mask (for soft masks or another threshold)."""
        self._require_frame()
        return self._to_frame(self._object(obj_id).inputs.logits)[0, 0].cpu().numpy()

    @torch.inference_mode()
    def track(self, frame: np.ndarray) -> FrameResult:
        """Track every object on ``frame``, an (H, W, 3) uint8 RGB image of any size."""
        with self._stage("preprocess"):
            image = self._preprocess(frame)
        height, width = frame.shape[:2]
        features = self.runtime.encode_image(image)
        self._frame = _Frame(self._next_index, height, width, features)
        self._next_index += 1
        ids = list(self._objects)
        if not ids:
            return FrameResult(self._frame.index, {})
        out = self._track_objects(ids)
        with self._stage("postprocess"):
            results = self._results(ids, out)
        return FrameResult(self._frame.index, results)

    def add_prompt(self, obj_id: int, points=None, labels=None, box=None,
                   mask=None) -> ObjectResult:
        """Prompt object ``obj_id`` on the current frame: clicks ``points`` (N, 2) as (x, y)
        pixels with ``labels`` (N,) 1/0, and/or a ``box`` (x0, y0, x1, y1), or a ``mask`` (H, W).
        A new id starts a new object; a known one is refined. Returns its result on this frame.
        The same as ``apply_prompt(obj_id, Prompt(points, labels, box, mask))``."""
        return self.apply_prompt(obj_id, Prompt(points, labels, box, mask))

    @torch.inference_mode()
    def apply_prompt(self, obj_id: int, prompt: Prompt | CheckedPrompt) -> ObjectResult:
        """``add_prompt`` with the prompt as one value (engine/prompts.py): a ``Prompt`` is
        checked here; a ``CheckedPrompt`` (already checked by ``check_prompt`` for frames of
        this frame's size and this model's input size) is applied without a second check."""
        frame = self._require_frame()
        obj_id = check_object_id(obj_id)
        prompt = self._checked(prompt, frame)
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = self._new_object(obj_id)
        inputs = obj.inputs
        if inputs.frame_index != frame.index:  # not tracked on this frame: starts afresh
            inputs = _FrameInputs(frame.index, initial=True)
        out, inputs = self._decode_prompt(obj.bank, inputs, prompt)
        obj.inputs = inputs
        self._objects[obj_id] = obj
        with self._stage("postprocess"):
            return self._results([obj_id], out)[obj_id]

    def remove_object(self, obj_id: int) -> None:
        self._object(obj_id)
        del self._objects[obj_id]

    def reset(self) -> None:
        """Drop every object and its memory; the current frame can still be prompted."""
        self._objects.clear()

    # --------------------------------------------------------------- tracking
    def _track_objects(self, ids: list[int]) -> DecoderOutput:
        frame = self._frame
        feats = frame.features.expand(len(ids))
        out, _ = self.step.track(feats, [self._objects[i].bank for i in ids], frame.index)
        for b, obj_id in enumerate(ids):
            self._objects[obj_id].inputs = _FrameInputs(
                frame.index, initial=False, logits=out.low_res_masks[b:b + 1].clone())
        return out

    def _decode_prompt(self, bank: MemoryBank, inputs: _FrameInputs,
                       prompt: CheckedPrompt) -> tuple[DecoderOutput, _FrameInputs]:
        """Decode one object's prompt on the current frame and store it in its bank as a
        prompted frame; returns its output and new state."""
        feats, index = self._frame.features, self._frame.index
        if prompt.mask is not None:
            out = self.step.prompt(feats, [bank], index, inputs.initial, mask=prompt.mask)
            return out, replace(inputs, coords=None, labels=None, logits=out.low_res_masks)
        coords, labels = prompt.coords, prompt.labels
        if not prompt.has_box and inputs.coords is not None:  # a box starts the clicks afresh
            coords = torch.cat([inputs.coords, coords], dim=1)
            labels = torch.cat([inputs.labels, labels], dim=1)
        out = self.step.prompt(feats, [bank], index, inputs.initial, coords, labels,
                               inputs.logits)
        return out, replace(inputs, coords=coords, labels=labels, logits=out.low_res_masks)

    # ---------------------------------------------------------------- objects
    def _new_bank(self) -> MemoryBank:
        return self.step.new_bank()

    def check_room(self, obj_id: int) -> None:
        """Refuse (InputError) a prompt for a new object when ``max_objects`` are tracked
        already; a known object may always be refined. The one rule of the object count: the
        tracker applies it to every prompt, callers may ask it first (e.g. before replay work)."""
        if obj_id not in self._objects and len(self._objects) >= self.max_objects:
            raise InputError(f"too many objects: cannot add object {obj_id}, max_objects is "
                             f"{self.max_objects} (tracked ids: {self.object_ids}); remove one "
                             "first or raise max_objects", "too_many_objects")

    def _new_object(self, obj_id: int) -> _Object:
        """A fresh object (not yet registered: that happens once its prompt succeeded)."""
        self.check_room(obj_id)
        return _Object(self._new_bank(), _FrameInputs(self._frame.index, initial=True))

    def _object(self, obj_id: int) -> _Object:
        if obj_id not in self._objects:
            raise UnknownName(f"unknown object id {obj_id!r}; tracked ids: {self.object_ids}",
                              "unknown_object")
        return self._objects[obj_id]

    def _stage(self, name: str):
        return self._clock.stage(name) if self._clock is not None else nullcontext()

    def _checked(self, prompt: Prompt | CheckedPrompt, frame: _Frame) -> CheckedPrompt:
        """``prompt`` checked for ``frame`` (a Prompt), or a CheckedPrompt made for it."""
        if not isinstance(prompt, CheckedPrompt):
            return check_prompt(prompt, (frame.height, frame.width), self.cfg.image_size,
                                self.device)
        if prompt.frame_hw != (frame.height, frame.width) or \
                prompt.image_size != self.cfg.image_size:
            h, w = prompt.frame_hw
            raise InputError(f"the prompt was checked for a {w}x{h} frame and a "
                             f"{prompt.image_size} px model input, but the current frame is "
                             f"{frame.width}x{frame.height} and the model input "
                             f"{self.cfg.image_size} px: check it for this frame")
        return prompt.to(self.device)

    def _require_frame(self) -> _Frame:
        if self._frame is None:
            raise RuntimeError("no frame yet: call track(frame) before add_prompt, prompts "
                               "apply to the most recently tracked frame")
        return self._frame

    # ------------------------------------------------------------- frames i/o
    def _preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32, resized and ImageNet-normalised.

        On a CPU: uint8 bicubic with antialias (what PIL does for SAM 2). On a GPU the frame
        goes up as uint8 (through a reused pinned buffer) and is resized there (the same filter
        in float, rounded to whole levels as the uint8 path rounds)."""
        check_frame(frame)
        s = self.cfg.image_size
        if self.device.type == "cuda":
            image = self._upload(frame).permute(2, 0, 1)[None].float()
            if image.shape[-2:] != (s, s):
                image = F.interpolate(image, size=(s, s), mode="bicubic", align_corners=False,
                                      antialias=True).round_().clamp_(0, 255)
            return (image / 255.0 - self._mean) / self._std
        return normalise(resize_frame(frame, s), self.device)

    def _upload(self, frame: np.ndarray) -> torch.Tensor:
        """The uint8 frame on the GPU, copied through a pinned buffer kept per frame shape;
        the buffer is refilled only once its previous copy has finished."""
        staging = getattr(self, "_staging", None)
        if staging is None or staging[0].shape != frame.shape:
            staging = (torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True),
                       torch.cuda.Event())
            self._staging = staging
        buffer, copied = staging
        copied.synchronize()
        buffer.numpy()[...] = frame
        image = buffer.to(self.device, non_blocking=True)
        copied.record()
        return image

    def _to_frame(self, logits: torch.Tensor) -> torch.Tensor:
        """Low-res mask logits (B, 1, 4h, 4w) -> (B, 1, H, W) at the current frame's resolution
        (bilinear, as SAM 2 returns video-resolution masks)."""
        size = (self._frame.height, self._frame.width)
        if logits.shape[-2:] == size:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def _results(self, ids: list[int], out: DecoderOutput) -> dict[int, ObjectResult]:
        """Masks at the frame's resolution (bilinear upsampling of the logits, > 0), presence,
        IoU and boxes, fetched from the device in one copy (masks and the rows / columns each
        mask touches as bytes, the scores' float32 bytes after them)."""
        masks = self._to_frame(out.low_res_masks)[:, 0] > 0  # (B, H, W)
        b, h, w = masks.shape
        rows, cols = masks.any(dim=2), masks.any(dim=1)  # (B, H), (B, W)
        scores = torch.stack((out.object_score_logits[:, 0].float(), out.best_iou.float()))
        if self.device.type == "cpu":  # already on the host: no packing
            masks_np, rows, cols = masks.numpy(), rows.numpy(), cols.numpy()
            presence, ious = scores.tolist()
        else:
            n = b * h * w
            packed = torch.cat((masks.flatten(), rows.flatten(), cols.flatten())
                               ).view(torch.uint8)
            host = torch.cat((packed, scores.flatten().view(torch.uint8))).cpu().numpy()
            masks_np = host[:n].view(np.bool_).reshape(b, h, w)
            rows = host[n:n + b * h].view(np.bool_).reshape(b, h)
            cols = host[n + b * h:n + b * (h + w)].view(np.bool_).reshape(b, w)
            presence, ious = host[n + b * (h + w):].view(np.float32).reshape(2, b).tolist()
        return {obj_id: ObjectResult(obj_id, masks_np[i], _sigmoid(presence[i]), presence[i],
                                     ious[i], _box(rows[i], cols[i]))
                for i, obj_id in enumerate(ids)}


def check_frame(frame) -> None:
    """A frame must be an (H, W, 3) uint8 RGB numpy array with H, W > 0."""
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame must be a numpy array of shape (H, W, 3), dtype uint8 (RGB); "
                         f"got {type(frame).__name__}", "frame")
    if frame.dtype != np.uint8:
        raise InputError(f"frame must have dtype uint8 (RGB 0-255), got {frame.dtype}", "frame")
    if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise InputError(f"frame must have shape (H, W, 3) with H, W > 0 (RGB), "
                         f"got {frame.shape}", "frame")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) inclusive bounds of a bool (H, W) mask; None when it is empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _box(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int, int] | None:
    """``mask_box`` from the rows and columns a mask touches (bool (H,), (W,))."""
    c = np.flatnonzero(cols)
    if c.size == 0:
        return None
    r = np.flatnonzero(rows)
    return int(c[0]), int(r[0]), int(c[-1]), int(r[-1])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
