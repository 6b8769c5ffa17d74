"""The FP16 check: each part of an FP16 runtime against an FP32 runtime, on real inputs.

Real inputs: a probe frame (``probe_image``: a textured background with shapes, the kind of
picture SAM 2 is built for) goes through the FP32 runtime as the tracker would run it: image
encoder, a click on two shapes decoded without memory (multimask), their prompted memories,
a memory of two spatial memories and two pointers attended to, a tracked decode (single mask)
and its memory. Every part of the FP16 runtime then runs on exactly the inputs the FP32 runtime
saw, and each output is compared with the FP32 one by its relative error
``||fp16 - fp32|| / ||fp32||`` (RMS over the whole tensor). A part passes when every output it
holds stays within ``FP16_TOLERANCE``; outputs picked by a discrete choice (the best of three
masks, ``TensorSpec.selected`` in engine/graph_spec.py) are reported but not held, since a near
tie may flip between precisions. A part that fails runs in FP32 (engine/runtime_factory.py).

The check runs the two runtimes through the ``Runtime`` interface only, so it serves TensorRT
engines (FP16 vs the torch model in FP32) and, on a CPU, onnxruntime's FP16 graphs (vs its FP32
graphs), which is how the tests prove it without a GPU.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..graph_spec import part_specs
from ..memory_layout import MemoryCapacity
from .base import Runtime

# Largest relative RMS error of an FP16 part's held outputs vs FP32. Measured on a CPU with
# onnxruntime's FP16 graphs on the probe frame (tests/test_gpu_path_on_cpu.py prints them):
# every output of the bundled model (192 px) within 6e-4, of a tiny SAM 2.1 with random
# weights (128 px) within 1e-3. 2 % leaves a margin of 20 for FP16 engines' own rounding while
# catching what FP16 breaks (an overflow is inf; a lost encoding is an error of order 100 %).
FP16_TOLERANCE = 0.02
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PartCheck:
    """One part's FP16 result: relative error per output, which outputs are held."""

    part: str
    errors: dict[str, float]
    held: tuple[str, ...]
    tolerance: float

    @property
    def worst(self) -> tuple[str, float]:
        name = max(self.held, key=lambda n: self.errors[n])
        return name, self.errors[name]

    @property
    def passed(self) -> bool:
        return all(math.isfinite(self.errors[n]) and self.errors[n] <= self.tolerance
                   for n in self.held)

    def describe(self) -> str:
        name, err = self.worst
        verdict = "passes" if self.passed else "FAILS"
        return (f"{self.part}: FP16 {verdict} (worst output {name}: relative error "
                f"{err:.2e}, tolerance {self.tolerance:g})")


def probe_image(size: int) -> Tensor:
    """(1, 3, S, S) float32, ImageNet-normalised: a deterministic scene of two shapes (a red
    disc, a blue box; ``probe_clicks`` hits them) on a textured background."""
    gen = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    texture = torch.rand(3, size // 8 + 1, size // 8 + 1, generator=gen)
    texture = torch.nn.functional.interpolate(texture[None], size=(size, size), mode="bilinear",
                                              align_corners=False)[0]
    rgb = torch.stack((0.35 + 0.3 * x, 0.45 + 0.2 * y, 0.5 - 0.2 * x)) * 0.7 + 0.3 * texture
    disc = ((x - 0.3) ** 2 + (y - 0.35) ** 2) < 0.15 ** 2
    box = (x > 0.55) & (x < 0.85) & (y > 0.5) & (y < 0.8)
    rgb[:, disc] = torch.tensor([0.9, 0.2, 0.15])[:, None]
    rgb[:, box] = torch.tensor([0.1, 0.3, 0.85])[:, None] + 0.1 * texture[:, box]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb.clamp(0, 1) - mean) / std)[None]


def probe_clicks(size: int) -> Tensor:
    """(2, 1, 2) click coordinates in model-input pixels: one inside each shape of the probe."""
    return torch.tensor([[[0.3 * size, 0.35 * size]], [[0.7 * size, 0.65 * size]]])


def relative_error(got: Tensor, want: Tensor) -> float:
    """||got - want|| / ||want|| (RMS over the tensor, float64 on the CPU); inf for NaN."""
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    if not torch.isfinite(got).all():
        return math.inf
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def check_fp16_parts(candidate: Runtime, reference: Runtime,
                     tolerance: float = FP16_TOLERANCE) -> dict[str, PartCheck]:
    """Every part of ``candidate`` (FP16) vs ``reference`` (FP32) on the probe's inputs."""
    cfg = reference.cfg
    specs = part_specs(cfg, MemoryCapacity.of(cfg))
    results: dict[str, PartCheck] = {}

    def on(rt: Runtime, *tensors):
        return [None if t is None else t.to(rt.device) for t in tensors]

    def compare(part: str, got: list[Tensor], want: list[Tensor], names: list[str]) -> None:
        errors = {n: relative_error(g, w) for n, g, w in zip(names, got, want)}
        selected = {t.name for t in specs[part].outputs if t.selected}
        held = tuple(n for n in names if n not in selected)
        previous = results.get(part)
        if previous is not None:  # a part seen twice: keep the worse error per output
            errors = {n: max(errors[n], previous.errors.get(n, 0.0)) for n in errors}
        results[part] = PartCheck(part, errors, held, tolerance)

    with torch.inference_mode():
        _check_sequence(candidate, reference, on, compare)
    return results


