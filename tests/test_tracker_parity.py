"""The streaming tracker against Meta's video predictor (``sam2==1.1.0``) on the same weights.

Both run on a synthetic video of textured shapes moving over a textured background
(``test_tracker.synthetic_video``), frames at the model resolution (no resizing on either side),
the oracle fed the very same normalised pixels. The oracle is driven the way a stream is:
prompts on frame 0 (object 1 by clicks, object 2 by a box and a click), propagation up to frame
``REFINE_AT``, refinement clicks on object 1 there, propagation on, a third object (by a mask)
at ``ADD_AT``, propagation to the end. It is built with ``add_all_frames_to_correct_as_cond=True``:
our tracker makes a refined frame a prompted frame (see ``engine.tracker``).

Hole filling: the video predictor fills small holes only through its CUDA extension; on CPU it
warns and returns the mask scores unchanged, which ``test_oracle_skips_hole_filling_on_cpu``
checks, so neither side fills holes here.

Weights: random, made as ``oracle.build_oracle`` makes them (Meta's init, then seeded noise),
but from a fixed global seed so they do not depend on which test ran first. The seeds and the
scene are chosen so that masks are neither empty nor full on most frames and presence logits
are away from 0 (asserted below), which keeps the comparison meaningful.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine.config import get_config, reference_config_name
from engine.model.sam2 import SAM2Model
from engine.tracker import IMAGENET_MEAN, IMAGENET_STD, StreamingTracker
from oracle import _perturb
from test_tracker import click_inside, synthetic_video

S = 128  # model resolution = frame size
NUM_FRAMES = 16  # >= max_obj_ptrs: the oracle then normalises pointer encodings as we do
REFINE_AT, ADD_AT = 5, 9
# The contract (SPEC 8) is IoU >= 0.99 and presence logits within 1e-3. We measure ~1e-5 and hold
# 1e-4: at 1e-3 real mistakes pass (pointer encodings one frame off moved logits by 1.5e-4, spatial
# memories one temporal slot off by 6e-4, in a mutation check).
MIN_IOU, MAX_LOGIT_DIFF = 0.99, 1e-4
# model name -> (global seed for Meta's init, seed of the perturbation)
CASES = {"sam2.1_hiera_tiny": (0, 0), "sam2_hiera_tiny": (0, 2)}
SCENE_SEED = 3


@pytest.fixture(scope="module")
def video():
    return synthetic_video(S, NUM_FRAMES, seed=SCENE_SEED)


def _prompts(video):
    """Prompts by frame, {frame: [(obj_id, kind, value)]}, from the scene's true masks. Clicks
    on one object and frame accumulate: single click (3 candidates), two clicks (one mask, the
    decoder's stability fallback), box then click, refinement clicks on a tracked frame."""
    (_, gt0), (_, gt_r), (_, gt_a) = video[0], video[REFINE_AT], video[ADD_AT]
    ys, xs = np.nonzero(gt0[2])
    return {0: [(1, "points", ([click_inside(gt0[1])], [1])),
                (2, "box", [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]),
                (1, "points", ([click_inside(~gt0[1])], [0])),
                (2, "points", ([click_inside(gt0[2])], [1]))],
            REFINE_AT: [(1, "points", ([click_inside(~gt_r[1])], [0])),
                        (1, "points", ([click_inside(gt_r[1])], [1]))],
            ADD_AT: [(3, "mask", gt_a[3])]}


def _build(name: str):
    """The oracle video predictor and our model, holding the same random weights."""
    from sam2.build_sam import build_sam2_video_predictor

    init_seed, noise_seed = CASES[name]
    cfg = get_config(name, image_size=S)
    torch.manual_seed(init_seed)
    predictor = build_sam2_video_predictor(
        reference_config_name(cfg), None, device="cpu",
        hydra_overrides_extra=[f"++model.image_size={S}",
                               "++model.add_all_frames_to_correct_as_cond=true"])
    _perturb(predictor, noise_seed)
    predictor.eval()
    ours = SAM2Model(cfg)
    ours.load_state_dict(predictor.state_dict(), strict=True)
    return predictor, ours.eval()


def _oracle_images(frames: list[np.ndarray]) -> torch.Tensor:
    """Frames normalised exactly as the oracle's frame loader does (float64 / 255, then f32)."""
    images = torch.zeros(len(frames), 3, S, S, dtype=torch.float32)
    for i, f in enumerate(frames):
        images[i] = torch.from_numpy(f / 255.0).permute(2, 0, 1)
    images -= torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return images


def _run_oracle(predictor, frames, prompts, monkeypatch):
    """Per frame {obj_id: (mask (S, S) bool, presence logit)} from the reference."""
    import sam2.sam2_video_predictor as vp

    images = _oracle_images(frames)
    monkeypatch.setattr(vp, "load_video_frames", lambda **kw: (images, S, S))
    state = predictor.init_state(video_path="synthetic")
    masks: dict[int, dict[int, np.ndarray]] = {}
    stops = sorted(prompts) + [len(frames) - 1]
    for start, stop in zip(stops[:-1], stops[1:]):
        for obj_id, kind, value in prompts[start]:
            if kind == "points":
                predictor.add_new_points_or_box(state, start, obj_id, points=value[0],
                                                labels=value[1], clear_old_points=False)
            elif kind == "box":
                predictor.add_new_points_or_box(state, start, obj_id, box=value)
            else:
                predictor.add_new_mask(state, start, obj_id, value)
        for t, ids, video_masks in predictor.propagate_in_video(state, start, stop - start):
            masks[t] = {i: (video_masks[k, 0] > 0).numpy() for k, i in enumerate(ids)}
    out = {}
    for t, per_obj in masks.items():
        out[t] = {}
        for obj_id, mask in per_obj.items():
            store = state["output_dict_per_obj"][state["obj_id_to_idx"][obj_id]]
            rec = store["cond_frame_outputs"].get(t) or store["non_cond_frame_outputs"][t]
            out[t][obj_id] = (mask, rec["object_score_logits"].item())
    return out


def _run_ours(model, frames, prompts):
    tracker = StreamingTracker(model)
    out = {}
    for t, frame in enumerate(frames):
        res = {i: (r.mask, r.presence_logit) for i, r in tracker.track(frame).objects.items()}
        for obj_id, kind, value in prompts.get(t, []):
            if kind == "points":
                r = tracker.add_prompt(obj_id, points=value[0], labels=value[1])
            elif kind == "box":
                r = tracker.add_prompt(obj_id, box=value)
            else:
                r = tracker.add_prompt(obj_id, mask=value)
            res[obj_id] = (r.mask, r.presence_logit)
        out[t] = res
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def test_oracle_skips_hole_filling_on_cpu():
    from sam2.utils.misc import fill_holes_in_mask_scores

    with pytest.raises(ImportError):
        from sam2 import _C  # noqa: F401  (the CUDA extension that fills holes)
    scores = torch.randn(1, 1, 32, 32)
    scores[..., 10, 10] = -5.0  # a one-pixel hole in a positive region
    scores[..., 9:12, 9:12] = 5.0
    scores[..., 10, 10] = -5.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(fill_holes_in_mask_scores(scores, 8), scores)


def test_preprocessing_matches_oracle(video):
    tracker = StreamingTracker(SAM2Model(get_config("sam2.1_hiera_tiny", image_size=S)))
    ours = torch.cat([tracker._preprocess(f) for f, _ in video[:3]])
    assert (ours - _oracle_images([f for f, _ in video[:3]])).abs().max().item() <= 1e-6


@pytest.mark.filterwarnings("ignore:cannot import name '_C'")
@pytest.mark.parametrize("name", list(CASES))
def test_tracker_matches_video_predictor(name, video, monkeypatch):
    frames = [f for f, _ in video]
    prompts = _prompts(video)
    predictor, ours = _build(name)
    with torch.inference_mode():
        ref = _run_oracle(predictor, frames, prompts, monkeypatch)
    got = _run_ours(ours, frames, prompts)

    assert sorted(ref) == sorted(got) == list(range(NUM_FRAMES))
    ious, diffs, coverage, logits = [], [], [], []
    for t in range(NUM_FRAMES):
        assert sorted(ref[t]) == sorted(got[t]), f"frame {t}: objects differ"
        for obj_id, (ref_mask, ref_logit) in ref[t].items():
            mask, logit = got[t][obj_id]
            ious.append(_iou(mask, ref_mask))
            diffs.append(abs(logit - ref_logit))
            coverage.append(ref_mask.mean())
            logits.append(ref_logit)
    print(f"\n{name}: {len(ious)} object-frames, min IoU {min(ious):.5f}, "
          f"max presence-logit diff {max(diffs):.2e}")
    # The comparison means something: masks mostly neither empty nor full, logits not ~0.
    assert np.mean([0.01 < c < 0.99 for c in coverage]) >= 0.75, coverage
    assert min(abs(x) for x in logits) > 0.02, logits
    assert min(ious) >= MIN_IOU
    assert max(diffs) <= MAX_LOGIT_DIFF
