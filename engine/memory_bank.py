"""The memory of one tracked object: a small bank with a fixed capacity.

SAM 2 conditions each new frame on what it remembers of the object:

* **prompted frames** (the user clicked, drew a box or gave a mask there): their spatial
  memories always take part, with temporal slot 0;
* the **recent frames**: spatial memories of the last ``num_maskmem - 1`` tracked frames, each
  in the temporal slot of its distance (the frame just before is slot ``num_maskmem - 1``,
  the oldest slot 1);
* **object pointers**: one vector per prompted frame, plus one per tracked frame of the last
  ``max_obj_ptrs - 1`` frames, each tagged with how many frames ago it was made.

The reference predictor keeps every frame's output for the whole video and picks these out by
frame index. Here only what can still be picked is kept: two FIFOs and at most
``max_cond_frames`` prompted frames, so memory and work stop growing once the bank is full.

The FIFOs hold one entry more than a selection uses (``num_maskmem`` frames and
``max_obj_ptrs`` pointers): the newest entry is the frame just tracked, which the next frame
attends to, and the oldest is the one the frame just tracked attended to. A prompt on the
frame just tracked (a refinement click, or a new object's memory conditioning) is therefore
decoded with exactly the memories that frame was tracked with, at every fill level, as in the
reference. What a frame attends to never exceeds ``num_maskmem - 1`` recent memories and
``max_obj_ptrs - 1`` recent pointers (plus the prompted frames).

Eviction of prompted frames, when a new prompt arrives on a full bank: the **first** prompt is
kept (it is the user's own definition of the object, the anchor against drift), and the
oldest of the *later* prompts makes room. With ``max_cond_frames == 1`` the single slot simply
holds the newest prompt. An evicted prompt is dropped altogether; the reference would attend to
it as a recent frame while it is still within the last ``num_maskmem - 1`` frames, which only
matters when more than ``max_cond_frames`` prompts land within that many frames.

With ``ordinal=True`` (the tracker's choice when the model sets ``memory_min_iou``, so that
frames where the object was lost or misjudged are not stored) the recent memories are the last
``num_maskmem - 1`` frames *stored*, however far apart: the newest takes slot
``num_maskmem - 1``, the one before it the next lower slot, and so on. A gap in the stream
(an occlusion, an exit) then leaves the last good views of the object in memory instead of
ageing them out. Object pointers keep their distance in frames either way.

Memories are only ever read for frames strictly before the current one: a frame's own output
never conditions itself (as in the reference, where new outputs join the memory only once the
next frame is tracked).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class MemoryEntry:
    """What one frame leaves behind for one object.

    features: (h*w, mem_dim) spatial memory, tokens row-major (stored in bfloat16, as SAM 2
              stores them); pointer: (d_model,) object pointer.
    """

    frame_index: int
    features: torch.Tensor
    pointer: torch.Tensor


@dataclass(frozen=True)
class MemorySelection:
    """The memories one frame attends to, in the order SAM 2 concatenates them.

    spatial:  (features (h*w, mem_dim), temporal slot) — prompted frames (slot 0) first, then
              recent frames oldest first (slots 1 .. num_maskmem - 1).
    pointers: (pointer (d_model,), frames between it and the current frame) — prompted frames
              first, then recent frames newest first.
    """

    spatial: list[tuple[torch.Tensor, int]]
    pointers: list[tuple[torch.Tensor, int]]


@dataclass(frozen=True)
class BankSize:
    """How full a bank is: prompted frames, recent spatial memories, recent pointers."""

    prompted: int
    recent: int
    recent_pointers: int


class MemoryBank:
    """Fixed-capacity memory of one object (see the module docstring for what is kept)."""

    def __init__(self, num_maskmem: int = 7, max_obj_ptrs: int = 16,
                 max_cond_frames: int = 4, ordinal: bool = False) -> None:
        for name, value, least in (("num_maskmem", num_maskmem, 2),
                                   ("max_obj_ptrs", max_obj_ptrs, 1),
                                   ("max_cond_frames", max_cond_frames, 1)):
            if not isinstance(value, int) or value < least:
                raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.max_cond_frames = max_cond_frames
        self.ordinal = bool(ordinal)
        self._prompted: list[MemoryEntry] = []  # chronological
        # one more than a selection uses: see the module docstring
        self._recent: deque[MemoryEntry] = deque(maxlen=num_maskmem)
        self._recent_pointers: deque[tuple[int, torch.Tensor]] = deque(maxlen=max_obj_ptrs)

    # ------------------------------------------------------------------ writing
    def add_prompted(self, entry: MemoryEntry) -> None:
        """Keep ``entry`` as a prompted frame; it replaces anything stored for its frame."""
        self._forget_frame(entry.frame_index)
        if len(self._prompted) == self.max_cond_frames:
            del self._prompted[1 if self.max_cond_frames > 1 else 0]
        self._prompted.append(entry)
        self._prompted.sort(key=lambda e: e.frame_index)

    def add_tracked(self, entry: MemoryEntry) -> None:
        """Append a tracked (not prompted) frame; frames must arrive in increasing order."""
        latest = self.latest_frame
        if latest is not None and entry.frame_index <= latest:
            raise ValueError(f"tracked frame {entry.frame_index} is not after the latest "
                             f"stored frame {latest}")
        self._recent.append(entry)
        self._recent_pointers.append((entry.frame_index, entry.pointer))

    def detach(self) -> None:
        """Cut every stored tensor from the autograd graph it was made in (training backs
        through a window of frames at a time; engine/tools/train.py); the contents stay."""
        self._prompted = [MemoryEntry(e.frame_index, e.features.detach(), e.pointer.detach())
                          for e in self._prompted]
        self._recent = deque((MemoryEntry(e.frame_index, e.features.detach(),
                                          e.pointer.detach()) for e in self._recent),
                             maxlen=self._recent.maxlen)
        self._recent_pointers = deque(((i, p.detach()) for i, p in self._recent_pointers),
                                      maxlen=self._recent_pointers.maxlen)

    def clear(self) -> None:
        self._prompted.clear()
        self._recent.clear()
        self._recent_pointers.clear()

    def _forget_frame(self, frame_index: int) -> None:
        self._prompted = [e for e in self._prompted if e.frame_index != frame_index]
        self._recent = deque((e for e in self._recent if e.frame_index != frame_index),
                             maxlen=self._recent.maxlen)
        self._recent_pointers = deque(
            (p for p in self._recent_pointers if p[0] != frame_index),
            maxlen=self._recent_pointers.maxlen)

    # ------------------------------------------------------------------ reading
    def select(self, frame_index: int) -> MemorySelection:
        """The memories that condition frame ``frame_index`` (only frames before it)."""
        prompted = [e for e in self._prompted if e.frame_index < frame_index]
        spatial = [(e.features, 0) for e in prompted]
        if self.ordinal:  # by order: the newest stored frame is slot num_maskmem - 1
            recent = [e for e in self._recent if e.frame_index < frame_index]
            recent = recent[-(self.num_maskmem - 1):]
            spatial += [(e.features, self.num_maskmem - len(recent) + k)
                        for k, e in enumerate(recent)]
        else:
            for e in self._recent:  # oldest first
                ago = frame_index - e.frame_index
                if 1 <= ago < self.num_maskmem:
                    spatial.append((e.features, self.num_maskmem - ago))
        pointers = [(e.pointer, frame_index - e.frame_index) for e in prompted]
        for index, pointer in reversed(self._recent_pointers):  # newest first
            ago = frame_index - index
            if 1 <= ago < self.max_obj_ptrs:
                pointers.append((pointer, ago))
        return MemorySelection(spatial, pointers)

    @property
    def latest_frame(self) -> int | None:
        """Index of the newest stored frame, or None when empty."""
        frames = [e.frame_index for e in self._prompted]
        frames += [i for i, _ in self._recent_pointers]
        return max(frames, default=None)

    @property
    def prompted_frames(self) -> list[int]:
        return [e.frame_index for e in self._prompted]

    def size(self) -> BankSize:
        return BankSize(len(self._prompted), len(self._recent), len(self._recent_pointers))

    def capacity(self) -> BankSize:
        """The most the bank stores (``select`` hands a frame at most ``num_maskmem - 1``
        recent memories and ``max_obj_ptrs - 1`` recent pointers of these)."""
        return BankSize(self.max_cond_frames, self.num_maskmem, self.max_obj_ptrs)

    def nbytes(self) -> int:
        """Bytes held by the stored tensors (a recent frame's pointer is counted once)."""
        tensors = [e.features for e in (*self._prompted, *self._recent)]
        tensors += [e.pointer for e in self._prompted] + [p for _, p in self._recent_pointers]
        return sum(t.untyped_storage().nbytes() for t in tensors)
