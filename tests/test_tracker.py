"""The streaming tracker: batching, prompts, bounded memory over a long stream, and bad calls."""
from __future__ import annotations

import functools
import time

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.config import get_config, reference_config_name
from engine.model.sam2 import SAM2Model
from engine.prompts import Prompt, check_prompt
from engine.tracker import StreamingTracker
from oracle import _perturb, save_official_checkpoint

NAME = "sam2.1_hiera_tiny"


@functools.lru_cache(maxsize=4)
def _weights(size: int, noise_seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights made like the oracle's (Meta's init, then seeded noise), from a fixed seed."""
    from sam2.build_sam import build_sam2

    cfg = get_config(NAME, image_size=size)
    torch.manual_seed(0)
    ref = build_sam2(reference_config_name(cfg), None, device="cpu",
                     hydra_overrides_extra=[f"++model.image_size={size}"])
    _perturb(ref, noise_seed)
    return ref.state_dict()


def make_model(size: int) -> SAM2Model:
    model = SAM2Model(get_config(NAME, image_size=size))
    model.load_state_dict(_weights(size), strict=True)
    return model.eval()


def _bounce(start: float, step: float, t: int, lo: float, hi: float) -> float:
    """Position at frame t of a point moving at ``step`` per frame, bouncing between lo and hi."""
    span = hi - lo
    x = (start - lo + step * t) % (2 * span)
    return lo + (x if x <= span else 2 * span - x)


def synthetic_video(size: int, count: int, seed: int = 0, objects: int = 3,
                    width: int | None = None):
    """Textured shapes (ellipse, box, triangle, ...) moving over a textured background, later
    ones in front: [(frame (size, width, 3) uint8 RGB, {obj_id: visible mask (size, width)})];
    ``width`` defaults to ``size`` (square frames).

    Self-contained on purpose: the tests' seeds are chosen for this exact content."""
    rng = np.random.default_rng(seed)
    width = size if width is None else width
    yy, xx = np.mgrid[0:size, 0:width].astype(np.float32)
    tint = rng.uniform(0.4, 1.0, 3)
    background = (120 + 45 * np.sin(xx / 4.0 + 3 * np.cos(yy / 9.0))[..., None] * tint
                  + 25 * np.cos(yy / 6.0)[..., None])
    shapes = []
    for i in range(objects):
        r = size * rng.uniform(0.1, 0.18)
        start = rng.uniform(r, size - r, 2) * (width / size, 1.0)
        shapes.append((i % 3, r, start, rng.uniform(-2.0, 2.0, 2) * size / 64,
                       rng.uniform(20, 235, 3), rng.uniform(2.5, 6.0)))
    video = []
    for t in range(count):
        image, owner = background.copy(), np.zeros((size, width), np.int32)
        for obj_id, (kind, r, start, step, colour, period) in enumerate(shapes, 1):
            cx, cy = (_bounce(start[k], step[k], t, r, side - r)
                      for k, side in ((0, width), (1, size)))
            dx, dy = xx - cx, yy - cy
            if kind == 0:
                inside = (dx / r) ** 2 + (dy / (0.6 * r)) ** 2 <= 1
            elif kind == 1:
                inside = (np.abs(dx) <= r) & (np.abs(dy) <= 0.7 * r)
            else:
                inside = (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) * 0.6) & (dy >= -r)
            texture = colour + 35 * np.sin((xx + 2 * yy) / period)[..., None]
            image[inside] = texture[inside]
            owner[inside] = obj_id
        frame = np.clip(image, 0, 255).astype(np.uint8)
        video.append((frame, {i: owner == i for i in range(1, objects + 1)}))
    return video


