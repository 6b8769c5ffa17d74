"""The node's ROS-free parts, in-process and fast: image conversion for every accepted encoding,
the bad-input table of conversion, parameter validation, the newest-frame worker and the frame
window. (The node itself, over DDS, is in test_ros_node.py.)"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from sensor_msgs.msg import CompressedImage, Image

from sam2_ros.config import PARAMETERS, NodeConfig, check_parameter, defaults
from sam2_ros.conversions import (ENCODINGS, InputError, compressed_to_rgb, fill_image,
                                  image_to_rgb, label_image, prompt_from_request)
from sam2_ros.session import Frame, FrameWindow
from sam2_ros.worker import LatestFrameWorker
from sam2_ros_interfaces.srv import AddPrompt

ROOT = Path(__file__).resolve().parents[1]
RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
GREY = RGB[..., 0].copy()


def _msg(array: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image of ``array`` whose rows carry ``pad`` extra bytes (step > width * bpp)."""
    h = array.shape[0]
    rows = np.ascontiguousarray(array).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    msg = fill_image(Image(), rows, encoding)
    msg.width = array.shape[1]
    return msg


# encoding -> (array to send, expected RGB)
CASES = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[..., ::-1], RGB),
    "8UC3": (RGB[..., ::-1], RGB),
    "rgba8": (np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    "bgra8": (np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    "8UC4": (np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    "mono8": (GREY, np.dstack([GREY] * 3)),
    "8UC1": (GREY, np.dstack([GREY] * 3)),
    "mono16": (GREY.astype(np.uint16) << 8, np.dstack([GREY] * 3)),
    "16UC1": (GREY.astype(np.uint16) << 8 | 0x55, np.dstack([GREY] * 3)),
    "rgb16": (RGB.astype(np.uint16) << 8, RGB),
    "bgr16": (RGB[..., ::-1].astype(np.uint16) << 8, RGB),
}


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", sorted(CASES))
def test_image_encodings_give_rgb(encoding, pad):
    """Every plain encoding decodes to the expected RGB, with or without row padding."""
    array, expected = CASES[encoding]
    out = image_to_rgb(_msg(array, encoding, pad))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_big_endian_mono16():
    msg = _msg((GREY.astype(np.uint16) << 8).astype(">u2"), "mono16")
    msg.is_bigendian = 1
    np.testing.assert_array_equal(image_to_rgb(msg)[..., 0], GREY)


@pytest.mark.parametrize("encoding", [e for e in ENCODINGS if e not in CASES])
def test_camera_raw_encodings_decode(encoding):
    """YUV 4:2:2 and Bayer frames (what many camera drivers send) decode to RGB of the size;
    a flat grey stays grey."""
    packed = encoding.startswith(("yuv", "uyvy", "yuyv"))  # 2 bytes per pixel
    raw = np.full((6, 8, 2) if packed else (6, 8), 128, np.uint8)
    out = image_to_rgb(_msg(raw, encoding))
    assert out.shape == (6, 8, 3)
    assert np.abs(out.astype(int) - 128).max() <= 2


def _broken(**changes) -> Image:
    msg = _msg(RGB, "rgb8")
    for k, v in changes.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("msg,match", [
    (_broken(encoding="rgb42"), "unsupported image encoding 'rgb42'"),
    (_broken(encoding="32FC1"), "unsupported image encoding"),
    (_broken(height=0, width=0, step=0, data=b""), "empty image"),
    (_broken(data=bytes(RGB.tobytes()[:-5])), "truncated image: 139 bytes"),
    (_broken(step=10), "step 10 is shorter than a row of 8 rgb8 pixels"),
    (_broken(width=100000), "too large"),
    (_msg(np.zeros((6, 7, 2), np.uint8), "yuv422"), "even width"),
])
def test_bad_images_are_refused_with_reason(msg, match):
    with pytest.raises(InputError, match=match):
        image_to_rgb(msg)


def test_compressed_images():
    ok, jpg = cv2.imencode(".jpg", np.zeros((6, 8, 3), np.uint8) + 200)
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes())).shape == (6, 8, 3)
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    np.testing.assert_array_equal(
        compressed_to_rgb(CompressedImage(format="png", data=png.tobytes())), RGB)
    with pytest.raises(InputError, match="corrupt compressed image"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes()[:20] + b"garbage"))
    with pytest.raises(InputError, match="empty compressed image"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_label_image_and_fill_roundtrip():
    a = np.zeros((4, 5), bool)
    a[:2] = True
    b = np.zeros((4, 5), bool)
    b[1:3] = True
    labels = label_image({10: a, 20: b}, {10: 1, 20: 2}, (4, 5))
    assert labels[0].tolist() == [1] * 5 and labels[1].tolist() == [2] * 5  # overlap: higher
    msg = fill_image(Image(), labels, "mono8")
    assert (msg.step, len(msg.data)) == (5, 20)
    np.testing.assert_array_equal(image_to_rgb(msg)[..., 0], labels)


@pytest.mark.parametrize("fields,match", [
    (dict(points_x=[1.0, 2.0], points_y=[1.0], labels=[1]), "differ in length"),
    (dict(points_x=[1.0], points_y=[1.0], labels=[1, 0]), "differ in length"),
])
def test_prompt_structure_checked(fields, match):
    with pytest.raises(InputError, match=match):
        prompt_from_request(AddPrompt.Request(**fields), (6, 8))


def test_mask_prompt_checked():
    req = AddPrompt.Request()
    fill_image(req.mask, np.zeros((6, 8), np.uint8), "mono8")
    with pytest.raises(InputError, match="mask prompt is empty"):
        prompt_from_request(req, (6, 8))
    with pytest.raises(InputError, match="mask prompt is 8x6, the frame is 16x12"):
        prompt_from_request(req, (12, 16))
    fill_image(req.mask, np.zeros((6, 8, 3), np.uint8), "rgb8")
    with pytest.raises(InputError, match="must be mono8"):
        prompt_from_request(req, (6, 8))


# ------------------------------------------------------------------ parameters
@pytest.mark.parametrize("name,value,match", [
    ("image_size", 100, "multiple of 32"),
    ("image_size", "256", "expected int"),
    ("model", "sam3_huge", "unknown model"),
    ("backend", "tflite", "must be one of torch, onnxruntime, tensorrt"),
    ("device", "gpu", "'cpu', 'cuda' or 'cuda:N'"),
    ("max_objects", 0, r"\[1, 65535\]"),
    ("presence_threshold", 1.5, r"\[0.0, 1.0\]"),
    ("presence_threshold", float("nan"), r"\[0.0, 1.0\]"),
    ("input_transport", "theora", "raw, compressed"),
    ("input_qos", "best", "sensor_data, reliable"),
    ("prompt_window_s", -1.0, "number in"),
    ("memory_admission", "1.5", r"'model' .*, 'all' .* or an IoU threshold in \[0, 1\]"),
    ("memory_admission", "some", r"'model' .*, 'all' .* or an IoU threshold in \[0, 1\]"),
    ("memory_admission", 0.5, "expected str"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_invalid_parameters_refused_with_reason(name, value, match):
    reason = check_parameter(name, value)
    assert reason is not None and name in reason
    assert __import__("re").search(match, reason), reason


def test_defaults_run_the_bundled_compact_model():
    """Out of the box the node tracks with the bundled weights at the model's own size."""
    import torch

    from engine.checkpoint import bundled_checkpoint, read_state_dict
    from engine.config import get_config
    from sam2_ros.backend import _load_model

    cfg = NodeConfig.from_values(defaults())
    assert cfg.model == "sam2_ros_compact" and cfg.checkpoint == "" and not cfg.random_weights
    assert cfg.model_image_size == get_config("sam2_ros_compact").image_size
    model, weights = _load_model(cfg)
    path = bundled_checkpoint("sam2_ros_compact")
    assert weights.startswith(f"bundled weights {path}")
    for k, v in read_state_dict(path).items():
        assert torch.equal(model.state_dict()[k], v), k


def test_torch_bf16_and_refused_precisions():
    from sam2_ros.backend import BackendError, load_tracker

    engine = load_tracker(NodeConfig.from_values({**defaults(), "precision": "bf16",
                                                  "num_threads": 1}))
    assert engine.backend == "torch bf16 on cpu, 1 CPU thread(s)"
    assert engine.tracker.runtime.precision == "bf16"
    assert engine.tracker.memory_min_iou == 0.5  # memory_admission 'model': the compact's own
    with pytest.raises(BackendError, match="precision 'fp16' is not supported by the torch "
                                           "backend on cpu; use one of fp32, bf16"):
        load_tracker(NodeConfig.from_values({**defaults(), "precision": "fp16"}))


def test_memory_admission_reaches_the_tracker():
    from engine.config import parse_memory_rule

    assert [parse_memory_rule(v) for v in ("model", "all", "0.7", "0")] == ["model", None, 0.7,
                                                                           0.0]
    for bad in ("1.5", "nan", "some", ""):
        with pytest.raises(ValueError, match=f"memory rule {bad!r} must be 'model'"):
            parse_memory_rule(bad)
    cfg = NodeConfig.from_values({**defaults(), "memory_admission": "all", "num_threads": 1})
    from sam2_ros.backend import load_tracker

    engine = load_tracker(cfg)
    assert engine.tracker.memory_min_iou is None
    assert engine.make_scratch_tracker().memory_min_iou is None


def test_inference_threads_leave_one_cpu_free_by_default(monkeypatch):
    import os

    from sam2_ros.backend import inference_threads

    for usable, expected in ((1, 1), (2, 1), (8, 7)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=usable: set(range(n)))
        assert inference_threads(NodeConfig.from_values(defaults())) == expected
    # An explicit value wins, whatever the machine has.
    assert inference_threads(NodeConfig.from_values({**defaults(), "num_threads": 3})) == 3


def test_meta_model_without_checkpoint_is_random_and_says_so():
    from sam2_ros.backend import _load_model

    cfg = NodeConfig.from_values({**defaults(), "model": "sam2.1_hiera_tiny", "image_size": 64})
    assert cfg.random_weights and cfg.model_image_size == 64
    assert NodeConfig.from_values({**defaults(), "model": "sam2.1_hiera_tiny"}
                                  ).model_image_size == 1024
    _, weights = _load_model(cfg)
    assert weights.startswith("RANDOM weights (sam2.1_hiera_tiny, seed 0, image_size 64)")


def test_valid_parameters_and_int_for_float():
    assert check_parameter("image_size", 1024) is None
    assert check_parameter("prompt_window_s", 1) is None  # an int where a float is expected
    cfg = NodeConfig.from_values({**defaults(), "prompt_window_s": 1, "max_objects": 300})
    assert cfg.prompt_window_s == 1.0 and cfg.label_encoding == "mono16"
    with pytest.raises(ValueError, match="device='tpu' must be.*image_size=100 must be 0 .the "
                                         "model's own size. or a multiple"):
        NodeConfig.from_values({**defaults(), "image_size": 100, "device": "tpu"})


def test_yaml_lists_every_parameter_with_its_default():
    """config/sam2.yaml and the node's declared defaults say the same thing."""
    params = yaml.safe_load((ROOT / "config" / "sam2.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert check_parameter(name, value) is None
        assert value == PARAMETERS[name].default, name


# ---------------------------------------------------------- worker and window
def test_worker_takes_only_the_newest_frame_and_runs_jobs_first():
    seen, gate = [], threading.Event()

    def process(item):
        gate.wait(5)
        seen.append(item)

    worker = LatestFrameWorker(process, on_error=lambda e: seen.append(e)).start()
    try:
        worker.offer(1)
        time.sleep(0.1)  # 1 is being processed (blocked on the gate)
        for i in range(2, 50):
            worker.offer(i)  # replace each other: no queue grows
        gate.set()
        assert worker.run_job(lambda: "job", timeout=5) == "job"
        end = time.monotonic() + 5
        while seen[-1:] != [49] and time.monotonic() < end:
            time.sleep(0.01)
        assert seen == [1, 49]
        with pytest.raises(KeyError, match="boom"):
            worker.run_job(lambda: {}["boom"], timeout=5)
    finally:
        worker.stop()


def test_worker_survives_a_failing_frame_and_times_out_jobs():
    errors, gate = [], threading.Event()

    def process(item):
        if item == "bad":
            raise RuntimeError("bad frame")
        gate.wait(5)

    worker = LatestFrameWorker(process, on_error=errors.append).start()
    try:
        worker.offer("bad")
        assert worker.run_job(lambda: 1, timeout=5) == 1
        worker.offer("slow")
        time.sleep(0.1)
        ran = []
        with pytest.raises(TimeoutError, match="did not start the request within 0.2 s; it was "
                                               "cancelled and nothing changed"):
            worker.run_job(lambda: ran.append(2), timeout=0.2)
        gate.set()
        assert worker.run_job(lambda: 3, timeout=5) == 3
        assert ran == []  # the timed-out job never ran
        assert [str(e) for e in errors] == ["bad frame"]
    finally:
        worker.stop()


def test_a_job_that_has_started_is_never_reported_cancelled():
    """A timeout only cancels a job that has not started; one that is running when the time is
    up is waited for and its real outcome returned (never 'refused' for something done)."""
    started, applied = threading.Event(), []

    def slow_job():
        started.set()
        time.sleep(0.4)
        applied.append("done")
        return "applied"

    worker = LatestFrameWorker(lambda item: None, on_error=lambda e: None).start()
    try:
        assert worker.run_job(slow_job, timeout=0.1) == "applied"
        assert applied == ["done"]
        started.clear()
        job = worker.submit(slow_job)
        assert started.wait(5)
        assert not job.cancel() and job.finished.wait(5) and job.result == "applied"
    finally:
        assert worker.stop()
    with pytest.raises(RuntimeError, match="shutting down"):
        worker.submit(lambda: None)


def test_worker_queue_is_bounded_and_says_so():
    gate = threading.Event()
    worker = LatestFrameWorker(lambda item: None, on_error=lambda e: None, max_jobs=2).start()
    try:
        worker.submit(lambda: gate.wait(5))
        end = time.monotonic() + 5
        while worker.pending_jobs() and time.monotonic() < end:  # the first one is running
            time.sleep(0.01)
        queued = [worker.submit(lambda: None) for _ in range(2)]
        with pytest.raises(OverflowError,
                           match=r"2 requests are already waiting for the tracker \(at most 2\)"):
            worker.submit(lambda: None)
        gate.set()
        assert all(j.finished.wait(5) and j.error is None for j in queued)
    finally:
        worker.stop()


def test_frame_window_is_bounded_in_time_and_count():
    window = FrameWindow(window_s=0.5, max_frames=3)
    now = time.monotonic()
    for i in range(5):
        window.push(Frame(i + 1, 100 + i, None, received=now - 1.0 + 0.1 * i))
    assert window.newest().seq == 5
    assert window.find(100) is None and window.find(101) is None  # evicted (count)
    window.push(Frame(6, 200, None, received=now))
    assert window.find(104) is None  # older than 0.5 s
    assert window.find(200).seq == 6


def test_prompt_on_a_frame_the_tracker_has_not_reached_uses_the_newest_frame():
    """A stamped prompt whose frame has left the window while the tracker was still behind it
    (a slow first frame) goes to the newest received frame, never to the older frame the
    tracker happens to be on, where the object was elsewhere."""
    from sam2_ros.backend import load_tracker
    from sam2_ros.diagnostics import FrameStats
    from sam2_ros.session import TrackingSession
    from sam2_ros_interfaces.srv import AddPrompt

    cfg = NodeConfig.from_values({**defaults(), "num_threads": 1, "prompt_window_s": 0.5})
    engine = load_tracker(cfg)  # warmed up on a tracker of its own: this one starts fresh
    assert engine.tracker.frame_index is None and engine.tracker.object_ids == []
    published = []
    session = TrackingSession(engine, lambda: cfg, lambda msg: msg,
                              lambda frame, results, labels: published.append(frame.seq),
                              FrameStats(), lambda text: None)
    old = time.monotonic() - 5.0
    frames = [Frame(i + 1, 1_000 + i, np.full((48, 64, 3), 40 * i, np.uint8),
                    received=old + 0.01 * i) for i in range(3)]
    frames.append(Frame(4, 2_000, np.zeros((48, 64, 3), np.uint8), received=time.monotonic()))
    session.window.push(frames[0])
    session.process(frames[0])  # the tracker is on frame 1 ...
    for f in frames[1:]:
        session.window.push(f)  # ... frames 2-3 have expired, frame 4 is the newest received
    req = AddPrompt.Request(object_id=1, points_x=[10.0], points_y=[10.0], labels=[1])
    out = session.prompt(1, req, stamp_ns=1_002)  # made on frame 3, no longer promptable
    assert out.applied_stamp_ns == 2_000, out.message
    assert session.current is frames[3] and published == [1, 4]
    assert "newest frame was used" in out.message
    # a prompt on the tracker's own frame still applies there
    assert session.prompt(1, req, stamp_ns=2_000).applied_stamp_ns == 2_000


def test_a_prompt_request_is_checked_once(monkeypatch):
    """One AddPrompt request through the session is checked once (before anything is applied
    or replayed), on the tracker's frame and on a past frame carried forward alike; the
    engine's checks still refuse a bad one, with its reason, leaving nothing behind. Counted
    at the clicks' check (engine/prompts.py), which every check of a click prompt makes once,
    whoever calls it; the carried object's own mask prompts are other prompts."""
    import engine.prompts as prompts
    from engine.tools.synthetic import Scene, click_inside
    from sam2_ros.backend import load_tracker
    from sam2_ros.diagnostics import FrameStats
    from sam2_ros.session import TrackingSession

    checks = []
    check_points = prompts._check_points

    def spy(*args, **kwargs):
        checks.append(args[0])
        return check_points(*args, **kwargs)

    cfg = NodeConfig.from_values({**defaults(), "num_threads": 1})
    session = TrackingSession(load_tracker(cfg), lambda: cfg, lambda msg: msg,
                              lambda *a: None, FrameStats(), lambda *a: None)
    scene = list(Scene(64, 48, 1, seed=5, object_size=(20, 26)).frames(3))
    for i, (rgb, _) in enumerate(scene):
        frame = Frame(i + 1, 1_000 + i, rgb, received=time.monotonic())
        session.window.push(frame)
        session.process(frame)
    monkeypatch.setattr(prompts, "_check_points", spy)

    def request(x: float, y: float) -> AddPrompt.Request:
        return AddPrompt.Request(object_id=1, points_x=[x], points_y=[y], labels=[1])

    now = session.prompt(1, request(*click_inside(scene[2][1][1])), stamp_ns=1_002)
    assert len(checks) == 1 and "applied to frame 0.000001002;" in now.message, now.message
    past = session.prompt(1, request(*click_inside(scene[0][1][1])), stamp_ns=1_000)
    assert len(checks) == 2 and "carried forward" in past.message, past.message
    with pytest.raises(InputError, match="outside the frame") as err:
        session.prompt(2, request(70.0, 5.0), stamp_ns=1_000)
    assert err.value.kind == "outside" and len(checks) == 3
    assert sorted(session.labels) == [1]


# ------------------------------------------------------- hostile input, cheap checks
def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + body +
            struct.pack(">I", zlib.crc32(body)) + b"\x00" * 16)


def test_compressed_size_is_read_from_the_header():
    from sam2_ros.conversions import compressed_size

    ok, jpg = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))
    assert compressed_size(jpg.tobytes()) == ("jpeg", 50, 30)
    ok, png = cv2.imencode(".png", np.zeros((7, 9), np.uint8))
    assert compressed_size(png.tobytes()) == ("png", 9, 7)
    assert compressed_size(_png(10000, 10000)) == ("png", 10000, 10000)
    with pytest.raises(InputError, match="unsupported compressed format .first bytes 474946"):
        compressed_size(b"GIF89a" + bytes(30))
    with pytest.raises(InputError, match="jpeg.: no frame header"):
        compressed_size(jpg.tobytes()[:20])


@pytest.mark.parametrize("width,height", [(10000, 10000), (20000, 240), (240, 9000)])
def test_compressed_images_over_the_cap_are_refused_before_decoding(width, height, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image over the size cap")
    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(InputError, match=f"image too large .{width}x{height}, png header.: at "
                                         "most 8192 pixels a side"):
        compressed_to_rgb(CompressedImage(format="png", data=_png(width, height)))


def test_raw_and_compressed_share_the_side_cap():
    msg = _msg(np.zeros((2, 20, 3), np.uint8), "rgb8")
    with pytest.raises(InputError, match="at most 16 pixels a side"):
        image_to_rgb(msg, max_side=16)
    ok, png = cv2.imencode(".png", np.zeros((2, 20, 3), np.uint8))
    with pytest.raises(InputError, match="at most 16 pixels a side"):
        compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()), max_side=16)


def test_input_errors_name_their_kind():
    cases = [(_broken(encoding="rgb42"), "encoding"), (_broken(data=b"1"), "truncated"),
             (_broken(width=100000), "too_large"), (_broken(step=1), "step")]
    for msg, kind in cases:
        with pytest.raises(InputError) as err:
            image_to_rgb(msg)
        assert err.value.kind == kind


def test_prompt_size_caps():
    from engine.prompts import MAX_POINTS, Prompt, check_prompt
    from sam2_ros.conversions import check_prompt_size

    n = MAX_POINTS + 1
    req = AddPrompt.Request(points_x=[1.0] * n, points_y=[1.0] * n, labels=[1] * n)
    with pytest.raises(InputError, match=f"too many clicks: {n} in one prompt, at most "
                                         f"{MAX_POINTS}"):
        prompt_from_request(req, (6, 8))
    with pytest.raises(ValueError, match=f"too many clicks: {n}"):
        check_prompt(Prompt(points=[(1, 1)] * n, labels=[1] * n), (6, 8), image_size=64)
    req = AddPrompt.Request()
    fill_image(req.mask, np.ones((6, 8), np.uint8), "mono8")
    check_prompt_size(req)  # the frame's size: fine
    req.mask.data = bytes(6 * 8 * 100)
    with pytest.raises(InputError, match="mask prompt too large: 4800 bytes"):
        check_prompt_size(req)


def test_log_throttle_is_per_kind_and_bounded():
    from sam2_ros.diagnostics import LogThrottle

    throttle = LogThrottle(period_s=5.0, max_kinds=4)
    assert throttle.allow("encoding", now=0.0) == 0
    assert [throttle.allow("encoding", now=t) for t in (1.0, 2.0)] == [None, None]
    assert throttle.allow("truncated", now=2.0) == 0  # another kind is not held back
    assert throttle.allow("encoding", now=6.0) == 2  # and says how many it held
    for i in range(100):  # unbounded kinds share one slot
        throttle.allow(f"kind{i}", now=7.0)
    assert len(throttle) <= 4


def test_diagnostics_level_follows_failures_and_state():
    from diagnostic_msgs.msg import DiagnosticStatus

    from sam2_ros.diagnostics import FrameStats, diagnostic_array

    stats = FrameStats()
    stats.on_processed(0.01, 0)
    stats.on_processed(0.01, 0)
    level = lambda state="active": diagnostic_array(  # noqa: E731
        None, "n", "h", stats.snapshot(), {}, state).status[0]
    assert level().level == DiagnosticStatus.OK
    stats.on_worker_error("RuntimeError('boom')")
    status = level()
    assert status.level == DiagnosticStatus.ERROR and "boom" in status.message
    stats.on_processed(0.01, 0)
    assert level().level == DiagnosticStatus.OK  # recovered
    assert level("inactive").level == DiagnosticStatus.WARN
    stats.on_configure_failed("configure failed: no such file")
    status = level("unconfigured")
    assert status.level == DiagnosticStatus.ERROR and "no such file" in status.message


def test_shm_segment_of_the_profiles():
    from sam2_ros.transport import FASTDDS_DEFAULT_SEGMENT, shm_segment_bytes

    for name in ("fastdds_profile.xml", "fastdds_loopback.xml"):
        path = str(ROOT / "config" / name)
        assert shm_segment_bytes({"FASTRTPS_DEFAULT_PROFILES_FILE": path}) == 32 * 2**20
    assert shm_segment_bytes({}) == FASTDDS_DEFAULT_SEGMENT
    assert shm_segment_bytes({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None
