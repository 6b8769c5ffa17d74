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
    """One inference backend: the devices it runs on and its precisions (default first).

    ``device_only``: (precision, device type) pairs for precisions that run on that device type
    alone (torch's tf32 and fp16 are CUDA modes)."""

    name: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    summary: str
    device_only: tuple[tuple[str, str], ...] = ()

    def precisions_on(self, device: str) -> tuple[str, ...]:
        """The precisions this backend runs on ``device`` ("cpu", "cuda:1", ...)."""
        kind = str(device).split(":")[0]
        only = dict(self.device_only)
        return tuple(p for p in self.precisions if only.get(p, kind) == kind)

    @property
    def default_precision(self) -> str:
        return self.precisions[0]


TABLE: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", ("cpu", "cuda"), ("fp32", "tf32", "bf16", "fp16"),
            "PyTorch (eager, or compiled with compile=True); bf16 / fp16 run the image encoder "
            "and memory attention under autocast, tf32 allows TensorFloat-32 matrix products",
            device_only=(("tf32", "cuda"), ("fp16", "cuda"))),
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
    """The table's entry for ``backend``; InputError naming what is not supported (an unknown
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
    if device is not None and precision is not None \
            and precision not in entry.precisions_on(device):
        kind = str(device).split(":")[0]
        elsewhere = [f"{p} needs {d}" for p, d in entry.device_only if d != kind]
        raise InputError(f"precision {precision!r} is not supported by the {backend} backend "
                         f"on {kind}; use one of {', '.join(entry.precisions_on(device))} "
                         f"({'; '.join(elsewhere)})")
    return entry


def describe_precisions() -> str:
    """"torch: fp32 | bf16; onnxruntime: ...", default first, for help texts."""
    return "; ".join(f"{b.name}: {' | '.join(b.precisions)}" for b in TABLE.values())