def click_inside(mask: np.ndarray) -> tuple[float, float]:
    """The (x, y) pixel of ``mask`` farthest from its border."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


# ------------------------------------------------------------------ batching
def _prompt(tracker: StreamingTracker, obj_id: int, gt: dict, refine: bool = False):
    if refine:
        return tracker.add_prompt(obj_id, points=[click_inside(~gt[obj_id])], labels=[0])
    if obj_id == 2:
        ys, xs = np.nonzero(gt[2])
        return tracker.add_prompt(2, box=[xs.min(), ys.min(), xs.max(), ys.max()])
    return tracker.add_prompt(obj_id, points=[click_inside(gt[obj_id])], labels=[1])


def test_batched_objects_equal_one_at_a_time():
    """Three objects added on different frames (so their banks fill differently and the batch
    is padded) give the same masks and logits as three trackers holding one object each."""
    size, video = 128, synthetic_video(128, 10)
    start = {1: 0, 2: 2, 3: 4}  # frame each object is first prompted on; 1 is refined on 6
    model = make_model(size)
    batched = StreamingTracker(model)
    single = {i: StreamingTracker(model) for i in start}
    worst_iou, worst_logit = 1.0, 0.0
    for t, (frame, gt) in enumerate(video):
        together = batched.track(frame).objects
        for obj_id, tracker in single.items():
            alone = tracker.track(frame).objects
            if start[obj_id] == t or (obj_id == 1 and t == 6):
                refine = t != start[obj_id]
                together[obj_id] = _prompt(batched, obj_id, gt, refine)
                alone = {obj_id: _prompt(tracker, obj_id, gt, refine)}
            if obj_id in alone:
                a, b = together[obj_id], alone[obj_id]
                worst_iou = min(worst_iou, _iou(a.mask, b.mask))
                worst_logit = max(worst_logit, abs(a.presence_logit - b.presence_logit))
                assert a.iou == pytest.approx(b.iou, abs=1e-4)
    print(f"\nbatched vs single: min IoU {worst_iou:.5f}, max logit diff {worst_logit:.2e}")
    # Padding changes matmul shapes: logits move by ~1e-6, flipping a few pixels at the 0 level.
    assert worst_iou >= 0.995 and worst_logit <= 1e-4


# ------------------------------------------------------------------ behaviour
@pytest.fixture(scope="module")
def small():
    """A 64-pixel tracker on one frame of a scene, with object 1 prompted."""
    frames = synthetic_video(64, 2, objects=2)
    tracker = StreamingTracker(make_model(64), max_objects=2)
    tracker.track(frames[0][0])
    tracker.add_prompt(1, points=[click_inside(frames[0][1][1])], labels=[1])
    return tracker, frames


def test_mask_prompt_is_the_output(small):
    """A mask prompt is the answer, as SAM 2 gives it back: through the stride-4 logits."""
    tracker, frames = small
    gt = frames[0][1][2]
    result = tracker.add_prompt(2, mask=gt)
    logits = torch.from_numpy(gt).float()[None, None] * 20 - 10
    low = F.interpolate(logits, size=(16, 16), mode="bilinear", antialias=True)
    expected = (F.interpolate(low, size=(64, 64), mode="bilinear") > 0)[0, 0].numpy()
    assert np.array_equal(result.mask, expected)
    assert result.iou == 1.0 and result.presence > 0.99 and _iou(result.mask, gt) > 0.8
    ys, xs = np.nonzero(expected)
    assert result.box == (xs.min(), ys.min(), xs.max(), ys.max())
    tracker.remove_object(2)


def test_absent_object_has_empty_mask_and_no_box(small):
    tracker, frames = small
    result = tracker.add_prompt(2, mask=np.zeros((64, 64), bool))
    assert result.presence < 0.01 and not result.mask.any() and result.box is None
    tracker.remove_object(2)


def test_frames_of_any_size_and_prompts_in_their_pixels():
    """Frames are resized for the model; masks come back at the frame's size."""
    frames = synthetic_video(96, 3)  # 96 x 96 frames into a 64-pixel model
    wide = [np.ascontiguousarray(np.concatenate([f, f[:, :48]], axis=1)) for f, _ in frames]
    tracker = StreamingTracker(make_model(64))
    tracker.track(wide[0])
    ys, xs = np.nonzero(frames[0][1][1])
    first = tracker.add_prompt(1, box=[xs.min(), ys.min(), xs.max(), ys.max()])
    later = tracker.track(wide[1]).objects[1]
    assert first.mask.shape == later.mask.shape == (96, 144)
    if later.box is not None:
        x0, y0, x1, y1 = later.box
        assert later.mask[y0:y1 + 1, x0:x1 + 1].sum() == later.mask.sum()


def test_mask_logits_are_what_the_mask_is_thresholded_from():
    frames = synthetic_video(96, 2)
    wide = [np.ascontiguousarray(np.concatenate([f, f[:, :48]], axis=1)) for f, _ in frames]
    tracker = StreamingTracker(make_model(64))
    tracker.track(wide[0])
    prompted = tracker.add_prompt(1, points=[click_inside(frames[0][1][1])], labels=[1])
    logits = tracker.mask_logits(1)
    assert logits.shape == (96, 144) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits > 0, prompted.mask)
    tracked = tracker.track(wide[1]).objects[1]
    np.testing.assert_array_equal(tracker.mask_logits(1) > 0, tracked.mask)
    with pytest.raises(KeyError, match=r"unknown object id 7"):
        tracker.mask_logits(7)


