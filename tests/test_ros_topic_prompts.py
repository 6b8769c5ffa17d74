"""Prompts from topics and outputs a consumer can use alone.

- The pure rules (sam2_ros/topic_prompts.py): which object a click lands on, detector boxes ->
  box prompts (new objects, re-prompts of lost ones), vision_msgs read by attribute.
- One Tracks message rebuilds every object's mask (conversions.masks_from_tracks), checked
  against the ~/masks label image of the same frame.
- sam2_node as a real process: clicks on image_mouse_left / ~/overlay_mouse_left /
  ~/negative_click add, refine or are refused, each outcome on ~/events and in /diagnostics;
  camera_info is republished beside ~/overlay.
- Detector boxes through a TrackingSession with the real engine (vision_msgs is not installable
  here, so the subscription itself is not exercised: see the README).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from types import SimpleNamespace as NS

import numpy as np
import pytest

from engine.tools.synthetic import Scene, click_inside
from ros_helpers import RosHarness, node_process_fixtures, stamp_of
from sam2_ros.config import NodeConfig, defaults
from sam2_ros.conversions import InputError, fill_track_mask, label_image, masks_from_tracks
from sam2_ros.topic_prompts import (Detection, KnownObject, box_iou, click_prompt,
                                    detections_from_msg, match_detections, object_under,
                                    track_detections)
from sam2_ros_interfaces.msg import ObjectTrack, Tracks

W, H = 160, 120


# ------------------------------------------------------------------------------ pure rules
def test_object_under_picks_the_smallest_mask_and_none_outside():
    big = np.zeros((10, 10), bool)
    big[2:9, 2:9] = True
    small = np.zeros((10, 10), bool)
    small[4:6, 4:6] = True
    masks = {1: big, 2: small}
    assert object_under(masks, 4.5, 4.9) == 2  # inside both: the smaller
    assert object_under(masks, 2.0, 8.0) == 1
    assert object_under(masks, 0.5, 0.5) is None
    assert object_under(masks, 12.0, 3.0) is None and object_under(masks, -1.0, 3.0) is None


def test_click_with_non_finite_coordinates_is_refused():
    with pytest.raises(InputError, match="finite pixel positions"):
        click_prompt(float("nan"), 3.0, True)
    p = click_prompt(3.0, 4.0, False)
    assert (p.points.tolist(), p.labels.tolist(), p.box, p.mask) == ([[3.0, 4.0]], [0], None, None)
    assert (p.points.dtype, p.labels.dtype) == (np.float32, np.int32)  # as a request gives them


@pytest.mark.parametrize("det_box, objects, expected", [
    # a box on a visible object: nothing to do
    ((10, 10, 30, 30), [KnownObject(1, (10, 10, 30, 30), True)], ([], "tracked there")),
    # a box on a lost object's last box: re-prompt it
    ((11, 10, 31, 30), [KnownObject(4, (10, 10, 30, 30), False)], ([(4, "re-prompted")], None)),
    # a box elsewhere: a new object, id above every id in use
    ((60, 60, 90, 90), [KnownObject(4, (10, 10, 30, 30), False)], ([(5, "added")], None)),
    # no objects at all: id 1
    ((60, 60, 90, 90), [], ([(1, "added")], None)),
])
def test_match_detections(det_box, objects, expected):
    x0, y0, x1, y1 = det_box
    det = Detection((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.9)
    prompts, skipped = match_detections([det], objects, match_iou=0.5, min_score=0.5, max_new=4)
    want, skip_reason = expected
    assert [(p.object_id, p.action) for p in prompts] == want
    for p in prompts:
        assert p.box == pytest.approx(det_box)
    if skip_reason:
        assert len(skipped) == 1 and skip_reason in skipped[0][1]


def test_match_detections_scores_room_and_duplicates():
    lost = KnownObject(1, (0, 0, 20, 20), False)
    dets = [Detection(10, 10, 20, 20, 0.9), Detection(11, 10, 20, 20, 0.8),  # both on object 1
            Detection(80, 80, 10, 10, 0.2),  # weak: no new object
            Detection(50, 50, 10, 10, 0.9), Detection(100, 20, 10, 10, 0.9)]  # room for one
    prompts, skipped = match_detections(dets, [lost], 0.5, 0.5, max_new=2)
    assert [(p.object_id, p.action) for p in prompts] == [(1, "re-prompted"), (2, "added"),
                                                         (3, "added")]
    assert prompts[0].detection is dets[0]  # the better match wins the object
    assert [p.detection for p in prompts[1:]] == dets[3:]
    reasons = [why for _, why in skipped]
    assert "another detection of object 1" in reasons[0]  # dets[1]: a duplicate
    assert "score 0.20 below" in reasons[1]
    prompts, skipped = match_detections(dets[3:], [], 0.5, 0.5, max_new=1)
    assert len(prompts) == 1 and "max_objects reached" in skipped[0][1]
    # two boxes on one new object: one new object
    twin = [Detection(50, 50, 10, 10, 0.9), Detection(51, 50, 10, 10, 0.95)]
    prompts, skipped = match_detections(twin, [], 0.5, 0.5, max_new=4)
    assert [(p.object_id, p.detection) for p in prompts] == [(1, twin[1])]  # the surer one
    assert "another detection of object 1" in skipped[0][1]


def test_detections_from_vision_msgs_shapes():
    """vision_msgs 4 (center.position) and 3 (center.x), best hypothesis, none."""
    hyp = [NS(hypothesis=NS(class_id="cup", score=0.4)), NS(hypothesis=NS(class_id="mug",
                                                                          score=0.8))]
    new = NS(bbox=NS(center=NS(position=NS(x=50.0, y=40.0), theta=0.0), size_x=20.0,
                     size_y=10.0), results=hyp)
    old = NS(bbox=NS(center=NS(x=5.0, y=6.0, theta=0.0), size_x=2.0, size_y=4.0), results=[])
    dets = detections_from_msg(NS(detections=[new, old]))
    assert dets[0] == Detection(50.0, 40.0, 20.0, 10.0, 0.8, "mug")
    assert dets[0].box == (40.0, 35.0, 60.0, 45.0)
    assert dets[1] == Detection(5.0, 6.0, 2.0, 4.0, 1.0, "")


def test_tracks_as_detections_match_their_own_objects():
    """~/detections (track_detections) fed back as a detector's output prompts nothing."""
    tracks = []
    for obj_id, (x0, y0, x1, y1), visible in [(1, (10, 10, 19, 29), True),
                                              (2, (40, 5, 60, 15), False)]:
        t = ObjectTrack(object_id=obj_id, visible=visible, presence=0.9 if visible else 0.1)
        mask = np.zeros((H, W), bool)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        fill_track_mask(t, mask, (x0, y0, x1, y1))
        tracks.append(t)
    dets = track_detections(tracks)
    assert [i for i, _ in dets] == [1]
    assert dets[0][1].box == pytest.approx((10, 10, 20, 30))
    objects = [KnownObject(t.object_id, tuple(t.box), t.visible) for t in tracks]
    prompts, skipped = match_detections([d for _, d in dets], objects, 0.5, 0.5, 4)
    assert prompts == [] and "object 1 is tracked there" in skipped[0][1]
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)


