"""The one runtime interface, and the shared half of the graph-based runtimes.

A ``Runtime`` is the whole per-frame computation of one backend: SAM 2's heavy parts, with
the signatures of the ``SAM2Model`` methods they replace, on torch tensors in and out (on
``runtime.device``), and the small learned glue (temporal encodings of memories and pointers,
pointer tokens, mask upscaling, ``add_no_memory``) in ``runtime.glue``, a ``TrackingGlue``
(engine/model/glue.py) on the same device. A graph runtime keeps its graphs and a copy of the
glue, never the torch model.

``GraphRuntime`` implements the interface on top of exported graphs (see ``engine.export``):
a subclass supplies one runner per part with ``run(feed) -> outputs`` (dicts of tensors by
name); this class turns calls into feeds and outputs back into the model's types.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..config import ModelConfig
from ..memory_layout import MemoryCapacity, pad_to_capacity
from ..model.glue import TrackingGlue
from ..model.sam2 import DecoderOutput, ImageFeatures


@runtime_checkable
class Runtime(Protocol):
    """SAM 2's per-frame computations on one backend. Shapes as in ``SAM2Model``:
    B objects, N clicks, S image size, h = S / 16, M memory tokens."""

    name: str  # "torch" | "onnxruntime" | "tensorrt"
    device: torch.device
    cfg: ModelConfig
    glue: TrackingGlue  # the small learned glue, on ``device``

    def encode_image(self, image: Tensor) -> ImageFeatures:
        """image (1, 3, S, S) float32, normalised -> feat, pos (1,256,h,h), high_res."""

    def attend_memory(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                      num_obj_ptr_tokens: int, memory_valid: Tensor | None = None) -> Tensor:
        """feat, pos (B,256,h,h); memory, memory_pos (B,M,64) spatial tokens then
        ``num_obj_ptr_tokens`` pointer tokens; memory_valid (B,M) bool or None -> (B,256,h,h)."""

    def decode(self, feat: Tensor, high_res: list[Tensor], point_coords: Tensor | None,
               point_labels: Tensor | None, mask_logits: Tensor | None,
               multimask: bool) -> DecoderOutput:
        """feat (B,256,h,h), high_res [(B,32,4h,4h), (B,64,2h,2h)], point_coords (B,N,2)
        float32 model-input pixels, point_labels (B,N) int, mask_logits (B,1,4h,4h) or None."""

    def decode_mask_prompt(self, feat: Tensor, high_res: list[Tensor],
                           mask: Tensor) -> DecoderOutput:
        """A binary mask prompt (B,1,S,S) used directly as the output."""

    def encode_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                      object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        """feat (B,256,h,h), mask logits (B,1,S,S), presence (B,1) -> memory, pos (B,64,h,h)."""

    def encode_prompt_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                             object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        """``encode_memory`` with the mask binarised (> 0): prompted frames."""


class GraphRuntime:
    """The Runtime interface over one runner per exported part (``self.parts[name].run``)."""

    name = "graph"

    def __init__(self, glue: TrackingGlue, parts: dict, capacity: MemoryCapacity,
                 device: torch.device) -> None:
        self.glue = glue
        self.cfg = glue.cfg
        self.parts = parts
        self.capacity = capacity
        self.device = device
        # what each graph declares, by part (a graph leaves out inputs its model never reads)
        self._declared = {name: {spec.name for spec in p.inputs} for name, p in parts.items()}

    def _run(self, part: str, **feed: Tensor) -> dict[str, Tensor]:
        """Run one part on the inputs it declares: a graph leaves out what its model never
        reads (SAM 2.0's memory encoder takes no presence logits); every declared input must
        be in ``feed`` (the part's check names a missing one)."""
        declared = self._declared[part]
        return self.parts[part].run({name: t for name, t in feed.items() if name in declared})

    def encode_image(self, image: Tensor) -> ImageFeatures:
        out = self._run("image_encoder", image=image)
        return ImageFeatures(out["feat"], out["pos"], [out["high_res_s0"], out["high_res_s1"]])

    def attend_memory(self, feat: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor,
                      num_obj_ptr_tokens: int, memory_valid: Tensor | None = None) -> Tensor:
        memory, memory_pos, valid = pad_to_capacity(self.cfg, self.capacity, memory, memory_pos,
                                                    num_obj_ptr_tokens, memory_valid)
        out = self._run("memory_attention", feat=feat, pos=pos, memory=memory,
                        memory_pos=memory_pos, memory_valid=valid)
        return out["conditioned"]

    def decode(self, feat: Tensor, high_res: list[Tensor], point_coords: Tensor | None,
               point_labels: Tensor | None, mask_logits: Tensor | None,
               multimask: bool) -> DecoderOutput:
        b, h = feat.shape[0], feat.shape[-1]
        if point_coords is None:  # as SAM2Model.decode: one padding click
            point_coords = feat.new_zeros(b, 1, 2)
            point_labels = torch.full((b, 1), -1, dtype=torch.int32, device=feat.device)
        has_mask = torch.full((b,), mask_logits is not None, dtype=torch.bool, device=feat.device)
        if mask_logits is None:
            mask_logits = feat.new_zeros(b, 1, 4 * h, 4 * h)
        part = "decoder_multimask" if multimask else "decoder_singlemask"
        out = self._run(part, feat=feat, high_res_s0=high_res[0], high_res_s1=high_res[1],
                        point_coords=point_coords,
                        point_labels=point_labels.to(torch.int32),  # click labels -1..3
                        mask_input=mask_logits, has_mask_input=has_mask)
        return DecoderOutput(out["low_res_multimasks"], out["ious"], out["low_res_masks"],
                             out["obj_ptr"], out["object_score_logits"])

    def decode_mask_prompt(self, feat: Tensor, high_res: list[Tensor],
                           mask: Tensor) -> DecoderOutput:
        """As ``SAM2Model.decode_mask_prompt``, with the decoder run by this runtime."""
        return self.glue.decode_mask_prompt_with(self.decode, feat, high_res, mask)

    def _encode_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                       object_score_logits: Tensor, binarize: bool) -> tuple[Tensor, Tensor]:
        flag = torch.full((feat.shape[0],), binarize, dtype=torch.bool, device=feat.device)
        out = self._run("memory_encoder", feat=feat, mask_logits_high_res=mask_logits_high_res,
                        object_score_logits=object_score_logits, binarize=flag)
        return out["maskmem_features"], out["maskmem_pos"]

    def encode_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                      object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        return self._encode_memory(feat, mask_logits_high_res, object_score_logits, False)

    def encode_prompt_memory(self, feat: Tensor, mask_logits_high_res: Tensor,
                             object_score_logits: Tensor) -> tuple[Tensor, Tensor]:
        return self._encode_memory(feat, mask_logits_high_res, object_score_logits, True)