def test_memory_dtype_sets_the_storage_of_spatial_memories():
    frame = synthetic_video(64, 1)[0][0]
    sizes = {}
    for dtype in (torch.bfloat16, torch.float32):
        tracker = StreamingTracker(make_model(64), memory_dtype=dtype)
        tracker.track(frame)
        tracker.add_prompt(1, points=[(20, 20)], labels=[1])
        entry = tracker.bank(1)._prompted[0]
        assert entry.features.dtype == dtype
        sizes[dtype] = entry.features.untyped_storage().nbytes()
    assert sizes[torch.float32] == 2 * sizes[torch.bfloat16]
    with pytest.raises(ValueError, match=r"memory_dtype must be one of"):
        StreamingTracker(make_model(64), memory_dtype=torch.int8)


def test_remove_and_reset():
    frames = synthetic_video(64, 4)
    tracker = StreamingTracker(make_model(64))
    tracker.track(frames[0][0])
    for obj_id in (1, 2):
        tracker.add_prompt(obj_id, points=[click_inside(frames[0][1][obj_id])], labels=[1])
    assert sorted(tracker.track(frames[1][0]).objects) == [1, 2]
    tracker.remove_object(1)
    assert sorted(tracker.track(frames[2][0]).objects) == [2]
    tracker.reset()
    assert tracker.object_ids == [] and tracker.track(frames[3][0]).objects == {}
    tracker.add_prompt(5, points=[(10, 10)], labels=[1])  # the current frame stays promptable
    assert tracker.object_ids == [5]


def test_from_checkpoint(tmp_path):
    path = save_official_checkpoint(make_model(64), tmp_path / "sam2.1_hiera_tiny.pt")
    tracker = StreamingTracker.from_checkpoint(path, NAME, image_size=64, max_objects=3)
    assert tracker.max_objects == 3 and tracker.cfg.image_size == 64
    frame = synthetic_video(64, 1)[0][0]
    expected = StreamingTracker(make_model(64))
    for t in (tracker, expected):
        t.track(frame)
    a = tracker.add_prompt(1, points=[(30, 30)], labels=[1])
    b = expected.add_prompt(1, points=[(30, 30)], labels=[1])
    assert np.array_equal(a.mask, b.mask) and a.presence_logit == b.presence_logit


# ------------------------------------------------------------ bounded memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_and_time_stay_flat_over_a_long_stream():
    """1,000 frames at 64 px with two objects, object 1 re-prompted every 50 frames (so its
    prompted frames overflow and get evicted), object 2 removed and re-added every 300 frames:
    banks stay within capacity, their bytes stop growing, process RSS and per-frame time flat.

    Time is the CPU time of this thread with torch on one thread: wall-clock time on a shared
    2-core machine swings several-fold with other processes' load, CPU time does not."""
    frames, warmup, total = synthetic_video(64, 60, seed=5, objects=2), 200, 1000
    tracker = StreamingTracker(make_model(64))
    cap = tracker._new_bank().capacity()
    times, rss, nbytes = [], {}, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in range(total):
            start = time.thread_time()
            tracker.track(frames[t % len(frames)][0])
            times.append(time.thread_time() - start)
            if t % 300 == 0:
                tracker.add_prompt(2, points=[(32, 32)], labels=[1])
            if t % 50 == 0:
                tracker.add_prompt(1, points=[(20, 20)], labels=[1])
            if t % 300 == 299:
                tracker.remove_object(2)
            for obj_id in tracker.object_ids:
                size = tracker.bank(obj_id).size()
                assert (size.prompted <= cap.prompted and size.recent <= cap.recent
                        and size.recent_pointers <= cap.recent_pointers), (t, obj_id, size)
            nbytes.append(tracker.bank(1).nbytes())
            if t in (warmup, total - 1):
                rss[t] = _rss_bytes()
    finally:
        torch.set_num_threads(threads)
    growth = (rss[total - 1] - rss[warmup]) / rss[warmup]
    first, last = np.median(times[warmup:warmup + 200]), np.median(times[-200:])
    print(f"\nRSS {rss[warmup] / 2**20:.1f} -> {rss[total - 1] / 2**20:.1f} MiB "
          f"(growth {100 * growth:+.2f}%), median frame CPU {1e3 * first:.1f} -> "
          f"{1e3 * last:.1f} ms, bank(1) {nbytes[-1]} bytes")
    assert tracker.bank(1).size() == cap
    # A prompt on a tracked frame replaces its recent entry, so the bank dips by one entry on
    # prompt frames; it never holds more than it did once full during warm-up.
    assert max(nbytes[warmup:]) == max(nbytes[:warmup]), "object 1's bank keeps growing"
    assert growth < 0.02, f"RSS grew {100 * growth:.2f}% after warm-up"
    assert last < 1.3 * first, f"per-frame CPU time went from {first:.4f}s to {last:.4f}s"


