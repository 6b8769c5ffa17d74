"""One tracking step, written once: what happens to a frame and the objects' memory banks.

``StreamingTracker`` (engine/tracker.py) runs it under inference mode on any runtime
(engine/runtime/); training (engine/tools/train.py) runs the very same methods with gradients on
a runtime over ``SAM2Model``, so what is trained is what serves: the same banks, admission
rule, temporal slots, multimask rule and presence gating.

Per frame:

* ``resize_frame`` / ``normalise``: an RGB frame -> the model's input (uint8 bicubic with
  antialias on the CPU, what PIL does for SAM 2; ImageNet mean and std);
* ``TrackingStep.track``: each object's memories (``MemoryBank.select``) are assembled into one
  padded batch (``assemble``: spatial memories with their temporal slot encodings, then object
  pointers with their distance encodings), the frame features attend to them, the mask decoder
  runs without prompts (SAM 2's multimask rule, ``use_multimask``; the candidate with the
  highest IoU estimate is chosen and masks of objects judged absent are gated to "nothing here"
  by the decoder), the memory encoder turns the chosen mask into a spatial memory, and each
  object's bank takes it when the admission rule lets it (``admitted``);
* ``TrackingStep.prompt``: a prompt (clicks and/or a box with the previous logits fed back, or
  a mask) decoded on a frame, without memory on an object's first frame, and stored as a
  prompted frame.

The admission rule: with ``memory_min_iou`` None every tracked frame joins (SAM 2's rule);
with a threshold, only frames where the object is judged present and the decoder's IoU
estimate reaches it, and the bank numbers its recent memories by order
(``MemoryBank(ordinal=True)``; see engine/memory_bank.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .memory_bank import MemoryBank, MemoryEntry, MemorySelection
from .model.sam2 import DecoderOutput, ImageFeatures

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREV_LOGITS_CLAMP = 32.0  # previous mask logits fed back with new clicks are clamped to +-this
MEMORY_DTYPE = torch.bfloat16  # spatial memories are stored as SAM 2's predictor stores them
MEMORY_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# select(bank, frame_index) -> the memories that frame attends to
Select = Callable[[MemoryBank, int], MemorySelection]


def resize_frame(frame: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) uint8 on the CPU: bicubic with antialias on uint8,
    what PIL does for SAM 2 (a frame already S x S is passed through)."""
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False,
                              antialias=True)
    return image


