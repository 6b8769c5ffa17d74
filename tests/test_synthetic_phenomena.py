"""Scripted phenomena of the synthetic world and the held-out evaluation set.

The masks must stay exactly what was drawn with look-alikes, occluding panels and exits in the
scene; occlusions must hide the target completely on their frames; exits must take it out of
the frame and bring it back; the evaluation set must be reproducible and disjoint from the
training seeds.
"""
import numpy as np
import pytest

from engine.tools.synthetic import (DISTRACTOR_ID0, OCCLUDER_ID0, OCCLUDER_RAMP, PHENOMENA,
                              TRAIN_SEED_BASE, Exit, Occlusion, Scene, click_inside,
                              evaluation_set)

BUSY = dict(num_objects=3, distractors=2, occlusions=(Occlusion(1, 6, 5),),
            exit_schedule=(Exit(2, 3, 4),))


def _areas(scene, count, obj_id):
    return [int(m[obj_id].sum()) for _, m in scene.frames(count)]


def test_masks_are_what_was_drawn_with_every_phenomenon():
    frames = list(Scene(seed=4, **BUSY).frames(20))
    for t in (0, 8, 19):
        empty = Scene(seed=4, **BUSY)
        list(empty.frames(t + 1))  # same motion, then draw the background alone
        empty.objects = []
        background = empty.render(t)[0]
        frame, masks = frames[t]
        union = np.zeros(frame.shape[:2], bool)
        for m in masks.values():
            assert not (union & m).any(), "visible masks must not overlap"
            union |= m
        assert np.array_equal(frame[~union], background[~union])
        assert (frame != background).any(-1)[union].mean() > 0.95


def test_occlusion_hides_the_target_completely_then_reveals_it():
    start, duration = 10, 6
    scene = Scene(seed=1, num_objects=2, occlusions=(Occlusion(1, start, duration),))
    areas = _areas(scene, 30, 1)
    assert all(a == 0 for a in areas[start:start + duration])
    assert min(areas[:start - OCCLUDER_RAMP - 1]) > 0
    assert min(areas[start + duration + OCCLUDER_RAMP + 1:]) > 0
    panel = [int(m[OCCLUDER_ID0].sum()) for _, m in Scene(
        seed=1, num_objects=2, occlusions=(Occlusion(1, start, duration),)).frames(30)]
    assert panel[0] == 0 and panel[start] > 0, "the panel is only around during the occlusion"


def test_scheduled_exit_leaves_and_comes_back():
    scene = Scene(seed=3, num_objects=2, exit_schedule=(Exit(1, 5, 6),))
    visible = np.array(_areas(scene, 60, 1)) > 0
    assert visible[:5].all()
    gone = np.flatnonzero(~visible)
    assert gone.size >= 6 and gone[0] > 5, "left the frame after the scheduled start"
    assert visible[gone[-1] + 1:].any(), "came back"
    assert visible[-10:].all(), "stays in view once back"


def test_distractors_look_like_object_one():
    scene = Scene(seed=8, num_objects=2, distractors=2)
    target = scene.objects[0]
    copies = [o for o in scene.objects if o.role == "distractor"]
    assert [o.obj_id for o in copies] == [DISTRACTOR_ID0, DISTRACTOR_ID0 + 1]
    for o in copies:
        assert np.array_equal(o.silhouette, target.silhouette)
        shift = (o.sprite - target.sprite)[target.silhouette.astype(bool)].mean(0)
        assert 10 < np.linalg.norm(shift) < 70, "similar colour, not the same"
    _, masks = next(scene.frames(1))
    assert DISTRACTOR_ID0 in masks and DISTRACTOR_ID0 + 1 in masks


def test_evaluation_set_is_fixed_labelled_and_disjoint_from_training():
    a, b = evaluation_set(2, 16), evaluation_set(2, 16)
    assert a == b
    assert [c.phenomenon for c in a] == [p for p in PHENOMENA for _ in range(2)]
    seeds = [c.seed for c in a]
    assert len(set(seeds)) == len(seeds) and max(seeds) < TRAIN_SEED_BASE
    assert {c.seed for c in evaluation_set(2, 16, split=1)}.isdisjoint(seeds)
    frames_a = [f for f, _ in a[0].frames()]
    frames_b = [f for f, _ in b[0].frames()]
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))


@pytest.mark.parametrize("phenomenon", PHENOMENA)
def test_every_clip_starts_with_a_clickable_target(phenomenon):
    for clip in [c for c in evaluation_set(4, 48) if c.phenomenon == phenomenon]:
        frame, truth = next(clip.frames())
        assert truth.sum() >= 200, clip.name
        x, y = click_inside(truth)
        assert truth[int(y), int(x)]


def test_occlusion_and_exit_clips_lose_and_regain_the_target():
    for clip in evaluation_set(4, 48):
        if clip.phenomenon not in ("occlusion", "exit"):
            continue
        visible = np.array([m.sum() > 0 for _, m in clip.frames()])
        gone = np.flatnonzero(~visible)
        assert gone.size, f"{clip.name}: the target never vanished"
        assert visible[gone[-1] + 1:].any(), f"{clip.name}: the target never came back"