# ------------------------------------------------------------------ bad calls
FRAME = np.zeros((64, 64, 3), np.uint8)
BAD_CALLS = {
    "unknown id (remove)": (lambda t: t.remove_object(99), KeyError, r"unknown object id 99"),
    "unknown id (bank)": (lambda t: t.bank(42), KeyError, r"unknown object id 42.*tracked ids"),
    "point outside": (lambda t: t.add_prompt(1, points=[(70, 5)], labels=[1]), ValueError,
                      r"point \(70, 5\) is outside the frame: expected 0 <= x <= 64"),
    "negative point": (lambda t: t.add_prompt(1, points=[(5, -1)], labels=[1]), ValueError,
                       r"outside the frame"),
    "NaN point": (lambda t: t.add_prompt(1, points=[(np.nan, 3)], labels=[1]), ValueError,
                  r"points must be finite numbers"),
    "NaN box": (lambda t: t.add_prompt(1, box=[0, 0, np.nan, 4]), ValueError,
                r"box must be finite numbers"),
    "points/labels count": (lambda t: t.add_prompt(1, points=[(1, 1), (2, 2)], labels=[1]),
                            ValueError, r"got 2 points but 1 labels"),
    "points without labels": (lambda t: t.add_prompt(1, points=[(1, 1)]), ValueError,
                              r"points and labels must be given together"),
    "bad label": (lambda t: t.add_prompt(1, points=[(1, 1)], labels=[2]), ValueError,
                  r"labels must be 1 \(on the object\) or 0"),
    "points shape": (lambda t: t.add_prompt(1, points=[(1, 1, 1)], labels=[1]), ValueError,
                     r"points must be shaped \(N, 2\)"),
    "box outside": (lambda t: t.add_prompt(1, box=[0, 0, 65, 10]), ValueError,
                    r"box corner \(65, 10\) is outside the frame"),
    "box inverted": (lambda t: t.add_prompt(1, box=[10, 10, 5, 20]), ValueError,
                     r"x0 <= x1 and y0 <= y1"),
    "box size": (lambda t: t.add_prompt(1, box=[1, 2, 3]), ValueError, r"box must be 4 numbers"),
    "mask size": (lambda t: t.add_prompt(1, mask=np.ones((32, 64), bool)), ValueError,
                  r"mask must have the frame's shape \(H, W\) = \(64, 64\), got \(32, 64\)"),
    "NaN mask": (lambda t: t.add_prompt(1, mask=np.full((64, 64), np.nan)), ValueError,
                 r"mask must be finite"),
    "mask and points": (lambda t: t.add_prompt(1, points=[(1, 1)], labels=[1],
                                               mask=np.ones((64, 64), bool)),
                        ValueError, r"either a mask or clicks/box"),
    "empty prompt": (lambda t: t.add_prompt(1), ValueError, r"empty prompt"),
    "bad id": (lambda t: t.add_prompt("cup", points=[(1, 1)], labels=[1]), ValueError,
               r"object id must be a non-negative integer, got 'cup'"),
    "too many objects": (lambda t: t.add_prompt(3, points=[(1, 1)], labels=[1]), ValueError,
                         r"too many objects: cannot add object 3, max_objects is 2"),
    "not a prompt": (lambda t: t.apply_prompt(1, {"points": [(1, 1)], "labels": [1]}),
                     ValueError, r"a prompt must be an engine.prompts.Prompt, got dict"),
    "checked for another frame": (
        lambda t: t.apply_prompt(1, check_prompt(Prompt([(1, 1)], [1]), (32, 64), 64)),
        ValueError, r"the prompt was checked for a 64x32 frame and a 64 px model input, but "
                    r"the current frame is 64x64"),
    "frame dtype": (lambda t: t.track(FRAME.astype(np.float32)), ValueError,
                    r"frame must have dtype uint8 \(RGB 0-255\), got float32"),
    "frame gray": (lambda t: t.track(FRAME[..., 0]), ValueError,
                   r"frame must have shape \(H, W, 3\).*got \(64, 64\)"),
    "frame RGBA": (lambda t: t.track(np.zeros((64, 64, 4), np.uint8)), ValueError,
                   r"got \(64, 64, 4\)"),
    "frame empty": (lambda t: t.track(np.zeros((0, 64, 3), np.uint8)), ValueError,
                    r"H, W > 0"),
    "frame type": (lambda t: t.track(FRAME.tolist()), ValueError,
                   r"frame must be a numpy array.*got list"),
}


