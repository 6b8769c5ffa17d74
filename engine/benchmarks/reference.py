"""Meta's video predictor (``sam2==1.1.0``, the fidelity oracle) as a contestant in the speed
benchmark: same random weights as our model, same frames, same prompts, stepped one frame at
a time so its frames interleave with ours under the same machine load.

The reference is a test/benchmark dependency only; ``available()`` says whether it is installed.
Its ``init_state`` loads the whole video up front (resizing and normalising every frame), so
its per-frame time excludes preprocessing, which ours includes.

It runs on the benchmark's device (``build_predictor(cfg, device=...)``), in fp32 or, with
``ReferenceVideo(..., autocast="bf16")``, under bfloat16 autocast as Meta runs it on GPUs
(``torch.autocast("cuda", dtype=torch.bfloat16)`` around prompting and propagation).
"""
from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

from ..config import ModelConfig, reference_config_name
from ..tracker import IMAGENET_MEAN, IMAGENET_STD
from ..timing import FrameTimes, StageClock, device_sync

NOISE_STD = 0.05  # seeded noise on every weight, as tests/oracle.py perturbs the oracle


def available() -> bool:
    return importlib.util.find_spec("sam2") is not None and \
        importlib.util.find_spec("hydra") is not None


def build_predictor(cfg: ModelConfig, seed: int = 0, device="cpu", state_dict=None):
    """The reference video predictor for ``cfg`` on ``device`` with seeded random weights:
    Meta's init from ``seed``, then seeded noise on every parameter and buffer (so
    zero-initialised tensors take part). Load ``predictor.state_dict()`` into a ``SAM2Model``
    to get the same weights. ``state_dict`` (a checkpoint's ``model`` entry) replaces the
    random weights."""
    from sam2.build_sam import build_sam2_video_predictor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = build_sam2_video_predictor(
            reference_config_name(cfg), None, device="cpu",
            hydra_overrides_extra=[f"++model.image_size={cfg.image_size}"])
    if state_dict is not None:
        predictor.load_state_dict(state_dict, strict=True)
    else:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, tensor in sorted(predictor.state_dict(keep_vars=True).items()):
                if tensor.is_floating_point():
                    tensor.add_(torch.randn(tensor.shape, generator=gen) * NOISE_STD)
    return predictor.to(device).eval()


def normalised_frames(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """(T, 3, S, S) float32 as the reference's frame loader makes them (frames already S x S)."""
    images = torch.zeros(len(frames), 3, size, size, dtype=torch.float32)
    for i, f in enumerate(frames):
        images[i] = torch.from_numpy(f / 255.0).permute(2, 0, 1)
    images -= torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return images


class ReferenceVideo:
    """One video in the reference predictor, prompted on frame 0, propagated frame by frame.

    frames: (S, S, 3) uint8 RGB at the model's resolution; clicks: {obj_id: (x, y)} positive
    clicks on frame 0; autocast: None (fp32) or "bf16" (bfloat16 autocast on the predictor's
    device). ``step()`` runs the next frame and returns its times (wall and CPU, no stages;
    the device's queued work included) and {obj_id: mask} (host numpy).
    """

    name = "reference"

    def __init__(self, predictor, frames: list[np.ndarray], clicks: dict[int, tuple],
                 autocast: str | None = None, name: str | None = None) -> None:
        import sam2.sam2_video_predictor as vp

        if autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be None or 'bf16', got {autocast!r}")
        self.name = name or self.name
        device = predictor.device
        self._amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16,
                                           enabled=autocast is not None)
        self._clock = StageClock(device_sync(device))
        size = predictor.image_size
        if any(f.shape[:2] != (size, size) for f in frames):
            raise ValueError(f"reference frames must be {size}x{size} (no resizing on either side)")
        images = normalised_frames(frames, size)
        images = images.to(device)  # where Meta's loader puts them (no offloading)
        with mock.patch.object(vp, "load_video_frames", lambda **kw: (images, size, size)):
            self.state = predictor.init_state(video_path="synthetic")
        with _no_hole_filling_warning(), torch.inference_mode(), self._amp():
            for obj_id, (x, y) in clicks.items():
                predictor.add_new_points_or_box(self.state, 0, obj_id, points=[[x, y]],
                                                labels=[1])
            with mock.patch.object(vp, "tqdm", lambda it, **kw: it):  # no progress bars
                self._frames = predictor.propagate_in_video(self.state)
                next(self._frames)  # frame 0: the prompted frame, already decoded

    def step(self) -> tuple[FrameTimes, dict[int, np.ndarray]]:
        with _no_hole_filling_warning(), torch.inference_mode(), self._amp(), \
                self._clock.frame() as record:
            _, ids, video_masks = next(self._frames)
            masks = (video_masks[:, 0] > 0).cpu().numpy()  # one copy, inside the timing
        return record, {i: masks[k] for k, i in enumerate(ids)}


@contextmanager
def _no_hole_filling_warning():
    """The reference fills small holes only with its CUDA extension; on CPU it warns (every
    frame) and skips it. Neither side fills holes here, as in the parity tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="cannot import name '_C'")
        yield