# ---------------------------------------------------------------- one Tracks, every mask
def test_one_tracks_message_rebuilds_every_mask():
    rng = np.random.default_rng(0)
    masks = {}
    for obj_id in (3, 7, 9):
        m = np.zeros((H, W), bool)
        x0, y0 = rng.integers(0, W - 30), rng.integers(0, H - 30)
        m[y0:y0 + 25, x0:x0 + 28] = rng.random((25, 28)) > 0.3  # ragged, not a box
        masks[obj_id] = m
    masks[11] = np.zeros((H, W), bool)  # an empty mask: no patch
    msg = Tracks(image_width=W, image_height=H)
    for obj_id, m in masks.items():
        t = ObjectTrack(object_id=obj_id)
        ys, xs = np.nonzero(m)
        box = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None
        fill_track_mask(t, m, box)
        msg.objects.append(t)
    rebuilt = masks_from_tracks(msg)
    assert set(rebuilt) == set(masks)
    for obj_id, m in masks.items():
        np.testing.assert_array_equal(rebuilt[obj_id], m)
    bad = Tracks(image_width=10, image_height=10, objects=msg.objects[:1])
    with pytest.raises(InputError, match="does not fit the 10x10 image"):
        masks_from_tracks(bad)


# ------------------------------------------------------------- the node, over loopback
PARAMS = {"num_threads": 1, "max_objects": 4, "prompt_window_s": 3.0,
          "diagnostics_period_s": 0.5}
