"""Applying a prompt on a recent past frame and carrying the object forward.

A user clicks on the frame they saw; by the time the click arrives the stream has moved on.
``carry_forward`` applies the prompt on that frame in a scratch tracker (same model, empty
memory), follows the object through the later frames, and returns its result on the last one.
The caller then hands that mask to its live tracker as a mask prompt on the current frame, so
the live tracker's other objects and memories are untouched. Uses only the public
``StreamingTracker`` API; the cost is one ``track`` per replayed frame.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .prompts import CheckedPrompt, Prompt


def carry_forward(make_tracker: Callable[[], Any], frames: Sequence[np.ndarray], obj_id: int,
                  prompt: Prompt | CheckedPrompt, seed_mask: np.ndarray | None = None) -> Any:
    """Prompt ``obj_id`` on ``frames[0]`` and track it to ``frames[-1]``; its result there.

    frames: (H, W, 3) uint8 RGB, oldest first (at least one). prompt: a Prompt
    (engine/prompts.py), or a CheckedPrompt checked for ``frames[0]``'s size (applied as it
    is, not checked again; see ``StreamingTracker.apply_prompt``). seed_mask: (H, W) bool,
    the object's mask on ``frames[0]`` when the prompt refines an object already tracked
    (applied first).
    """
    if not frames:
        raise ValueError("carry_forward needs at least the frame the prompt was made on")
    tracker = make_tracker()
    tracker.track(frames[0])
    if seed_mask is not None and seed_mask.any():
        tracker.add_prompt(obj_id, mask=seed_mask)
    result = tracker.apply_prompt(obj_id, prompt)
    for frame in frames[1:]:
        result = tracker.track(frame).objects[obj_id]
    return result
