"""The bundled compact model really tracks: J&F on held-out synthetic clips, torch and onnxruntime.

A CI-sized subset of the benchmark (``engine.benchmarks.quality``): one clip per phenomenon,
24 frames, one click on frame 0. The floors sit below what the committed weights score (see
engine/benchmarks/results/quality.md for the full set) and far above what untrained weights
score (checked here too), so a broken tracker, loader, backend or generator fails here.
"""
import numpy as np
import pytest
import torch

from engine.benchmarks.quality import DEFAULT_CHECKPOINT, DEFAULT_MODEL, run
from engine.tools.metrics import summarize
from engine.tools.synthetic import evaluation_set

FLOOR_JF = 0.85  # overall J&F on the subset: the committed weights score 0.898 here (the full
# 32-clip set of quality.md: see there; the goal is 0.85)
FLOOR_PRESENCE = 0.85  # overall presence accuracy on the subset
MAX_BACKEND_GAP = 0.01  # |J&F(onnxruntime) - J&F(torch)|
MAX_BF16_GAP = 0.02  # |J&F(torch bf16) - J&F(torch fp32)| (full set: -0.0001)
MAX_FILE_BYTES = 20 * 1024 * 1024
# Held-out families (engine/tools/world.py: shapes, textures and motions no training saw), two
# clips per phenomenon, 32 frames, one click: the committed weights score FLOOR_HELD_OUT_SCORE
# here (the weights before them 0.464, and 0.366 before those); the full split is in quality.md.
FLOOR_HELD_OUT = 0.45
FLOOR_HELD_OUT_SCORE = 0.487


@pytest.fixture(scope="module")
def model():
    from engine.checkpoint import load_model

    assert DEFAULT_CHECKPOINT.is_file(), f"bundled weights missing: {DEFAULT_CHECKPOINT}"
    torch.set_num_threads(1)
    return load_model(DEFAULT_CHECKPOINT, DEFAULT_MODEL)


@pytest.fixture(scope="module")
def clips():
    return evaluation_set(per_phenomenon=1, num_frames=24)


@pytest.fixture(scope="module")
def torch_result(model, clips):
    return run("torch", model, clips, log=lambda s: None)


def test_bundled_weights_are_small_and_in_the_official_format():
    from engine.checkpoint import identify, read_state_dict

    assert DEFAULT_CHECKPOINT.stat().st_size < MAX_FILE_BYTES
    state = read_state_dict(DEFAULT_CHECKPOINT)
    assert identify(state) is None, "must not pass for one of Meta's published models"
    assert all(v.dtype == torch.float32 for v in state.values())


def test_torch_tracks_held_out_clips(torch_result):
    s = summarize(torch_result.scores)
    print(f"\ntorch subset: J {s.j:.3f} F {s.f:.3f} J&F {s.jf:.3f} "
          f"presence {s.presence_accuracy:.3f} reacquired {s.reacquired}/{s.reacquire_cases}")
    assert s.jf >= FLOOR_JF
    assert s.presence_accuracy >= FLOOR_PRESENCE


def test_random_weights_do_not_pass(clips):
    """The floor means something: the same architecture untrained scores far below it."""
    from engine.config import get_config
    from engine.model.sam2 import SAM2Model

    torch.manual_seed(0)
    untrained = SAM2Model(get_config(DEFAULT_MODEL)).eval()
    s = summarize(run("torch", untrained, clips[:2], log=lambda s: None).scores)
    print(f"\nuntrained subset: J&F {s.jf:.3f}")
    assert s.jf < FLOOR_JF - 0.2


