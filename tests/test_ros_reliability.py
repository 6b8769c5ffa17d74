"""sam2_node under hostile input, as a real process over loopback DDS: stamps that go backwards,
requests that time out, floods of bad frames and prompts, decompression bombs, bursts of
concurrent prompts, huge prompts, prompts that wait while the lifecycle and the camera go on,
and the lost-frame and error counts of /diagnostics.

One node process serves the module (random weights, image_size 128, 128x96 frames); each test
first brings it to the state it needs (``active``: active, raw input, no objects), so the tests
pass in any order and alone. Signals are in test_ros_shutdown.py.
"""
from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image

from engine.prompts import MAX_POINTS
from engine.tools.synthetic import Scene, click_inside
from ros_helpers import NodeProcess, RosHarness, node_process_fixtures
from sam2_ros.conversions import fill_image
from sam2_ros.diagnostics import parse_status as values
from sam2_ros_interfaces.srv import AddPrompt

W, H = 128, 96
PARAMS = {"model": "sam2.1_hiera_tiny", "image_size": 128, "max_objects": 3,
          "prompt_window_s": 3.0, "prompt_wait_s": 2.0, "diagnostics_period_s": 0.5,
          "qos_depth": 5, "autostart": True}


@pytest.fixture(scope="module")
def scene_frames():
    return list(Scene(W, H, 2, seed=7, object_size=(24, 36)).frames(40))


node, _node_alive = node_process_fixtures(PARAMS)


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        harness.subscribe("tracks", "diagnostics")
        assert harness.wait_subscribers(30.0), node.log()
        yield harness


@pytest.fixture
def active(ros):
    """The node active, with raw input, the module's prompt_wait_s and no objects, whatever ran
    before."""
    ros.walk_to("active")
    assert ros.wait_subscribers(30.0)
    assert ros.set_parameters(prompt_wait_s=PARAMS["prompt_wait_s"])[0].successful
    assert ros.reset().success


def ns(t) -> int:
    return t.sec * 10**9 + t.nanosec


def ids(tracks) -> list[int]:
    return sorted(o.object_id for o in tracks.objects)


def publish_and_track(ros, rgb, stamp: int, timeout: float = 10.0):
    """Publish ``rgb`` under ``stamp`` (again if best effort lost it) until its ~/tracks come."""
    for _ in range(3):
        ros.publish_image(rgb, stamp)
        if ros.wait_for(lambda: ros.find("tracks", stamp) is not None, timeout):
            return ros.find("tracks", stamp)
    raise AssertionError(f"no ~/tracks for frame {stamp}")


def prompt_request(obj_id: int, points=(), labels=(), stamp_ns: int = 0) -> AddPrompt.Request:
    req = AddPrompt.Request(object_id=obj_id, points_x=[float(p[0]) for p in points],
                            points_y=[float(p[1]) for p in points], labels=list(labels))
    req.frame_stamp.sec, req.frame_stamp.nanosec = divmod(stamp_ns, 10**9)
    return req


def call_all(ros, requests, timeout: float = 60.0) -> list:
    """Send every request at once (concurrently, from one client whose queue can hold all the
    answers: refusals come back faster than a Python client takes them) and wait for all."""
    cli = ros.client(AddPrompt, "add_prompt", depth=100)
    assert ros.wait_for(cli.service_is_ready, 20.0)
    futures = [cli.call_async(r) for r in requests]
    assert ros.wait_for(lambda: all(f.done() for f in futures), timeout), \
        f"{sum(not f.done() for f in futures)} of {len(futures)} requests never answered"
    return [f.result() for f in futures]


def diagnostics_status(ros, timeout: float = 5.0) -> DiagnosticStatus:
    """The node's next /diagnostics status (level, message and values)."""
    ros.received["diagnostics"].clear()

    def mine():
        return next((s for m in reversed(ros.received["diagnostics"]) for s in m.status
                     if s.hardware_id == ros.target), None)
    assert ros.wait_for(lambda: mine() is not None, timeout), "no /diagnostics"
    return mine()


def log_count(node, text: str) -> int:
    return node.log().count(text)


