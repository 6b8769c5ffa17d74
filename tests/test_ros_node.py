"""sam2_node as a real process over loopback DDS: lifecycle, frames -> masks/tracks/overlay with
the input's header, prompts added/refined/removed/reset, prompts on a recent past frame, the
bad-input table (the node answers with the reason, stays alive, keeps its objects), parameter
validation, diagnostics and compressed input.

One node process serves the whole module (random weights, image_size 128, 128x96 frames). Each
test first brings it to the state it needs (``active``: active, raw input, no objects), so the
tests pass in any order and alone. Shutting down is tested in test_ros_lifecycle.py (it would
end this module's node).
"""
from __future__ import annotations

import uuid

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from engine.tools.synthetic import Scene, click_inside
from ros_helpers import RosHarness, node_process_fixtures
from sam2_ros.conversions import fill_image
from sam2_ros_interfaces.srv import AddPrompt

W, H = 128, 96
PARAMS = {"model": "sam2.1_hiera_tiny", "image_size": 128, "max_objects": 3,
          "prompt_window_s": 3.0, "diagnostics_period_s": 0.5, "qos_depth": 5}


@pytest.fixture(scope="module")
def scene_frames():
    scene = Scene(W, H, 2, seed=4, object_size=(24, 36))
    return list(scene.frames(40))


node, _node_alive = node_process_fixtures(PARAMS)


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        harness.subscribe("masks", "tracks", "overlay", "diagnostics")
        yield harness


@pytest.fixture
def active(ros):
    """The node active, with raw input and no objects, whatever ran before."""
    ros.walk_to("active")
    assert ros.wait_subscribers()
    assert ros.reset().success


def next_stamp(ros) -> int:
    return ros.next_stamp()


def find(ros, topic: str, stamp: int):
    return ros.find(topic, stamp)


def track_frame(ros, rgb, frame_id: str = "camera"):
    return ros.track_frame(rgb, frame_id)


def ns(t) -> int:
    return t.sec * 10**9 + t.nanosec


def ids(tracks) -> list[int]:
    return sorted(o.object_id for o in tracks.objects)


# ------------------------------------------------------------------ lifecycle
def test_lifecycle_configure_then_activate(ros):
    ros.walk_to("unconfigured")
    assert ros.change_state("configure")
    assert ros.state() == "inactive"
    assert ros.change_state("activate")
    assert ros.state() == "active"
    assert ros.wait_subscribers()


def test_frame_gives_masks_tracks_overlay_with_its_header(ros, active, scene_frames):
    """Outputs carry the input frame's header (stamp and frame_id) unchanged."""
    frame_id = f"cam_{uuid.uuid4().hex[:8]}"
    stamp, tracks = track_frame(ros, scene_frames[0][0], frame_id=frame_id)
    assert ros.wait_for(lambda: find(ros, "masks", stamp) and find(ros, "overlay", stamp), 10)
    masks, overlay = find(ros, "masks", stamp), find(ros, "overlay", stamp)
    for msg in (tracks, masks, overlay):
        assert msg.header.frame_id == frame_id
    assert (masks.encoding, masks.width, masks.height) == ("mono8", W, H)
    assert (overlay.encoding, overlay.width, overlay.height) == ("rgb8", W, H)
    assert len(masks.data) == W * H and not any(masks.data)  # no objects yet
    assert tracks.objects == []


def test_prompts_add_refine_remove_reset(ros, active, scene_frames):
    rgb, truth = scene_frames[1]
    stamp, _ = track_frame(ros, rgb)
    r = ros.add_prompt(1, [click_inside(truth[1])], [1])
    assert r.success, r.message
    assert r.object_id == 1 and r.track.label == 1 and "added" in r.message
    assert ns(r.applied_stamp) == stamp
    r = ros.add_prompt(1, [(2.0, 2.0)], [0])  # refine with a negative click
    assert r.success and "refined" in r.message, r.message
    r = ros.add_prompt(2, box=(10, 10, 60, 50))
    assert r.success and r.track.label == 2, r.message
    r = ros.add_prompt(3, mask=truth[2])
    assert r.success and r.track.label == 3, r.message
    r = ros.add_prompt(4, [(5.0, 5.0)], [1])
    assert not r.success and "too many objects" in r.message and "max_objects is 3" in r.message

    _, tracks = track_frame(ros, scene_frames[2][0])
    assert ids(tracks) == [1, 2, 3]
    assert {o.object_id: o.label for o in tracks.objects} == {1: 1, 2: 2, 3: 3}
    for o in tracks.objects:
        assert 0.0 <= o.presence <= 1.0 and 0.0 <= o.predicted_iou <= 1.5

    r = ros.remove_object(2)
    assert r.success, r.message
    _, tracks = track_frame(ros, scene_frames[3][0])
    assert ids(tracks) == [1, 3]
    r = ros.remove_object(2)
    assert not r.success and "unknown object id 2" in r.message
    r = ros.reset()
    assert r.success and "2 object(s)" in r.message
    _, tracks = track_frame(ros, scene_frames[4][0])
    assert tracks.objects == []