def normalise(image: torch.Tensor, device) -> torch.Tensor:
    """(B, 3, S, S) pixel values 0-255 (uint8 or float) -> float32 on ``device``, ImageNet
    normalised."""
    x = image.to(device).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def use_multimask(cfg: ModelConfig, initial: bool, num_points: int) -> bool:
    """SAM 2's rule for three candidate masks (its predictor's ``_use_multimask``)."""
    return (cfg.multimask_output_in_sam and (initial or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)


@dataclass(frozen=True)
class Memory:
    """Memory-attention input for B objects: tokens, pos (B, M, 64); valid (B, M) or None."""

    tokens: torch.Tensor
    pos: torch.Tensor
    valid: torch.Tensor | None
    num_pointer_tokens: int


def _rows(table: torch.Tensor, slots) -> torch.Tensor:
    """``table[slots]`` from slices of runs of consecutive slots (no index upload to the
    device, which from host memory can stall the stream): (len(slots), ...)."""
    runs, start = [], 0
    for k in range(1, len(slots) + 1):
        if k == len(slots) or slots[k] != slots[k - 1] + 1:
            runs.append(table[slots[start]:slots[k - 1] + 1])
            start = k
    return runs[0] if len(runs) == 1 else torch.cat(runs)


class TrackingStep:
    """The per-frame computation over a ``runtime`` (engine/runtime/base.py's interface) and
    the memory policy (bank capacity, admission rule, stored dtype). Holds no per-object state:
    the caller owns the banks and hands them in, one per object, in batch order."""

    def __init__(self, runtime, max_cond_frames: int, memory_min_iou: float | None,
                 memory_dtype: torch.dtype = MEMORY_DTYPE) -> None:
        self.runtime = runtime
        self.glue = runtime.glue  # position encodings, pointer tokens, upscaling
        self.cfg: ModelConfig = runtime.cfg
        self.device = runtime.device
        self.max_cond_frames = max_cond_frames
        self.memory_min_iou = memory_min_iou
        self.memory_dtype = memory_dtype
        self._pos_base: torch.Tensor | None = None  # (1, 64, h, w) memory position encoding
        self._memory_pos: torch.Tensor | None = None  # (num_maskmem, h*w, 64), by slot

    # ------------------------------------------------------------------ banks
    def new_bank(self) -> MemoryBank:
        return MemoryBank(self.cfg.num_maskmem, self.cfg.max_obj_ptrs, self.max_cond_frames,
                          ordinal=self.memory_min_iou is not None)

    def admitted(self, out: DecoderOutput) -> list[bool]:
        """Which objects' tracked outputs join their memory (all of them unless
        ``memory_min_iou`` is set: then present ones with an IoU estimate >= it)."""
        if self.memory_min_iou is None:
            return [True] * out.best_iou.shape[0]
        present = (out.object_score_logits[:, 0] > 0) & (out.best_iou >= self.memory_min_iou)
        return present.tolist()

    def entry(self, frame_index: int, memory: torch.Tensor, pos: torch.Tensor,
              pointers: torch.Tensor, b: int) -> MemoryEntry:
        """Object ``b``'s bank entry from a batch: memory, pos (B, 64, h, w), pointers (B, 256)."""
        return self._entries(frame_index, memory, pos, pointers, [b])[0]

    def _entries(self, frame_index: int, memory: torch.Tensor, pos: torch.Tensor,
                 pointers: torch.Tensor, objects: list[int]) -> list[MemoryEntry]:
        """Bank entries of ``objects`` of a batch (``entry``), converted as one batch."""
        if self._pos_base is None:  # the same for every frame
            self._pos_base = pos[:1].detach()
        # (B, 64, h, w) -> (B, h*w, 64) in the stored dtype; each entry its own copy
        features = memory.flatten(2).transpose(1, 2).to(self.memory_dtype)
        return [MemoryEntry(frame_index, features[b].clone(), pointers[b].clone())
                for b in objects]

    def refresh_encodings(self) -> None:
        """Forget the tabulated temporal encodings of spatial memories (training: after the
        weights change, or after a backward pass freed the graph they were made in)."""
        self._memory_pos = None

    def memory_pos(self) -> torch.Tensor:
        """(num_maskmem, h*w, 64): memory position encoding + temporal encoding of each slot,
        tabulated on first use."""
        if self._memory_pos is None:
            self._memory_pos = torch.cat([self.glue.spatial_memory_pos(self._pos_base, t)
                                          for t in range(self.cfg.num_maskmem)])
        return self._memory_pos

    # ----------------------------------------------------------------- memory
    def assemble(self, selections: list[MemorySelection]) -> Memory:
        """Pad each object's memories to a common length: spatial memories (h*w tokens each)
        first, then object pointers (d_model / mem_dim tokens each). A runtime with
        ``memory_slots`` (the compiled torch runtime) names the slots to pad to (its bucket);
        padded tokens are zero and marked invalid. One copy per object and part, and one
        small upload of the lengths: no host sync. Differentiable in the stored memories,
        the pointers and the encodings."""
        hw, mem_dim = self.cfg.feat_size ** 2, self.cfg.mem_dim
        split = self.cfg.d_model // mem_dim
        n_spatial = max(len(s.spatial) for s in selections)
        n_ptrs = max(len(s.pointers) for s in selections)
        slots = getattr(self.runtime, "memory_slots", lambda s, p: None)(n_spatial, n_ptrs)
        if slots is not None:
            n_spatial, n_ptrs = slots
        b, start = len(selections), n_spatial * hw
        tokens = torch.zeros(b, start + n_ptrs * split, mem_dim, device=self.device)
        pos = torch.zeros_like(tokens)
        ptrs = torch.zeros(b, n_ptrs, self.cfg.d_model, device=self.device)
        ago = [[0.0] * n_ptrs for _ in selections]
        table = self.memory_pos() if any(s.spatial for s in selections) else None
        for i, sel in enumerate(selections):
            if sel.spatial:
                features, used = zip(*sel.spatial)
                tokens[i, :len(used) * hw] = torch.cat(features)
                pos[i, :len(used) * hw] = _rows(table, used).flatten(0, 1)
            if sel.pointers:
                pointers, frames_ago = zip(*sel.pointers)
                ptrs[i, :len(pointers)] = torch.stack(pointers)
                ago[i][:len(pointers)] = frames_ago
        ago = torch.tensor(ago, dtype=torch.float32).to(self.device, non_blocking=True)
        ptr_pos = self.glue.pointer_pos(ago.flatten(), self.cfg.max_obj_ptrs)
        ptr_tokens, ptr_tok_pos = self.glue.pointer_tokens_batched(
            ptrs, ptr_pos.view(b, n_ptrs, mem_dim))
        tokens[:, start:], pos[:, start:] = ptr_tokens, ptr_tok_pos
        lengths = [(len(s.spatial) * hw, len(s.pointers) * split) for s in selections]
        if all(n == (start, n_ptrs * split) for n in lengths):
            return Memory(tokens, pos, None, n_ptrs * split)
        used = torch.tensor(lengths).to(self.device, non_blocking=True)  # (B, 2)
        valid = torch.cat((torch.arange(start, device=self.device) < used[:, :1],
                           torch.arange(n_ptrs * split, device=self.device) < used[:, 1:]),
                          dim=1)  # (B, M): the filled spatial tokens, then pointer tokens
        return Memory(tokens, pos, valid, n_ptrs * split)

    def attend(self, feats: ImageFeatures, selections: list[MemorySelection]) -> torch.Tensor:
        """Frame features (B, 256, h, w) conditioned on each object's selected memories."""
        memory = self.assemble(selections)
        return self.runtime.attend_memory(feats.feat, feats.pos, memory.tokens, memory.pos,
                                          memory.num_pointer_tokens, memory.valid)

    # ------------------------------------------------------------------ steps
    def track(self, feats: ImageFeatures, banks: list[MemoryBank], frame_index: int,
              select: Select | None = None) -> tuple[DecoderOutput, list[bool]]:
        """Track B objects on one frame from their memories: ``feats`` (batch B, one row per
        object, e.g. ``ImageFeatures.expand``), ``banks`` their banks. Admitted outputs join
        their banks. ``select`` replaces ``MemoryBank.select`` (training's memory dropout).
        Returns the decoder output and which objects were admitted."""
        select = select or (lambda bank, t: bank.select(t))
        conditioned = self.attend(feats, [select(bank, frame_index) for bank in banks])
        out = self.runtime.decode(conditioned, feats.high_res, None, None, None,
                                  multimask=use_multimask(self.cfg, False, 0))
        memory, pos = self.runtime.encode_memory(feats.feat, self.glue.upscale_masks(
            out.low_res_masks), out.object_score_logits)
        admitted = self.admitted(out)
        stored = [b for b in range(len(banks)) if admitted[b]]
        if stored:
            entries = self._entries(frame_index, memory, pos, out.obj_ptr, stored)
            for b, entry in zip(stored, entries):
                banks[b].add_tracked(entry)
        return out, admitted

    def prompt(self, feats: ImageFeatures, banks: list[MemoryBank], frame_index: int,
               initial: bool, coords: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, prev_logits: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> DecoderOutput:
        """Decode a prompt for B objects on one frame and store it as their prompted frame.

        ``mask`` (B, 1, S, S) binary: used as the output. Otherwise clicks ``coords`` (B, N, 2)
        in model pixels with ``labels`` (B, N), and the objects' previous low-res logits on
        this frame ``prev_logits`` (B, 1, 4h, 4w) or None (clamped here). ``initial``: the
        objects' first frame, decoded without memory; else conditioned on their banks."""
        if mask is not None:  # the mask is the output (use_mask_input_as_output_without_sam)
            out = self.runtime.decode_mask_prompt(feats.feat, feats.high_res, mask)
        else:
            if prev_logits is not None:
                prev_logits = prev_logits.clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
            if initial:
                conditioned = self.glue.add_no_memory(feats.feat)
            else:
                conditioned = self.attend(feats, [bank.select(frame_index) for bank in banks])
            multimask = use_multimask(self.cfg, initial, num_points=labels.shape[1])
            out = self.runtime.decode(conditioned, feats.high_res, coords, labels, prev_logits,
                                      multimask)
        high_res = self.glue.upscale_masks(out.low_res_masks)
        memory, pos = self.runtime.encode_prompt_memory(feats.feat, high_res,
                                                        out.object_score_logits)
        entries = self._entries(frame_index, memory, pos, out.obj_ptr, list(range(len(banks))))
        for bank, entry in zip(banks, entries):
            bank.add_prompted(entry)
        return out