_DECODER_OUTPUTS = ["low_res_multimasks", "ious", "low_res_masks", "obj_ptr",
                    "object_score_logits"]


def _check_sequence(cand: Runtime, ref: Runtime, on, compare) -> None:
    """The probe's walk through the parts, each part run by both runtimes on the same inputs."""
    cfg = ref.cfg
    size = cfg.image_size
    image = probe_image(size)
    f_ref = ref.encode_image(*on(ref, image))
    f_cand = cand.encode_image(*on(cand, image))
    compare("image_encoder", [f_cand.feat, f_cand.pos, *f_cand.high_res],
            [f_ref.feat, f_ref.pos, *f_ref.high_res], ["feat", "pos", "high_res_s0",
                                                       "high_res_s1"])
    feats = f_ref.expand(2)
    feat, pos, high_res = feats.feat, feats.pos, list(feats.high_res)
    coords = probe_clicks(size)
    labels = torch.ones(2, 1, dtype=torch.int32)
    first = ref.glue.add_no_memory(feat)

    def run_decode(rt: Runtime, conditioned, coords_, labels_, multimask: bool):
        c, h0, h1, pc, pl = on(rt, conditioned, high_res[0], high_res[1], coords_, labels_)
        return rt.decode(c, [h0, h1], pc, pl, None, multimask)

    out_ref = run_decode(ref, first, coords, labels, True)
    out_cand = run_decode(cand, first, coords, labels, True)
    compare("decoder_multimask", [getattr(out_cand, n) for n in _DECODER_OUTPUTS],
            [getattr(out_ref, n) for n in _DECODER_OUTPUTS], _DECODER_OUTPUTS)

    high = ref.glue.upscale_masks(out_ref.low_res_masks)
    for method in ("encode_prompt_memory", "encode_memory"):
        m_ref = getattr(ref, method)(*on(ref, feat, high, out_ref.object_score_logits))
        m_cand = getattr(cand, method)(*on(cand, feat, high, out_ref.object_score_logits))
        compare("memory_encoder", list(m_cand), list(m_ref), ["maskmem_features", "maskmem_pos"])

    memory, memory_pos, n_ptr = _probe_memory(ref, m_ref, out_ref.obj_ptr)
    c_ref = ref.attend_memory(*on(ref, feat, pos, memory, memory_pos), n_ptr)
    c_cand = cand.attend_memory(*on(cand, feat, pos, memory, memory_pos), n_ptr)
    compare("memory_attention", [c_cand], [c_ref], ["conditioned"])

    none = (None, None)
    tracked_ref = run_decode(ref, c_ref, *none, False)
    tracked_cand = run_decode(cand, c_ref, *none, False)
    compare("decoder_singlemask", [getattr(tracked_cand, n) for n in _DECODER_OUTPUTS],
            [getattr(tracked_ref, n) for n in _DECODER_OUTPUTS], _DECODER_OUTPUTS)


def _probe_memory(ref: Runtime, encoded: tuple[Tensor, Tensor], obj_ptr: Tensor
                  ) -> tuple[Tensor, Tensor, int]:
    """Two spatial memories (the prompted one, then the same as the oldest recent one) and two
    pointers per object, laid out as the tracker lays them out (engine/tracker.py)."""
    glue = ref.glue
    features, mem_pos = encoded  # (B, 64, h, w)
    tokens = features.flatten(2).transpose(1, 2)  # (B, 64, h, w) -> (B, hw, 64)
    spatial = torch.cat([tokens, tokens], dim=1)
    spatial_pos = torch.cat([glue.spatial_memory_pos(mem_pos, 0),
                             glue.spatial_memory_pos(mem_pos, 1)], dim=1)
    b = obj_ptr.shape[0]
    ptrs = torch.stack([obj_ptr, obj_ptr], dim=1)  # (B, 2, 256)
    ago = torch.tensor([0.0, 1.0], device=obj_ptr.device)
    ptr_pos = glue.pointer_pos(ago, ref.cfg.max_obj_ptrs)  # (2, 64)
    ptr_tokens, ptr_tok_pos = glue.pointer_tokens(ptrs, ptr_pos.to(ptrs.dtype))
    memory = torch.cat([spatial, ptr_tokens], dim=1)
    memory_pos = torch.cat([spatial_pos, ptr_tok_pos.expand(b, -1, -1)], dim=1)
    return memory, memory_pos, ptr_tokens.shape[1]


# ------------------------------------------------------------------ remembered verdicts

def verdict_key(part: str, fp16_sha256: str, fp32_sha256: str, tolerance: float) -> dict:
    """What a recorded verdict depends on: both artefacts of the part and the tolerance."""
    return {"part": part, "fp16": fp16_sha256, "fp32": fp32_sha256, "tolerance": tolerance}


def load_verdict(path: Path, key: dict) -> PartCheck | None:
    """The verdict recorded at ``path`` for ``key`` (None when absent, unreadable or stale)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    c = data["check"]
    return PartCheck(c["part"], c["errors"], tuple(c["held"]), c["tolerance"])


def save_verdict(path: Path, key: dict, check: PartCheck) -> None:
    record = {"key": key, "check": {**asdict(check), "held": list(check.held)}}
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True))