node, _node_alive = node_process_fixtures(PARAMS)


@pytest.fixture(scope="module")
def scene():
    scene = Scene(W, H, 2, seed=3, object_size=(30, 40))
    return list(scene.frames(30))


@pytest.fixture(scope="module")
def ros(node):
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import CameraInfo

    from sam2_ros_interfaces.msg import PromptEvent

    with RosHarness(node) as harness:
        harness.subscribe("masks", "tracks", "overlay", "diagnostics")
        harness.received.update(events=[], camera_info=[])
        n = harness.node
        harness._subs += [
            n.create_subscription(PromptEvent, f"{harness.target}/events",
                                  harness.received["events"].append, 100),
            n.create_subscription(CameraInfo, f"{harness.target}/camera_info",
                                  harness.received["camera_info"].append, 10)]
        harness.click_pubs = {
            topic: n.create_publisher(PointStamped, topic, 10)
            for topic in ("image_mouse_left", f"{harness.target}/overlay_mouse_left",
                          f"{harness.target}/negative_click")}
        harness.info_pub = n.create_publisher(CameraInfo, "camera_info", 10)
        assert harness.change_state("configure") and harness.change_state("activate")
        assert harness.wait_subscribers()
        yield harness
        for pub in [*harness.click_pubs.values(), harness.info_pub]:
            n.destroy_publisher(pub)


