"""Where exported graphs live and how a cached one is recognised (shared by the exporter,
engine/export/, and the runtimes, engine/runtime/, neither importing the other).

Layout: ``<cache_dir>/<model>-<S>px-<precision>-w<weights digest>/<part>.onnx`` with a JSON
sidecar ``<part>.json`` next to each graph (the memory attention's name carries its capacity,
``memory_attention-m7p16.onnx``). A cached graph is used only when its sidecar matches what is
asked for; anything else is exported again.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .memory_layout import MemoryCapacity
from .model.sam2 import SAM2Model

# Bump when a part's graph computes something different or its inputs/outputs change.
# 2: memory_encoder inputs reordered; SAM 2.0 without object_score_logits.
# 3: LayerNorm2d as one LayerNormalization node (was ReduceMean/Pow/Sqrt).
EXPORT_FORMAT = 3
PRECISIONS = ("fp32", "fp16")


def default_cache_dir() -> Path:
    """Where exports and engines are cached: $SAM2_ROS_CACHE or ~/.cache/sam2_ros."""
    return Path(os.environ.get("SAM2_ROS_CACHE", Path.home() / ".cache" / "sam2_ros"))


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): same weights, same digest."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class PartKey:
    """Everything a part's graph depends on; equal keys mean the cached graph is valid."""

    part: str
    model: str
    image_size: int
    precision: str
    weights: str
    capacity: str  # MemoryCapacity.tag() for the memory attention, "" otherwise
    opset: int
    format: int = EXPORT_FORMAT


def part_key(model: SAM2Model, part: str, precision: str, capacity: MemoryCapacity,
             opset: int, digest: str) -> PartKey:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cap = capacity.tag() if part == "memory_attention" else ""
    return PartKey(part, model.cfg.name, model.cfg.image_size, precision, digest, cap, opset)


def export_dir(cache_dir: str | Path, key: PartKey) -> Path:
    """The folder of one model / image size / precision / weights."""
    return (Path(cache_dir)
            / f"{key.model}-{key.image_size}px-{key.precision}-w{key.weights[:12]}")


def part_path(cache_dir: str | Path, key: PartKey) -> Path:
    stem = f"{key.part}-{key.capacity}" if key.capacity else key.part
    return export_dir(cache_dir, key) / f"{stem}.onnx"


@dataclass
class ExportedPart:
    """A graph on disk and its sidecar metadata."""

    path: Path
    key: PartKey
    sha256: str
    size_bytes: int
    info: dict = field(default_factory=dict)  # dedupe and check reports, I/O, versions

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")

    def save(self) -> None:
        meta = {"key": asdict(self.key), "sha256": self.sha256, "size_bytes": self.size_bytes,
                **self.info}
        self.sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load_if_valid(cls, path: Path, key: PartKey) -> "ExportedPart | None":
        """The cached part at ``path`` if its sidecar matches ``key`` and its size is right."""
        sidecar = path.with_suffix(".json")
        if not (path.is_file() and sidecar.is_file()):
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != asdict(key) or meta.get("size_bytes") != path.stat().st_size:
            return None
        info = {k: v for k, v in meta.items() if k not in ("key", "sha256", "size_bytes")}
        return cls(path, key, meta["sha256"], meta["size_bytes"], info)


@dataclass
class ExportedModel:
    """The exported parts of one model, by part name, and the memory capacity they serve."""

    parts: dict[str, ExportedPart] = field(default_factory=dict)
    capacity: MemoryCapacity = field(default_factory=MemoryCapacity)

    def path(self, part: str) -> Path:
        return self.parts[part].path