def test_prompt_on_recent_past_frame_is_carried_forward(ros, active, scene_frames):
    """A prompt stamped with a frame still in the window is applied there and carried to the
    newest frame; an unknown stamp falls back to the newest frame and says so."""
    (rgb_a, truth_a), (rgb_b, _), (rgb_c, _) = scene_frames[5:8]
    stamp_a, _ = track_frame(ros, rgb_a)
    track_frame(ros, rgb_b)
    stamp_c, _ = track_frame(ros, rgb_c)
    r = ros.add_prompt(5, [click_inside(truth_a[1])], [1], stamp_ns=stamp_a)
    assert r.success, r.message
    assert "carried forward" in r.message
    assert ns(r.applied_stamp) == stamp_a
    stamp_d, tracks = track_frame(ros, scene_frames[8][0])
    assert ids(tracks) == [5]
    track_frame(ros, scene_frames[9][0])
    r = ros.add_prompt(5, [(3.0, 3.0)], [0], stamp_ns=stamp_d)  # refine it on a past frame
    assert r.success and "refined" in r.message and "carried forward" in r.message, r.message
    assert ns(r.applied_stamp) == stamp_d and r.track.label == 1

    r = ros.add_prompt(6, [(20.0, 20.0)], [1], stamp_ns=stamp_a - 10**9)  # never seen
    assert r.success and "newest frame was used" in r.message, r.message
    assert ns(r.applied_stamp) != stamp_a
    assert ros.reset().success


def test_prompt_that_overtakes_its_frame_waits_for_it(ros, active, scene_frames):
    """A prompt sent before its frame reaches the node (a loaded machine, a slow link) is applied
    to that frame once it arrives, never to an older one; a frame that never arrives gets the
    prompt refused with the reason, and no object is created."""
    (rgb_a, _), (rgb_b, truth_b) = scene_frames[10:12]
    stamp_a, _ = track_frame(ros, rgb_a)
    stamp_b = next_stamp(ros)
    cli = ros.client(AddPrompt, "add_prompt")
    assert ros.wait_for(cli.service_is_ready, 20.0)
    req = _request(object_id=7, points_x=[float(click_inside(truth_b[1])[0])],
                   points_y=[float(click_inside(truth_b[1])[1])], labels=[1])
    req.frame_stamp.sec, req.frame_stamp.nanosec = divmod(stamp_b, 10**9)
    future = cli.call_async(req)
    ros.spin_for(0.3)  # the request is at the node, waiting; frame b is published after it
    assert not future.done(), "the prompt did not wait for its frame"
    ros.publish_image(rgb_b, stamp_b)
    assert ros.wait_for(future.done, 30.0)
    r = future.result()
    assert r.success, r.message
    assert ns(r.applied_stamp) == stamp_b and "newest frame" not in r.message, r.message
    assert ns(r.applied_stamp) != stamp_a

    never = next_stamp(ros) + 10**9
    r = ros.add_prompt(8, [(20.0, 20.0)], [1], stamp_ns=never)
    assert not r.success and "has not arrived within prompt_wait_s" in r.message, r.message
    _, tracks = track_frame(ros, scene_frames[12][0])
    assert ids(tracks) == [7]
    assert ros.reset().success


def _request(**fields) -> AddPrompt.Request:
    return AddPrompt.Request(object_id=fields.pop("object_id", 1), **fields)


def _mask_request(shape, **fields) -> AddPrompt.Request:
    req = _request(**fields)
    fill_image(req.mask, np.full(shape, 255, np.uint8), "mono8")
    return req


BAD_PROMPTS = [
    ("point outside", _request(points_x=[500.0], points_y=[10.0], labels=[1]), "outside the frame"),
    ("NaN", _request(points_x=[float("nan")], points_y=[1.0], labels=[1]), "finite"),
    ("points vs labels", _request(points_x=[1.0, 2.0], points_y=[1.0, 2.0], labels=[1]),
     "differ in length"),
    ("x vs y", _request(points_x=[1.0, 2.0], points_y=[1.0], labels=[1, 1]), "differ in length"),
    ("label value", _request(points_x=[1.0], points_y=[1.0], labels=[7]), "labels must be"),
    ("empty", _request(), "empty prompt"),
    ("negative id", _request(object_id=-3, points_x=[1.0], points_y=[1.0], labels=[1]),
     "non-negative"),
    ("inverted box", _request(has_box=True, box=[60.0, 50.0, 10.0, 10.0]), "x0 <= x1"),
    ("box outside", _request(has_box=True, box=[0.0, 0.0, 900.0, 10.0]), "outside the frame"),
    ("mask size", _mask_request((10, 10)), "mask prompt is 10x10"),
    ("mask and clicks", _mask_request((H, W), points_x=[1.0], points_y=[1.0], labels=[1]),
     "either a mask or clicks"),
]