def test_onnxruntime_matches_torch_quality(model, clips, torch_result, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    ort = run("onnxruntime", model, clips, cache_dir=tmp_path_factory.mktemp("onnx"),
              log=lambda s: None)
    a, b = summarize(torch_result.scores), summarize(ort.scores)
    print(f"\nonnxruntime subset: J&F {b.jf:.3f} (torch {a.jf:.3f})")
    assert abs(b.jf - a.jf) <= MAX_BACKEND_GAP
    assert b.jf >= FLOOR_JF
    per_clip = [abs(x.jf - y.jf) for x, y in zip(torch_result.scores, ort.scores)]
    assert float(np.max(per_clip)) <= 0.05


def test_torch_bf16_keeps_tracking_quality(model, clips, torch_result):
    """bf16 (image encoder and memory attention) moves single masks a little (see
    test_runtimes.py) but must not cost tracking quality."""
    bf16 = summarize(run("torch:bf16", model, clips, log=lambda s: None).scores)
    a = summarize(torch_result.scores)
    print(f"\ntorch:bf16 subset: J&F {bf16.jf:.3f} (torch fp32 {a.jf:.3f})")
    assert abs(bf16.jf - a.jf) <= MAX_BF16_GAP


def test_operator_corrections_are_applied_and_reported(model, clips, torch_result):
    """The --corrections protocol: clicks only where the mask had failed (IoU < 0.5, object in
    view), each applied to its own frame, and the report shows them."""
    from engine.benchmarks.quality import AFTER, CORRECT_BELOW, corrections_report

    corrected = run("torch", model, clips, log=lambda s: None, corrections=True)
    clicks = corrected.corrections
    assert clicks, "the subset has failed frames, so the operator must click somewhere"
    assert all(c.before < CORRECT_BELOW and len(c.after) <= AFTER for c in clicks)
    assert {c.clip for c in clicks} <= {s.name for s in corrected.scores}
    # Clicks are applied: the clicked frames' IoU moves (a click on an object just coming
    # out from behind another can leave a sliver's IoU at 0) and the clips' scores change.
    # What clicks buy is a figure of the full set (quality.md, "with an operator's corrective
    # clicks"), not of the one or two clicks made here.
    assert sum(c.at != c.before for c in clicks) >= len(clicks) / 2
    assert [s.jf for s in corrected.scores] != [s.jf for s in torch_result.scores]
    text = "\n".join(corrections_report(corrected, torch_result))
    assert f"| **overall** | {len(clips)} | {summarize(torch_result.scores).jf:.3f} |" in text


def test_benchmark_can_run_other_memory_rules(model):
    from engine.benchmarks.quality import make_tracker_factory

    assert make_tracker_factory("torch", model)().memory_min_iou == 0.5
    assert make_tracker_factory("torch@all", model)().memory_min_iou is None
    assert make_tracker_factory("torch:bf16@0.7", model)().memory_min_iou == 0.7


def test_frames_where_the_object_is_hidden_stay_out_of_memory(model, clips):
    """The compact model sets ``memory_min_iou``: a tracked frame joins the object's memory
    only when it is judged present with an IoU estimate >= 0.5, so the frames of a full
    occlusion do not push its last good views out; with None (SAM 2's rule) every frame joins."""
    from engine.tools.synthetic import click_inside
    from engine.tracker import StreamingTracker

    assert model.cfg.memory_min_iou == 0.5
    clip = next(c for c in clips if c.name.startswith("occlusion"))
    gated = StreamingTracker(model, max_objects=1)
    plain = StreamingTracker(model, max_objects=1, memory_min_iou=None)
    refused_hidden, admitted = 0, 0
    for t, (frame, truth) in enumerate(clip.frames()):
        for tracker in (gated, plain):
            result = tracker.track(frame).objects.get(1)
            if t == 0:
                tracker.add_prompt(1, points=[click_inside(truth)], labels=[1])
                continue
            stored = tracker.bank(1).latest_frame == t
            if tracker is plain:
                assert stored
                continue
            assert stored == (result.presence_logit > 0 and result.iou >= 0.5), t
            admitted += stored
            refused_hidden += not stored and not truth.any()
    assert refused_hidden >= 1 and admitted >= 10, (refused_hidden, admitted)


def test_held_out_world_tracks_every_prompted_object(model):
    """The generalisation part: every target of a clip with 2-3 prompted objects is tracked
    and scored on every frame, prompted by a click or by its box."""
    from engine.benchmarks.quality import run_world
    from engine.tools.world import held_out_set

    clip = next(c for c in held_out_set(per_phenomenon=1, num_frames=24)
                if c.phenomenon == "interact")
    targets = clip.scene().targets
    for prompt in ("click", "box"):
        r = run_world("torch", model, [clip], prompt, log=lambda s: None)
        assert [s.name for s in r.scores] == [f"{clip.name}#{k}" for k in targets]
        assert r.frames == 24
        for s in r.scores:
            assert len(s.j) == len(s.lost) == len(s.places) == 24
            assert s.j[0] > 0.1, (prompt, s.name, s.j[0])  # the prompt found the object
            assert 0.0 <= s.lost_share <= 1.0
    with pytest.raises(ValueError, match="click"):
        run_world("torch", model, [clip], "scribble", log=lambda s: None)


def test_torch_generalises_to_held_out_families(model):
    """Clips of shape, texture and motion families kept out of training, under camera motion,
    sensor noise, lighting changes, crossing occluders, exits, look-alikes and interacting
    objects: the floor holds the gain the broad-world training bought."""
    from engine.benchmarks.quality import run_world
    from engine.tools.world import held_out_set

    clips = held_out_set(per_phenomenon=2, num_frames=32)
    s = summarize(run_world("torch", model, clips, "click", log=lambda s: None).scores)
    print(f"\nheld-out subset: J&F {s.jf:.3f} presence {s.presence_accuracy:.3f} "
          f"lost and confident {s.lost_confident:.1%} (committed weights: {FLOOR_HELD_OUT_SCORE})")
    assert s.clips >= 16
    assert s.jf >= FLOOR_HELD_OUT


def test_report_parts_replace_only_themselves():
    """A run of some parts rewrites those parts of quality.md and keeps the rest; a file in
    the layout from before the parts counts as the original part."""
    from engine.benchmarks.quality import merge_report

    old = ("# Tracking quality on held-out synthetic clips\n\nWritten by ...\n\n"
           "- model: m\n\n## torch\n\n| a |\n")
    merged = merge_report(old, {"held-out": "## Held-out families\n\nfirst"})
    assert "## Original benchmark split\n\n- model: m\n\n### torch\n\n| a |" in merged
    assert merged.index("quality part: original") < merged.index("quality part: held-out")
    again = merge_report(merged, {"held-out": "## Held-out families\n\nsecond",
                                  "long": "## Long streams\n\nthird"})
    assert "first" not in again and "second" in again and "third" in again
    assert "### torch\n\n| a |" in again
    assert merge_report(again, {}) == again