def _click(ros, topic: str, xy, stamp: int):
    """Publish a click and return its ~/events outcome (the next event to arrive)."""
    from geometry_msgs.msg import PointStamped

    msg = PointStamped()
    msg.header.frame_id = "camera"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    msg.point.x, msg.point.y = float(xy[0]), float(xy[1])
    pub = next(p for t, p in ros.click_pubs.items() if t.endswith(topic))
    seen = len(ros.received["events"])
    assert ros.wait_for(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(msg)
    assert ros.wait_for(lambda: len(ros.received["events"]) > seen, 30), \
        f"no ~/events for a click on {topic}"
    event = ros.received["events"][seen]
    assert stamp_of(event) == stamp and event.header.frame_id == "camera"
    return event


def test_clicks_add_refine_and_refuse_with_events(ros, scene):
    rgb, truth = scene[1]
    stamp, _ = ros.track_frame(rgb)
    a, b = click_inside(truth[1]), click_inside(truth[2])
    ev = _click(ros, "image_mouse_left", a, stamp)
    assert (ev.success, ev.source, ev.action, ev.object_id) == (True, "click", "added", 1), \
        ev.message
    assert (ev.x, ev.y) == pytest.approx(a)
    ev = _click(ros, "overlay_mouse_left", b, stamp)  # on the overlay: same rule
    assert (ev.success, ev.action, ev.object_id) == (True, "added", 2), ev.message
    ev = _click(ros, "image_mouse_left", a, stamp)  # on object 1's mask: refines it
    assert (ev.success, ev.action, ev.object_id) == (True, "refined", 1), ev.message
    ev = _click(ros, "negative_click", (1.0, 1.0), stamp)  # background: nothing to take from
    assert (ev.success, ev.action, ev.object_id) == (False, "refused", -1)
    assert "is on no object" in ev.message
    ev = _click(ros, "negative_click", b, stamp)  # on object 2: refines it
    assert (ev.success, ev.source, ev.action, ev.object_id) == \
        (True, "negative_click", "refined", 2), ev.message
    ev = _click(ros, "image_mouse_left", (W + 50.0, 10.0), stamp)  # the service's own check
    assert not ev.success and "refused" in ev.message and "outside" in ev.message.lower(), \
        ev.message
    ev = _click(ros, "image_mouse_left", (math.inf, 10.0), stamp)
    assert not ev.success and "finite" in ev.message
    ev = _click(ros, "image_mouse_left", (1e39, 10.0), stamp)  # beyond float32: still told
    assert not ev.success and ev.x == math.inf and "finite" in ev.message
    _, tracks = ros.track_frame(scene[2][0])
    assert sorted(o.object_id for o in tracks.objects) == [1, 2]
    diag = ros.diagnostics()
    assert diag["prompts_applied_click"] == "3" and diag["prompts_refused_click"] == "3"
    assert diag["prompts_applied_negative_click"] == "1"
    assert diag["prompts_refused_negative_click"] == "1"
    assert "finite" in diag["last_prompt_refused"]


def test_one_tracks_message_matches_the_label_image(ros, scene):
    """The node's own Tracks: its patches rebuild each object's mask, and painted in label
    order they give exactly the ~/masks image of the same frame."""
    rgb, truth = scene[3]
    stamp, tracks = ros.track_frame(rgb)
    if not tracks.objects:
        assert ros.add_prompt(1, [click_inside(truth[1])], [1], stamp_ns=stamp).success
        stamp, tracks = ros.track_frame(scene[4][0])
    assert ros.wait_for(lambda: ros.find("masks", stamp) is not None, 5)
    label_msg = ros.find("masks", stamp)
    labels_img = np.frombuffer(bytes(label_msg.data), np.uint8).reshape(H, W)
    assert (tracks.image_width, tracks.image_height) == (W, H)
    rebuilt = masks_from_tracks(tracks)
    assert set(rebuilt) == {o.object_id for o in tracks.objects} and rebuilt
    labels = {o.object_id: o.label for o in tracks.objects}
    np.testing.assert_array_equal(label_image(rebuilt, labels, (H, W)), labels_img)
    for o in tracks.objects:
        if rebuilt[o.object_id].any():
            ys, xs = np.nonzero(rebuilt[o.object_id])
            assert tuple(o.box) == pytest.approx((xs.min(), ys.min(), xs.max() + 1,
                                                  ys.max() + 1))
            assert (o.bbox.x_offset, o.bbox.y_offset) == (o.mask_x_offset, o.mask_y_offset)


def test_camera_info_republished_beside_overlay(ros, scene):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob",
                      k=[100.0, 0, W / 2, 0, 100.0, H / 2, 0, 0, 1])
    info.header.frame_id = "camera_optical"
    assert ros.wait_for(lambda: ros.info_pub.get_subscription_count() > 0, 10)
    for _ in range(3):  # best effort: the node keeps the latest
        ros.info_pub.publish(info)
        ros.spin_for(0.2)
    stamp, _ = ros.track_frame(scene[5][0], frame_id="camera_optical")
    assert ros.wait_for(lambda: ros.find("overlay", stamp) is not None, 10), "no overlay"
    assert ros.wait_for(
        lambda: any(stamp_of(m) == stamp for m in ros.received["camera_info"]), 10)
    got = next(m for m in ros.received["camera_info"] if stamp_of(m) == stamp)
    overlay = ros.find("overlay", stamp)
    assert got.header.frame_id == overlay.header.frame_id == "camera_optical"
    assert (got.width, got.height) == (overlay.width, overlay.height)
    assert list(got.k) == pytest.approx(list(info.k))