@pytest.fixture(scope="module")
def two_objects():
    tracker = StreamingTracker(make_model(64), max_objects=2)
    tracker.track(FRAME)
    tracker.add_prompt(1, points=[(20, 20)], labels=[1])
    tracker.add_prompt(2, points=[(40, 40)], labels=[1])
    return tracker


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_call_is_refused_with_a_clear_message(two_objects, case):
    call, error, match = BAD_CALLS[case]
    before = {i: two_objects.bank(i).size() for i in two_objects.object_ids}
    with pytest.raises(error, match=match):
        call(two_objects)
    # Nothing was lost or half-added.
    assert {i: two_objects.bank(i).size() for i in two_objects.object_ids} == before


def test_a_prompt_is_checked_once_and_a_checked_prompt_is_not_checked_again(monkeypatch):
    """``add_prompt`` checks its prompt once; ``apply_prompt`` of a prompt already checked
    (``check_prompt``, as the ROS session does before any other work) checks nothing and
    gives the same object as ``add_prompt`` with the same values. Counted at the clicks' and
    the mask's checks, which every check of such a prompt makes once, whoever calls it."""
    import engine.prompts as prompts

    calls = {"points": 0, "mask": 0}

    def counted(name, check):
        def spy(*args, **kwargs):
            calls[name] += 1
            return check(*args, **kwargs)
        return spy

    monkeypatch.setattr(prompts, "_check_points", counted("points", prompts._check_points))
    monkeypatch.setattr(prompts, "_check_mask", counted("mask", prompts._check_mask))
    frames = synthetic_video(64, 2, objects=2)
    click = click_inside(frames[0][1][1])
    trackers = [StreamingTracker(make_model(64), max_objects=2) for _ in range(2)]
    for t in trackers:
        t.track(frames[0][0])
    direct = trackers[0].add_prompt(1, points=[click], labels=[1])
    assert calls == {"points": 1, "mask": 0}
    checked = check_prompt(Prompt([click], [1]), frames[0][0].shape[:2], 64)
    assert calls == {"points": 2, "mask": 0}
    applied = trackers[1].apply_prompt(1, checked)
    assert calls == {"points": 2, "mask": 0}  # applied as checked: no second check
    np.testing.assert_array_equal(applied.mask, direct.mask)
    assert applied.iou == direct.iou and checked.describe() == "1 positive / 0 negative click(s)"
    trackers[0].add_prompt(2, mask=frames[0][1][2])
    assert calls == {"points": 2, "mask": 1}


def test_prompt_before_any_frame_and_bad_settings():
    model = make_model(64)
    with pytest.raises(RuntimeError, match=r"no frame yet: call track\(frame\) before add_prompt"):
        StreamingTracker(model).add_prompt(1, points=[(1, 1)], labels=[1])
    with pytest.raises(ValueError, match=r"max_objects must be a positive integer, got 0"):
        StreamingTracker(model, max_objects=0)
    with pytest.raises(ValueError, match=r"max_cond_frames must be an integer >= 1, got 0"):
        StreamingTracker(model, max_cond_frames=0)
    for bad in (1.5, -0.1, "high", True):
        with pytest.raises(ValueError, match=r"memory_min_iou must be 'model', None or a "
                                             r"number in \[0, 1\], got "):
            StreamingTracker(model, memory_min_iou=bad)
    with pytest.raises(ValueError, match=r"memory_min_iou must be None or in \[0, 1\], got 2"):
        get_config(NAME, memory_min_iou=2)
    # Meta's models store every tracked frame, as SAM 2 does.
    assert StreamingTracker(model).memory_min_iou is None
