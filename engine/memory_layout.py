"""The fixed-capacity memory layout of the graph runtimes' memory attention (used by the tracker,
the runtimes and the exporter).

One exported graph (and one TensorRT engine, one CUDA graph) serves every frame: the memory
always has the same number of tokens, and a validity mask says which are in use.

Layout of the memory tokens of one object, M = spatial * hw + pointers * tokens_per_pointer:

    [spatial slot 0 (hw tokens)] ... [spatial slot spatial-1] [pointer tokens (pointers * 4)]

A bank holding ``s`` spatial memories and ``p`` pointers fills the first ``s`` spatial slots
and the first ``p * 4`` pointer tokens; every other token is zero and marked invalid. RoPE
rotates every spatial slot (valid or not) and leaves the pointer tokens unrotated, so the
rotation each valid token gets is the one it gets in the variable-length layout the tracker
builds (``SAM2Model.attend_memory``), and invalid tokens get attention weight exactly 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig
from .errors import InputError


@dataclass(frozen=True)
class MemoryCapacity:
    """Slots of the fixed-capacity memory: spatial memories and object pointers.

    The defaults are SAM 2's bank (``num_maskmem`` = 7, ``max_obj_ptrs`` = 16). A tracker that
    keeps more prompted frames than one slot (``max_cond_frames`` > 1) can select up to
    ``max_cond_frames + num_maskmem - 1`` spatial memories and ``max_cond_frames +
    max_obj_ptrs - 1`` pointers: export with a larger capacity to serve such a bank.
    """

    spatial: int = 7
    pointers: int = 16

    def __post_init__(self) -> None:
        if self.spatial < 1 or self.pointers < 0:
            raise InputError(f"memory capacity needs spatial >= 1 and pointers >= 0, got {self}")

    @classmethod
    def of(cls, cfg: ModelConfig) -> "MemoryCapacity":
        """SAM 2's own bank size for model ``cfg``."""
        return cls(cfg.num_maskmem, cfg.max_obj_ptrs)

    @classmethod
    def for_bank(cls, cfg: ModelConfig, max_cond_frames: int) -> "MemoryCapacity":
        """The most a bank keeping ``max_cond_frames`` prompted frames can select at once:
        every prompted frame plus ``num_maskmem - 1`` recent frames, and a pointer for every
        prompted frame plus ``max_obj_ptrs - 1`` recent ones (as SAM 2's reference)."""
        return cls(max_cond_frames + cfg.num_maskmem - 1, max_cond_frames + cfg.max_obj_ptrs - 1)

    def pointer_tokens(self, cfg: ModelConfig) -> int:
        """Tokens of the pointer slots (each d_model pointer is d_model / mem_dim tokens)."""
        return self.pointers * (cfg.d_model // cfg.mem_dim)

    def tokens(self, cfg: ModelConfig) -> int:
        """M, the number of memory tokens of one object."""
        return self.spatial * cfg.feat_size ** 2 + self.pointer_tokens(cfg)

    def tag(self) -> str:
        """Short text for file names and metadata, e.g. ``m7p16``."""
        return f"m{self.spatial}p{self.pointers}"


def spatial_buckets(cfg: ModelConfig, capacity: MemoryCapacity) -> tuple[int, ...]:
    """Spatial-memory counts a compiled memory attention is built for: ``num_maskmem`` (a
    bank with one prompted frame, once full: what most frames attend to) and the capacity
    (more prompted frames), those that fit. A memory of ``s`` spatial memories is padded to
    the smallest bucket >= s: the few frames that fill a new bank attend to padding (weight
    exactly 0) rather than each compiling a graph of its own."""
    wanted = {cfg.num_maskmem, capacity.spatial}
    return tuple(sorted(n for n in wanted if n <= capacity.spatial))


def bucket_for(cfg: ModelConfig, capacity: MemoryCapacity, spatial: int,
               pointers: int) -> MemoryCapacity:
    """The bucket a memory of ``spatial`` memories and ``pointers`` object pointers is padded
    to: spatial memories up to the next of ``spatial_buckets``; pointers (a few tokens each) to
    ``max_obj_ptrs`` or the capacity. InputError when it does not fit the capacity."""
    if spatial > capacity.spatial or pointers > capacity.pointers or spatial < 0 \
            or pointers < 0:
        raise InputError(f"a memory of {spatial} spatial memories and {pointers} pointers does "
                         f"not fit the capacity {capacity.spatial} spatial memories and "
                         f"{capacity.pointers} pointers; build the runtime with a larger "
                         "capacity, e.g. MemoryCapacity.for_bank(cfg, max_cond_frames)")
    s = next(n for n in spatial_buckets(cfg, capacity) if n >= max(spatial, 1))
    p = cfg.max_obj_ptrs if pointers <= cfg.max_obj_ptrs <= capacity.pointers \
        else capacity.pointers
    return MemoryCapacity(s, p)


def pad_to_capacity(cfg: ModelConfig, capacity: MemoryCapacity, memory: torch.Tensor,
                    memory_pos: torch.Tensor, num_obj_ptr_tokens: int,
                    memory_valid: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Variable-length memory -> the fixed-capacity layout.

    memory, memory_pos: (B, s * hw + num_obj_ptr_tokens, mem_dim), spatial memories first;
    memory_valid: (B, same) bool or None (all valid). Returns memory, memory_pos (B, M, mem_dim)
    and memory_valid (B, M) bool with M = ``capacity.tokens(cfg)``. Raises InputError when the
    memory does not fit.
    """
    b, n_tokens, dim = memory.shape
    hw = cfg.feat_size ** 2
    n_spatial_tokens = n_tokens - num_obj_ptr_tokens
    cap_spatial, cap_ptr = capacity.spatial * hw, capacity.pointer_tokens(cfg)
    if n_spatial_tokens % hw or n_spatial_tokens > cap_spatial or num_obj_ptr_tokens > cap_ptr:
        raise InputError(
            f"memory of {n_spatial_tokens // hw if n_spatial_tokens % hw == 0 else '?'} spatial "
            f"memories ({n_spatial_tokens} tokens of {hw}) and {num_obj_ptr_tokens} pointer "
            f"tokens does not fit the exported capacity {capacity.spatial} spatial memories x "
            f"{hw} tokens + {cap_ptr} pointer tokens; export with a larger capacity, e.g. "
            "MemoryCapacity.for_bank(cfg, max_cond_frames)")
    if memory_valid is None:
        memory_valid = torch.ones(b, n_tokens, dtype=torch.bool, device=memory.device)
    m = cap_spatial + cap_ptr
    out = memory.new_zeros(b, m, dim)
    out_pos = memory_pos.new_zeros(b, m, dim)
    valid = torch.zeros(b, m, dtype=torch.bool, device=memory.device)
    # spatial tokens go to the front, pointer tokens to the start of the pointer slots
    for src, dst in ((slice(0, n_spatial_tokens), slice(0, n_spatial_tokens)),
                     (slice(n_spatial_tokens, n_tokens),
                      slice(cap_spatial, cap_spatial + num_obj_ptr_tokens))):
        out[:, dst] = memory[:, src]
        out_pos[:, dst] = memory_pos[:, src]
        valid[:, dst] = memory_valid[:, src]
    # unused slots must hold finite numbers: their keys and values still enter the products
    invalid = ~valid[..., None]
    return out.masked_fill_(invalid, 0.0), out_pos.masked_fill_(invalid, 0.0), valid