# ------------------------------------------------------------ 1. stamps going backwards
def test_frames_whose_stamps_go_backwards_stay_promptable(ros, active, scene_frames):
    """Frames stamped t, t-0.1, t-0.2, t-0.3 s (a looping bag, a clock stepped back): a prompt
    stamped with any of them, sent while it is in the window, is applied to that very frame
    (and carried forward), without waiting for a "later" stamp."""
    assert ros.reset().success
    t = ros.next_stamp() + 10 * 10**9
    stamps = [t - k * 10**8 for k in range(4)]
    truth = None
    for k, stamp in enumerate(stamps):
        rgb, masks = scene_frames[k]
        truth = masks if k == 0 else truth
        publish_and_track(ros, rgb, stamp)
    start = time.monotonic()
    r = ros.add_prompt(1, [click_inside(truth[1])], [1], stamp_ns=stamps[0])
    assert r.success, r.message
    assert ns(r.applied_stamp) == stamps[0] and "carried forward" in r.message, r.message
    assert time.monotonic() - start < PARAMS["prompt_wait_s"], "it waited for a later stamp"
    r = ros.add_prompt(1, [(3.0, 3.0)], [0], stamp_ns=stamps[2])  # a middle one: refine there
    assert r.success and ns(r.applied_stamp) == stamps[2], r.message
    # A stamp below the latest ones that was never received: the newest frame, no wait.
    start = time.monotonic()
    r = ros.add_prompt(2, [(60.0, 40.0)], [1], stamp_ns=stamps[0] - 5 * 10**7)
    assert r.success and "newest frame was used" in r.message, r.message
    assert ns(r.applied_stamp) == stamps[3]
    assert time.monotonic() - start < PARAMS["prompt_wait_s"]
    tracks = publish_and_track(ros, scene_frames[4][0], stamps[3] - 10**8)
    assert ids(tracks) == [1, 2]
    assert ros.reset().success


# -------------------------------------------------------- 2. timed-out prompts tell the truth
def test_prompt_answers_match_what_the_node_did_under_a_short_timeout(
        ros, active, scene_frames):
    """With service_timeout_s far shorter than a prompt, each answer says what happened: an
    object answered "added" is tracked, one refused was cancelled before it ran ("nothing
    changed") and is not tracked."""
    assert ros.reset().success
    rgb, truth = scene_frames[5]
    publish_and_track(ros, rgb, ros.next_stamp())
    assert ros.set_parameters(service_timeout_s=0.02)[0].successful
    try:
        answers = call_all(ros, [prompt_request(i, [click_inside(truth[1 + i % 2])], [1])
                                 for i in (1, 2, 3)])
    finally:
        assert ros.set_parameters(service_timeout_s=30.0)[0].successful
    added = sorted(a.object_id for a in answers if a.success)
    refused = [a for a in answers if not a.success]
    for a in refused:
        assert "cancelled and nothing changed" in a.message, a.message
    tracks = publish_and_track(ros, scene_frames[6][0], ros.next_stamp())
    assert ids(tracks) == added, [a.message for a in answers]
    assert ros.reset().success


# ------------------------------------------------------------------------ 3. log flood
def test_a_flood_of_distinct_bad_frames_logs_once_per_kind(ros, active, node, scene_frames):
    """100 frames with 100 different bogus encodings (and 50 bad prompts) give one log line per
    kind of problem, not one per value; another kind of problem is still logged."""
    publish_and_track(ros, scene_frames[7][0], ros.next_stamp())  # a frame to prompt on
    before_enc = log_count(node, "unsupported image encoding")
    before_prompt = log_count(node, "prompt refused")
    received = int(values(diagnostics_status(ros))["frames_received"])
    for i in range(100):
        msg = fill_image(Image(), np.zeros((H, W, 3), np.uint8), "rgb8")
        msg.encoding = f"bogus{i:03d}_{'x' * (i % 7)}"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ros.next_stamp(), 10**9)
        ros.publish_raw(msg)
        ros.executor.spin_once(timeout_sec=0.005)
    answers = call_all(ros, [prompt_request(1, [(1000.0 + i, 5.0)], [1]) for i in range(50)])
    assert not any(a.success for a in answers)
    assert all("outside the frame" in a.message for a in answers)
    assert ros.wait_for(
        lambda: int(values(diagnostics_status(ros))["frames_received"]) >= received + 90, 10.0)
    assert log_count(node, "unsupported image encoding") - before_enc <= 1
    assert log_count(node, "prompt refused") - before_prompt <= 1
    truncated = fill_image(Image(), np.zeros((H, W, 3), np.uint8), "rgb8")
    truncated.data = bytes(10)
    ros.publish_raw(truncated)
    assert ros.wait_for(lambda: "truncated image: 10 bytes" in node.log(), 10.0)
    publish_and_track(ros, scene_frames[7][0], ros.next_stamp())


