"""Input checks shared by the graph runners (onnxruntime, TensorRT).

Every feed is checked against what the session or engine itself declares: the set of names,
each tensor's dtype and rank, every static dimension, dynamic dimensions that share a name
(all ``objects`` axes agree) and, for TensorRT, the optimisation profile's range. Errors name
the tensor and say what was expected and what was received (``InputError``, see
``engine/errors.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """A graph input as the runtime declares it.

    shape: ints for static dimensions; a str (axis name) or None for dynamic ones.
    ranges: optional (min, max) per dimension, e.g. from a TensorRT optimisation profile.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int | str | None, ...]
    ranges: tuple[tuple[int, int], ...] | None = None

    def describe(self) -> str:
        dims = ", ".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{_dtype_name(self.dtype)} ({dims})"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _received(t: torch.Tensor) -> str:
    return f"{_dtype_name(t.dtype)} {tuple(t.shape)}"


def check_feed(part: str, specs: list[InputSpec], feed: dict[str, torch.Tensor]) -> dict[str, int]:
    """Check ``feed`` against ``specs``; returns the sizes of the named dynamic axes.

    Raises InputError: "input {name}: expected ... received ..." (or a missing / unexpected
    name), prefixed with the part.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feed]
    unexpected = [n for n in feed if n not in names]
    if missing or unexpected:
        raise InputError(f"{part}: missing inputs {missing}, unexpected inputs {unexpected}; "
                         f"expected exactly {names}")
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        _check_one(part, spec, feed[spec.name], sizes)
    return {axis: size for axis, (size, _) in sizes.items()}


def _check_one(part: str, spec: InputSpec, t: torch.Tensor,
               sizes: dict[str, tuple[int, str]]) -> None:
    where = f"{part}: input {spec.name}"
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{where}: expected a torch.Tensor {spec.describe()}, "
                         f"received {type(t).__name__}")
    if t.dtype != spec.dtype or t.dim() != len(spec.shape):
        raise InputError(f"{where}: expected {spec.describe()}, received {_received(t)}")
    for axis, (want, got) in enumerate(zip(spec.shape, t.shape)):
        if isinstance(want, int) and want >= 0 and want != got:
            raise InputError(f"{where}: expected {spec.describe()}, received {_received(t)} "
                             f"(dimension {axis} must be {want})")
        if spec.ranges is not None:
            lo, hi = spec.ranges[axis]
            if not lo <= got <= hi:
                raise InputError(f"{where}: expected dimension {axis} in [{lo}, {hi}] "
                                 f"(optimisation profile), received {_received(t)}")
        if isinstance(want, str):
            seen = sizes.setdefault(want, (got, spec.name))
            if seen[0] != got:
                raise InputError(f"{where}: expected dimension {axis} ({want!r}) = {seen[0]} "
                                 f"as in input {seen[1]}, received {_received(t)}")