def test_bad_prompts_refused_with_reason_objects_survive(ros, active, scene_frames):
    rgb, truth = scene_frames[10]
    track_frame(ros, rgb)
    assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
    for name, req, expected in BAD_PROMPTS:
        r = ros.call(AddPrompt, "add_prompt", req)
        assert not r.success, name
        assert expected in r.message, f"{name}: {r.message}"
    r = ros.remove_object(99)
    assert not r.success and "unknown object id 99" in r.message
    _, tracks = track_frame(ros, scene_frames[11][0])
    assert ids(tracks) == [1]


def _image(**fields) -> Image:
    msg = fill_image(Image(), np.zeros((H, W, 3), np.uint8), "rgb8")
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


BAD_IMAGES = [
    (_image(encoding="rgb42"), "unsupported image encoding 'rgb42'"),
    (_image(height=0, width=0, step=0, data=b""), "empty image"),
    (_image(data=bytes(100)), "truncated image: 100 bytes"),
    (_image(step=3), "step 3 is shorter than a row"),
]


def test_bad_images_rejected_with_reason_tracking_goes_on(ros, active, node, scene_frames):
    rgb, truth = scene_frames[10]
    track_frame(ros, rgb)
    assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
    for msg, expected in BAD_IMAGES:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(next_stamp(ros), 10**9)
        ros.publish_raw(msg)
        assert ros.wait_for(lambda: expected in node.log(), 10.0), expected
    _, tracks = track_frame(ros, scene_frames[12][0])
    assert ids(tracks) == [1]  # the object survived
    assert int(fresh_diagnostics(ros)["frames_rejected"]) >= len(BAD_IMAGES)
    assert ros.reset().success


def fresh_diagnostics(ros) -> dict[str, str]:
    return ros.diagnostics(fresh=True)


def test_diagnostics_report_rate_latency_drops_objects_backend(ros, active, scene_frames):
    for rgb, _ in scene_frames[20:27]:
        track_frame(ros, rgb)
    d = fresh_diagnostics(ros)
    for key in ("rate_hz", "latency_p50_ms", "latency_p99_ms", "frames_dropped"):
        assert float(d[key]) >= 0.0, key
    assert float(d["latency_p99_ms"]) >= float(d["latency_p50_ms"]) > 0.0
    assert int(d["frames_processed"]) > 5 and d["objects"] == "0"
    assert d["backend"].startswith("torch") and "RANDOM weights" in d["weights"]


@pytest.mark.parametrize("name,value,reason", [
    ("image_size", 100, "multiple of 32"),
    ("presence_threshold", 2.0, "out of range Min: 0.0, Max: 1.0"),  # its descriptor's range
    ("input_transport", "h264", "must be one of raw, compressed"),
    ("max_objects", "many", "Wrong parameter type, expected 'Type.INTEGER'"),
    ("num_threads", 2, "only apply at configure and the node is active"),
])
def test_invalid_parameters_refused_with_reason(ros, active, name, value, reason):
    (result,) = ros.set_parameters(**{name: value})
    assert not result.successful and reason in result.reason, result.reason


def test_live_parameter_applies(ros, active, scene_frames):
    rgb, truth = scene_frames[13]
    track_frame(ros, rgb)
    assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
    assert ros.set_parameters(presence_threshold=1.0)[0].successful
    try:
        _, tracks = track_frame(ros, scene_frames[14][0])
        assert [o.visible for o in tracks.objects] == [False]  # nothing is surely present
    finally:
        assert ros.set_parameters(presence_threshold=0.5)[0].successful
    assert ros.reset().success


def test_reconfigure_for_compressed_input(ros, active, node, scene_frames):
    assert ros.change_state("deactivate") and ros.state() == "inactive"
    assert ros.change_state("cleanup") and ros.state() == "unconfigured"
    assert ros.set_parameters(input_transport="compressed")[0].successful
    try:
        assert ros.change_state("configure") and ros.change_state("activate")
        _track_compressed(ros, node, scene_frames)
    finally:  # back to raw input for whatever runs next
        ros.walk_to("unconfigured")
        assert ros.set_parameters(input_transport="raw")[0].successful


def _track_compressed(ros, node, scene_frames) -> None:
    pub = ros.compressed_pub
    assert ros.wait_for(lambda: pub.get_subscription_count() > 0, 20.0)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(scene_frames[15][0], cv2.COLOR_RGB2BGR))
    for _ in range(3):
        stamp = next_stamp(ros)
        msg = CompressedImage(format="jpeg", data=jpg.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        ros.publish_raw(msg)
        if ros.wait_for(lambda: find(ros, "tracks", stamp) is not None, 10.0):
            break
    assert find(ros, "tracks", stamp) is not None
    assert (find(ros, "masks", stamp) or ros.wait_for(lambda: find(ros, "masks", stamp), 5))
    bad = CompressedImage(format="jpeg", data=jpg.tobytes()[:50] + b"\x00garbage")
    ros.publish_raw(bad)
    assert ros.wait_for(lambda: "corrupt compressed image" in node.log(), 10.0)