# ----------------------------------------------------------------- 4. size cap, raw frames
def test_raw_frame_over_the_side_cap_is_refused(ros, active, node):
    msg = fill_image(Image(), np.zeros((2, 9000), np.uint8), "mono8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ros.next_stamp(), 10**9)
    ros.publish_raw(msg)
    assert ros.wait_for(lambda: "image too large (9000x2, encoding mono8): at most 8192 pixels "
                                "a side" in node.log(), 10.0), node.log()[-2000:]


# --------------------------------------------------------------- 5. bursts of prompts
def test_a_burst_of_60_concurrent_prompts_is_answered_in_full(ros, active, scene_frames):
    """60 add_prompt calls at once: every one is answered, each as it deserves."""
    rgb, truth = scene_frames[8]
    publish_and_track(ros, rgb, ros.next_stamp())
    assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
    requests = [prompt_request(1, [(2.0 + i, 2.0)] if i % 2 else [(500.0, 2.0)], [0])
                for i in range(60)]
    answers = call_all(ros, requests, timeout=120.0)
    assert [a.success for a in answers] == [bool(i % 2) for i in range(60)], \
        [a.message for a in answers if not a.success and "outside" not in a.message]
    assert all("outside the frame" in a.message for a in answers[::2])
    tracks = publish_and_track(ros, scene_frames[9][0], ros.next_stamp())
    assert ids(tracks) == [1]
    assert ros.reset().success


# ------------------------------------------------------------------ 6. huge prompts
def test_huge_prompts_are_refused_at_once_and_tracking_goes_on(ros, active, scene_frames):
    rgb, truth = scene_frames[10]
    publish_and_track(ros, rgb, ros.next_stamp())
    assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
    rng = np.random.default_rng(0)
    clicks = rng.uniform(0, [W, H], (50_000, 2))
    start = time.monotonic()
    r = ros.add_prompt(2, clicks, [1] * len(clicks))
    assert not r.success and f"too many clicks: 50000 in one prompt, at most {MAX_POINTS}" \
        in r.message, r.message
    r = ros.add_prompt(2, clicks[:MAX_POINTS + 1], [1] * (MAX_POINTS + 1))
    assert not r.success and "too many clicks" in r.message, r.message
    req = prompt_request(2)
    fill_image(req.mask, np.full((H, W), 255, np.uint8), "mono8")
    req.mask.data = bytes(req.mask.data) * 40  # a mask message 40 times its declared size
    r = ros.call(AddPrompt, "add_prompt", req)
    assert not r.success and "mask prompt too large" in r.message, r.message
    assert time.monotonic() - start < 10.0
    tracks = publish_and_track(ros, scene_frames[11][0], ros.next_stamp())
    assert ids(tracks) == [1]
    assert ros.add_prompt(2, clicks[:MAX_POINTS], [1] * MAX_POINTS).success  # at the cap: fine
    assert ros.reset().success


# ------------------------------------------------- 9. a waiting prompt blocks nothing else
def test_a_waiting_prompt_blocks_no_lifecycle_parameter_or_image_callback(
        ros, active, scene_frames):
    """A prompt waiting (prompt_wait_s 10) for a frame not yet sent: lifecycle and parameter
    services answer at once, frames are received and tracked; then its frame comes and it is
    applied there."""
    assert ros.set_parameters(prompt_wait_s=10.0)[0].successful
    rgb, truth = scene_frames[12]
    future_stamp = ros.next_stamp() + 5 * 10**9
    cli = ros.client(AddPrompt, "add_prompt")
    waiting = cli.call_async(prompt_request(3, [click_inside(truth[1])], [1], future_stamp))
    ros.spin_for(0.3)
    assert not waiting.done(), waiting.result().message if waiting.done() else ""
    start = time.monotonic()
    assert ros.state() == "active"
    assert ros.set_parameters(presence_threshold=0.5)[0].successful
    assert time.monotonic() - start < 2.0, "lifecycle/parameter services waited on the prompt"
    for k in range(3):
        publish_and_track(ros, scene_frames[13 + k][0], ros.next_stamp(), timeout=3.0)
    assert not waiting.done()
    ros.publish_image(rgb, future_stamp)
    assert ros.wait_for(waiting.done, 20.0)
    r = waiting.result()
    assert r.success and ns(r.applied_stamp) == future_stamp, r.message
    assert ros.set_parameters(prompt_wait_s=PARAMS["prompt_wait_s"])[0].successful
    assert ros.reset().success


# ------------------------------------------------ 10. large frames and lost frames visible
def test_diagnostics_show_frame_sizes_segment_and_losses(ros, active, scene_frames):
    publish_and_track(ros, scene_frames[16][0], ros.next_stamp())
    status = diagnostics_status(ros)
    v = values(status)
    assert int(v["largest_frame_bytes"]) >= W * H * 3
    assert int(v["shm_segment_bytes"]) == 32 * 2**20  # config/fastdds_loopback.xml
    for key in ("frames_lost_in_transport", "worker_errors", "requests_refused_busy"):
        assert int(v[key]) >= 0, key
    assert v["state"] == "active"


def test_frames_larger_than_the_shared_memory_segment_losses_are_counted():
    """Best-effort frames of 36 MiB, larger than the 32 MiB segment of the shipped profile,
    go by UDP and some are lost: the node warns, and counts what the middleware reports lost;
    what it received and what it counted lost never exceed what was sent. (A node of its
    own, with a short prompt window: it keeps few such frames.)"""
    params = {"model": "sam2.1_hiera_tiny", "image_size": 128, "autostart": True,
              "prompt_window_s": 0.2, "max_window_frames": 2, "diagnostics_period_s": 0.5}
    big = fill_image(Image(), np.zeros((3072, 4096, 3), np.uint8), "rgb8")  # 36 MiB
    with NodeProcess(params) as node, RosHarness(node) as ros:
        ros.subscribe("diagnostics")
        assert ros.wait_subscribers(30.0), node.log()
        sent, start = 40, time.monotonic()
        for k in range(sent):  # at 30 Hz
            big.header.stamp.sec, big.header.stamp.nanosec = divmod(ros.next_stamp(), 10**9)
            ros.publish_raw(big)
            ros.wait_for(lambda: time.monotonic() > start + (k + 1) / 30, 1.0)
        assert ros.wait_for(lambda: "lost in transport" in node.log(), 10.0), node.log()[-2000:]
        assert "more than half the Fast DDS shared-memory segment (32 MiB" in node.log()
        ros.spin_for(1.0)
        v = ros.diagnostics(fresh=True)
        received, lost = int(v["frames_received"]), int(v["frames_lost_in_transport"])
        assert lost > 0 and received + lost <= sent, v
        assert int(v["largest_frame_bytes"]) == len(big.data)
        assert node.alive(), node.log()[-3000:]


# -------------------------------------- diagnostics while inactive; compressed input; busy
def test_diagnostics_while_inactive_and_a_waiting_prompt_through_cleanup(ros, active, node):
    """/diagnostics goes on while inactive and unconfigured (with the state); a prompt still
    waiting for its frame when the node is cleaned up is answered, and the node lives on."""
    assert ros.set_parameters(prompt_wait_s=10.0)[0].successful
    cli = ros.client(AddPrompt, "add_prompt")
    waiting = cli.call_async(prompt_request(1, [(5.0, 5.0)], [1], ros.next_stamp() + 10**10))
    ros.spin_for(0.3)
    assert not waiting.done()
    assert ros.change_state("deactivate")
    status = diagnostics_status(ros)
    assert values(status)["state"] == "inactive"
    assert status.level == DiagnosticStatus.WARN and "inactive" in status.message
    assert ros.change_state("cleanup")
    assert values(diagnostics_status(ros))["state"] == "unconfigured"
    assert ros.wait_for(waiting.done, 5.0)
    r = waiting.result()
    assert not r.success and "not configured" in r.message, r.message
    r = ros.add_prompt(1, [(5.0, 5.0)], [1])
    assert not r.success and "node is not configured" in r.message, r.message
    assert ros.set_parameters(prompt_wait_s=PARAMS["prompt_wait_s"])[0].successful


def png_bomb(width: int, height: int) -> bytes:
    """A grey PNG of width x height zeros: a few hundred KiB that decode to width*height*3
    bytes of BGR."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    z, row = zlib.compressobj(9), bytes(width + 1)  # filter byte + grey pixels
    idat = b"".join(z.compress(row * 100) for _ in range(height // 100)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) +
            chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim width x height."""
    _, jpg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(jpg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_compressed_bombs_refused_before_decoding_and_overflow_answered(
        ros, active, node, scene_frames):
    """Compressed input: a PNG of 10000x10000 (a few hundred KiB), a 20000x240 PNG and a JPEG
    claiming 30000x30000 are refused from their headers (the node's memory does not move);
    with max_pending_requests 4 a burst of 20 prompts is answered in full, the overflow
    "busy" and counted in /diagnostics."""
    ros.walk_to("unconfigured")
    assert ros.set_parameters(input_transport="compressed", max_pending_requests=4)[0].successful
    try:
        assert ros.change_state("configure") and ros.change_state("activate")
        _bombs_and_a_burst(ros, node, scene_frames)
    finally:  # back to raw input and the default queue for whatever runs next
        ros.walk_to("unconfigured")
        assert ros.set_parameters(input_transport="raw", max_pending_requests=128)[0].successful


def _bombs_and_a_burst(ros, node, scene_frames) -> None:
    pub = ros.compressed_pub
    assert ros.wait_for(lambda: pub.get_subscription_count() > 0, 20.0)
    rss = node.rss_mb()
    _, wide = cv2.imencode(".png", np.zeros((240, 20000), np.uint8))
    for data, expected in [(png_bomb(10000, 10000), "image too large (10000x10000, png header)"),
                           (wide.tobytes(), "image too large (20000x240, png header)"),
                           (jpeg_claiming(30000, 30000), "(30000x30000, jpeg header)"),
                           (b"GIF89a" + bytes(40), "unsupported compressed format")]:
        msg = CompressedImage(format="png", data=data)
        for _ in range(5):  # best effort: again if the frame was lost
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ros.next_stamp(), 10**9)
            ros.publish_raw(msg)
            if ros.wait_for(lambda: expected in values(diagnostics_status(ros))["last_rejected"],
                            2.0):
                break
        assert expected in values(diagnostics_status(ros))["last_rejected"], expected
    assert node.rss_mb() - rss < 100, (rss, node.rss_mb())
    _, jpg = cv2.imencode(".jpg", cv2.cvtColor(scene_frames[17][0], cv2.COLOR_RGB2BGR))
    for _ in range(3):
        stamp = ros.next_stamp()
        msg = CompressedImage(format="jpeg", data=jpg.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        ros.publish_raw(msg)
        if ros.wait_for(lambda: ros.find("tracks", stamp) is not None, 10.0):
            break
    assert ros.find("tracks", stamp) is not None

    answers = call_all(ros, [prompt_request(1, [(10.0 + i, 10.0)], [1]) for i in range(20)])
    busy = [a for a in answers if not a.success]
    assert all(a.message.startswith("prompt refused: busy:") for a in busy), \
        [a.message for a in busy]
    assert busy and len(busy) < 20
    assert ros.wait_for(lambda: int(values(diagnostics_status(ros))["requests_refused_busy"])
                        == len(busy), 5.0)
    assert "request refused:" in node.log()
    assert ros.reset().success



# ------------------------------------------------ diagnostics: failures inside the worker
def test_frames_failing_inside_the_tracker_make_diagnostics_error():
    """A model that raises on every frame: /diagnostics turns ERROR with the error and counts
    the failures; once frames succeed again it is no longer ERROR. (The node in this process,
    its tracker made to fail; a real rclpy subscriber reads /diagnostics.)"""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import qos_profile_sensor_data

    from ros_helpers import in_process_node

    with in_process_node(model="sam2.1_hiera_tiny", image_size=128, num_threads=1,
                         diagnostics_period_s=0.2) as (node, probe, executor):
        statuses: list = []
        probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
            s for s in m.status if s.hardware_id == node.get_fully_qualified_name()), 10)
        pub = probe.create_publisher(Image, f"{node.get_namespace()}/image",
                                     qos_profile_sensor_data)
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == ok and node.trigger_activate() == ok
        tracker = node._session.engine.tracker
        real_track = tracker.track

        def broken(frame):
            raise RuntimeError("model exploded")
        tracker.track = broken

        def spin_until(pred, timeout=20.0):
            end, k = time.monotonic() + timeout, 0
            while time.monotonic() < end:
                msg = fill_image(Image(), np.zeros((H, W, 3), np.uint8), "rgb8")
                msg.header.stamp.sec = k = k + 1
                pub.publish(msg)
                for _ in range(5):
                    executor.spin_once(timeout_sec=0.02)
                if pred():
                    return True
            return False

        def latest():
            return statuses[-1] if statuses else None
        assert spin_until(lambda: latest() is not None and
                          latest().level == DiagnosticStatus.ERROR)
        status = latest()
        assert "model exploded" in status.message, status.message
        assert int(values(status)["worker_errors"]) >= 1
        assert "model exploded" in values(status)["last_error"]
        tracker.track = real_track
        statuses.clear()
        assert spin_until(lambda: latest() is not None and
                          latest().level != DiagnosticStatus.ERROR and
                          int(values(latest())["frames_processed"]) > 0)
