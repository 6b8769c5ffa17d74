"""The backends and what each supports, as plain data: the one table that the runtimes, the
node's parameters, the command line and the docs read.

The first precision of a backend is its default. Nothing here imports torch or a runtime, so
the table can be read (and parameters checked) before anything heavy loads.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Backend:
    """One inference backend: the devices it runs on and its precisions (default first)."""

    name: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    summary: str

    @property
    def default_precision(self) -> str:
        return self.precisions[0]


TABLE: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", ("cpu", "cuda"), ("fp32", "bf16"),
            "PyTorch eager; bf16 runs the image encoder and memory attention in bfloat16"),
    Backend("onnxruntime", ("cpu", "cuda"), ("fp32", "fp16"),
            "the exported ONNX parts in onnxruntime (CPU or CUDA provider)"),
    Backend("tensorrt", ("cuda",), ("fp16", "fp32"),
            "TensorRT engines built from the exported parts (NVIDIA GPU)"),
)}
BACKENDS: tuple[str, ...] = tuple(TABLE)
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for b in TABLE.values()
                                                  for p in b.precisions))


def check_backend(backend: str, precision: str | None = None, device: str | None = None
                  ) -> Backend:
    """The table's entry for ``backend``; ValueError naming what is not supported (an unknown
    backend, a precision or a device type it does not run) and what is."""
    if backend not in TABLE:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    entry = TABLE[backend]
    if precision is not None and precision not in entry.precisions:
        raise InputError(f"precision {precision!r} is not supported by the {backend} backend; "
                         f"use one of {', '.join(entry.precisions)}")
    if device is not None and str(device).split(":")[0] not in entry.devices:
        raise InputError(f"device {device!r} is not supported by the {backend} backend; it "
                         f"runs on {' or '.join(entry.devices)}")
    return entry


def describe_precisions() -> str:
    """"torch: fp32 | bf16; onnxruntime: ...", default first, for help texts."""
    return "; ".join(f"{b.name}: {' | '.join(b.precisions)}" for b in TABLE.values())
