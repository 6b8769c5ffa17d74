"""Builds the engine the node runs from its config.

The only place ``sam2_ros`` touches ``engine``: choosing a runtime, loading a checkpoint (or
building seeded random weights when none is given) and wrapping the streaming tracker.
Every refusal raises ``BackendError`` with a reason a user can act on.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from .config import NodeConfig

RANDOM_WEIGHTS_WARNING = ("random weights: masks are not meaningful; pass checkpoint:=... for "
                          "Meta's weights")


class BackendError(RuntimeError):
    """The engine cannot be built from this config; the text says why."""


@dataclass
class Engine:
    tracker: Any  # engine.tracker.StreamingTracker (results: engine.tracker.ObjectResult)
    make_scratch_tracker: Callable[[], Any]  # a fresh tracker on the same model (replays)
    weights: str  # what the weights are, for logs and diagnostics
    backend: str  # runtime and device, for diagnostics


def build_engine(cfg: NodeConfig) -> Engine:
    """The tracker ``cfg`` asks for. Raises BackendError naming what is wrong."""
    if cfg.backend != "torch":
        raise BackendError(f"backend {cfg.backend!r} is not available in this version of the "
                           "engine; use backend:=torch")
    if cfg.precision != "fp32":
        raise BackendError(f"precision {cfg.precision!r} is not supported by the torch backend "
                           "yet; use precision:=fp32")
    import torch

    from engine.checkpoint import CheckpointError, load_model
    from engine.config import get_config
    from engine.model.sam2 import SAM2Model
    from engine.tracker import StreamingTracker

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {cfg.device!r} asked for, but torch sees no CUDA GPU; "
                           "use device:=cpu")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model_cfg = replace(get_config(cfg.model), image_size=cfg.image_size)
    if cfg.checkpoint:
        try:
            model = load_model(cfg.checkpoint, model_cfg, device=cfg.device)
        except CheckpointError as err:
            raise BackendError(str(err)) from err
        weights = f"{cfg.checkpoint} ({cfg.model}, image_size {cfg.image_size})"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = SAM2Model(model_cfg).to(cfg.device).eval()
        weights = (f"RANDOM weights ({cfg.model}, seed {cfg.seed}, image_size "
                   f"{cfg.image_size}): {RANDOM_WEIGHTS_WARNING}")

    def make() -> Any:
        return StreamingTracker(model, max_objects=cfg.max_objects,
                                max_cond_frames=cfg.max_cond_frames)

    return Engine(make(), make, weights, f"torch {torch.__version__} fp32 on {cfg.device}")