# ------------------------------------------- detector boxes through the real session
def test_detector_boxes_add_and_re_prompt_a_lost_object():
    """Detection2DArray-shaped data -> detections_from_msg -> TrackingSession.detections with
    the bundled model: a new object from a box; once lost (presence under the threshold), a box
    where it was re-prompts it; a box on a visible object prompts nothing; a box outside the
    frame is refused by the service's own checks."""
    from sam2_ros.backend import load_tracker
    from sam2_ros.diagnostics import FrameStats
    from sam2_ros.session import Frame, TrackingSession

    cfg = NodeConfig.from_values({**defaults(), "num_threads": 1})
    engine = load_tracker(cfg)
    holder = {"cfg": cfg}  # the node's live configuration
    session = TrackingSession(engine, lambda: holder["cfg"], lambda m: m, lambda *a: None,
                              FrameStats(), lambda *a: None)
    frames = list(Scene(W, H, 1, seed=5, object_size=(30, 40)).frames(4))

    def track(i: int) -> int:
        stamp = 1_000 + i
        frame = Frame(i + 1, stamp, frames[i][0].copy(), received=time.monotonic(),
                      rgb=frames[i][0].copy())
        session.window.push(frame)
        session.process(frame)
        return stamp

    def array(*boxes):
        return NS(detections=[NS(bbox=NS(center=NS(position=NS(x=(x0 + x1) / 2,
                                                                y=(y0 + y1) / 2)),
                                         size_x=x1 - x0, size_y=y1 - y0),
                                 results=[NS(hypothesis=NS(class_id="thing", score=0.9))])
                              for x0, y0, x1, y1 in boxes])

    stamp = track(0)
    ys, xs = np.nonzero(frames[0][1][1])
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    out = session.detections(detections_from_msg(array(box)), stamp, 0.5, 0.5)
    assert [(o.prompt.object_id, o.outcome.action) for o in out] == [(1, "added")], out
    assert out[0].outcome.result.box is not None
    # tracked and visible: the same box prompts nothing
    stamp = track(1)
    out = session.detections(detections_from_msg(array(box)), stamp, 0.5, 0.5)
    assert out[0].prompt is None and "tracked there" in out[0].error
    # lost: nothing counts as visible above a presence threshold of 1
    holder["cfg"] = replace(cfg, presence_threshold=1.0)
    stamp = track(2)
    last = session._last_box[1]
    out = session.detections(detections_from_msg(array(last, (W + 5, 0, W + 30, 20))), stamp,
                             0.5, 0.5)
    by_action = {o.outcome.action if o.outcome else "refused": o for o in out}
    assert by_action["re-prompted"].prompt.object_id == 1
    assert "re-prompted" in by_action["re-prompted"].outcome.message
    refused = by_action["refused"]
    assert refused.prompt.object_id == 2 and refused.outcome is None
    assert "box" in refused.error.lower(), refused.error
    assert sorted(session.labels) == [1]  # the refused box left nothing behind


# ------------------------------------------- ~/detections with a vision_msgs stand-in
def test_detection_array_with_a_vision_msgs_stand_in(monkeypatch):
    """vision_msgs is not installable here: node.py is loaded against stand-ins with the
    vision_msgs 4 (Humble and later) field names, to check what ~/detections would carry."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    class Msg:
        def __init__(self, **kw):
            for k, v in self.defaults().items():
                setattr(self, k, kw.get(k, v))

    class Detection2DArray(Msg):
        def defaults(self):
            return {"header": None, "detections": []}

    class BoundingBox2D(Msg):
        def defaults(self):
            return {"center": NS(position=NS(x=0.0, y=0.0), theta=0.0), "size_x": 0.0,
                    "size_y": 0.0}

    class Detection2D(Msg):
        def defaults(self):
            return {"header": None, "id": "", "bbox": BoundingBox2D(), "results": []}

    class ObjectHypothesisWithPose(Msg):
        def defaults(self):
            return {"hypothesis": NS(class_id="", score=0.0), "pose": None}

    fake = types.ModuleType("vision_msgs.msg")
    fake.__dict__.update(Detection2DArray=Detection2DArray, Detection2D=Detection2D,
                         BoundingBox2D=BoundingBox2D,
                         ObjectHypothesisWithPose=ObjectHypothesisWithPose)
    monkeypatch.setitem(sys.modules, "vision_msgs", types.ModuleType("vision_msgs"))
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", fake)
    path = Path(__file__).resolve().parents[1] / "sam2_ros" / "node.py"
    spec = importlib.util.spec_from_file_location("sam2_ros._node_with_vision_msgs", path)
    node_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node_mod)
    assert node_mod.Detection2DArray is Detection2DArray and node_mod.VISION_MSGS == ""

    visible = ObjectTrack(object_id=4, visible=True, presence=0.8)
    mask = np.zeros((H, W), bool)
    mask[10:20, 30:50] = True
    fill_track_mask(visible, mask, (30, 10, 49, 19))
    hidden = ObjectTrack(object_id=5, visible=False)
    out = node_mod._detection_array("header", [visible, hidden])
    (det,) = out.detections
    assert det.id == "4" and det.header == "header" and out.header == "header"
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (40.0, 15.0)
    assert (det.bbox.size_x, det.bbox.size_y) == (20.0, 10.0)
    (hyp,) = det.results
    assert hyp.hypothesis.class_id == "4" and hyp.hypothesis.score == pytest.approx(0.8)
    # what the node publishes, read back as a detector's output, is the objects it tracks
    objects = [KnownObject(4, tuple(visible.box), True)]
    _, skipped = match_detections(detections_from_msg(out), objects, 0.5, 0.5, 4)
    assert "object 4 is tracked there" in skipped[0][1]
