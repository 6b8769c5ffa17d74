"""sam2_node with depth_enabled, as a real process over loopback DDS: colour + aligned depth +
CameraInfo in, each object's 3D position in ~/tracks (exactly what engine.depth gives on the
published mask, and near the scene's ground truth), ~/object_markers and ~/object_points; bad
depth (another aspect ratio, unknown encoding, zero intrinsics, a stamp too far) refused with the
reason in the log and /diagnostics while the 2D outputs keep flowing.

One node process (the bundled compact model, 160x120 frames of the generated scene) serves the
module; each test starts from a fresh click on object 1 (``object_1``), so the tests pass in any
order and alone.
"""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from engine.depth import locate_object
from engine.tools.synthetic import Scene, click_inside
from ros_helpers import RosHarness, node_process_fixtures, stamp_of
from sam2_ros.conversions import fill_image
from sam2_ros.diagnostics import parse_status

W, H = 160, 120
PARAMS = {"autostart": True, "depth_enabled": True, "num_threads": 1,
          "diagnostics_period_s": 0.3, "depth_tolerance_s": 0.05}
DEPTH_FRAME = "camera_depth_optical_frame"


@pytest.fixture(scope="module")
def scene():
    s = Scene(W, H, 2, seed=3, object_size=(24, 44))
    return s, list(s.frames(12))


node, _node_alive = node_process_fixtures(PARAMS)


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        harness.subscribe("tracks", "masks", "diagnostics")
        harness.depth_pub = harness.node.create_publisher(Image, "depth/image",
                                                          qos_profile_sensor_data)
        harness.info_pub = harness.node.create_publisher(CameraInfo, "depth/camera_info",
                                                         qos_profile_sensor_data)
        harness.received["object_markers"], harness.received["object_points"] = [], []
        subs = [harness.node.create_subscription(
            t, f"{harness.target}/{name}", lambda m, n=name: harness.received[n].append(m), 10)
            for t, name in ((MarkerArray, "object_markers"), (PointCloud2, "object_points"))]
        try:
            yield harness
        finally:
            for sub in subs:
                harness.node.destroy_subscription(sub)
            harness.node.destroy_publisher(harness.depth_pub)
            harness.node.destroy_publisher(harness.info_pub)


def camera_info(scene: Scene, k=None, stamp_ns: int = 0) -> CameraInfo:
    i = scene.intrinsics
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob",
                     k=k or [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0])
    msg.header.frame_id = DEPTH_FRAME
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def depth_msg(depth_mm: np.ndarray, stamp_ns: int, encoding: str = "16UC1") -> Image:
    msg = fill_image(Image(), depth_mm, encoding)
    msg.header.frame_id = DEPTH_FRAME
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def send(ros, rgb, depth=None, info=None, depth_offset_ns: int = 0, tries: int = 5):
    """Publish CameraInfo and depth (stamped with the frame's stamp + offset), then the colour
    frame, until its ~/tracks arrive; (stamp, Tracks, the depth sent)."""
    for _ in range(tries):
        stamp = ros.next_stamp()
        sent = depth(stamp + depth_offset_ns) if depth else None
        if info is not None:
            ros.info_pub.publish(info)
        if sent is not None:
            ros.depth_pub.publish(sent)
        ros.spin_for(0.05)
        ros.publish_image(rgb, stamp)
        if ros.wait_for(lambda: ros.find("tracks", stamp) is not None, 4.0):
            return stamp, ros.find("tracks", stamp), sent
    raise AssertionError(f"no ~/tracks for a frame published {tries} times")


@pytest.fixture
def object_1(ros, scene):
    """No objects but object 1, clicked on frame 0 (sent without depth); the node's
    subscriptions discovered, whichever test runs first."""
    s, frames = scene
    assert ros.wait_subscribers(60.0) and ros.wait_for(
        lambda: ros.depth_pub.get_subscription_count() * ros.info_pub.get_subscription_count(),
        20.0)
    assert ros.reset().success
    stamp, _, _ = send(ros, frames[0][0])
    r = ros.add_prompt(1, [click_inside(frames[0][1][1])], [1], stamp_ns=stamp)
    assert r.success, r.message
    return r


def depth_status(ros) -> dict[str, str] | None:
    for msg in reversed(ros.received["diagnostics"]):
        for status in msg.status:
            if status.hardware_id == ros.target and status.name.endswith(": depth"):
                return {"level": int.from_bytes(status.level, "little")
                        if isinstance(status.level, bytes) else int(status.level),
                        "message": status.message, **parse_status(status)}
    return None


def test_depth_and_camera_info_give_3d_positions_in_tracks(ros, scene, object_1):
    """After a click on object 1, every frame with depth gives it a 3D position: exactly what
    engine.depth computes on the node's own ~/masks with the depth sent, within 2 cm of the
    scene's truth; depth_header is the depth image's."""
    s, frames = scene
    info = camera_info(s)
    assert not object_1.track.has_position and np.isnan(object_1.track.position.x)  # no 3D

    def depth_of(t):
        return lambda stamp: depth_msg(np.round(s.depth(frames[t][1]) * 1000).astype(np.uint16),
                                       stamp)
    for _ in range(5):  # until the first depth and CameraInfo have got through (best effort)
        stamp, tracks, _ = send(ros, frames[0][0], depth_of(0), info)
        if tracks.depth_header.frame_id:
            break
    assert [o.object_id for o in tracks.objects] == [1]
    assert tracks.depth_header.frame_id == DEPTH_FRAME
    errors = []
    for t in range(1, 5):
        stamp, tracks, sent = send(ros, frames[t][0], depth_of(t), info)
        assert ros.wait_for(lambda: ros.find("masks", stamp) is not None, 5.0)
        obj = next(o for o in tracks.objects if o.object_id == 1)
        assert obj.visible and obj.has_position, obj
        assert tracks.depth_header.frame_id == DEPTH_FRAME
        assert tracks.depth_header.stamp.sec * 10**9 + tracks.depth_header.stamp.nanosec == stamp
        m = ros.find("masks", stamp)
        mask = np.frombuffer(bytes(m.data), np.uint8).reshape(H, W) == obj.label
        depth = np.frombuffer(bytes(sent.data), np.uint16).reshape(H, W)
        expected = locate_object(depth, 0.001, s.intrinsics, mask)
        got = np.array([obj.position.x, obj.position.y, obj.position.z])
        np.testing.assert_allclose(got, expected.centroid, atol=1e-6)
        assert obj.depth_pixels == expected.num_valid > 0
        np.testing.assert_allclose([obj.extent.x, obj.extent.y, obj.extent.z], expected.extent,
                                   atol=1e-6)
        errors.append(np.abs(got - s.true_positions(frames[t][1])[1]).max())
    assert max(errors) < 0.02, errors


def test_markers_and_point_cloud_of_located_objects(ros, scene, node, object_1):
    """~/object_markers (while subscribed) holds a box at object 1's position; ~/object_points,
    once publish_object_points is set, its points, labelled with the object id."""
    s, frames = scene
    assert all(r.successful for r in ros.set_parameters(publish_object_points=True))
    assert ros.wait_for(lambda: ros.depth_pub.get_subscription_count() > 0, 5.0)
    ros.spin_for(0.5)  # discovery of the two output subscriptions
    depth = np.round(s.depth(frames[5][1]) * 1000).astype(np.uint16)
    stamp, tracks, _ = send(ros, frames[5][0], lambda st: depth_msg(depth, st), camera_info(s))
    obj = next(o for o in tracks.objects if o.object_id == 1)
    assert obj.has_position
    assert ros.wait_for(lambda: any(stamp_of(m.markers[0]) == stamp
                                    for m in ros.received["object_markers"] if m.markers), 5.0)
    arr = next(m for m in ros.received["object_markers"]
               if m.markers and stamp_of(m.markers[0]) == stamp)
    box = next(m for m in arr.markers if m.type == Marker.CUBE and m.id == 2)
    assert box.header.frame_id == DEPTH_FRAME
    assert box.pose.position.z == pytest.approx(obj.position.z)
    assert ros.wait_for(lambda: any(stamp_of(c) == stamp for c in ros.received["object_points"]),
                        5.0)
    cloud = next(c for c in ros.received["object_points"] if stamp_of(c) == stamp)
    rec = np.frombuffer(bytes(cloud.data), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                     ("object_id", "<i4")]))
    assert cloud.width == len(rec) > 0 and set(rec["object_id"]) == {1}
    assert rec["z"].mean() == pytest.approx(obj.position.z, abs=0.01)
    assert all(r.successful for r in ros.set_parameters(publish_object_points=False))


def test_depth_at_half_resolution_is_used(ros, scene, object_1):
    """Resize rule: depth of the colour image's field of view at half its resolution, with the
    CameraInfo of that size, gives object 1 a position near the truth."""
    s, frames = scene
    i = s.intrinsics
    half = camera_info(s, [i.fx / 2, 0.0, (i.cx + 0.5) / 2 - 0.5, 0.0, i.fy / 2,
                           (i.cy + 0.5) / 2 - 0.5, 0.0, 0.0, 1.0])
    half.width, half.height = W // 2, H // 2
    depth = np.round(s.depth(frames[5][1]) * 1000).astype(np.uint16)[1::2, 1::2].copy()
    _, tracks, _ = send(ros, frames[5][0], lambda st: depth_msg(depth, st), half)
    obj = next(o for o in tracks.objects if o.object_id == 1)
    assert obj.has_position, obj
    truth = s.true_positions(frames[5][1])[1]
    assert np.abs(np.array([obj.position.x, obj.position.y, obj.position.z]) - truth).max() < 0.03


BAD_DEPTH = [
    # (what, depth message maker, CameraInfo maker, depth stamp offset, expected log text)
    ("another aspect ratio", lambda s, st: depth_msg(np.full((60, 100), 1000, np.uint16), st),
     None, 0, "size: depth image is 100x60 but the colour frame is 160x120, another aspect"),
    ("unknown encoding", lambda s, st: depth_msg(np.full((H, W), 100, np.uint8), st, "mono8"),
     None, 0, "encoding: depth image encoding 'mono8' is not supported"),
    ("zero intrinsics", lambda s, st: depth_msg(np.full((H, W), 1000, np.uint16), st),
     [0.0] * 9, 0, "camera_info: bad camera matrix K"),
    ("too old", lambda s, st: depth_msg(np.full((H, W), 1000, np.uint16), st),
     None, -500_000_000, "stamp: the nearest depth image is 0.500 s older"),
]


def test_bad_depth_is_refused_while_2d_keeps_flowing(ros, scene, node, object_1):
    """Each bad depth input: the frame's ~/tracks and ~/masks still arrive (object 1 tracked,
    no position), the log says what was wrong, /diagnostics counts the refusals and reports
    the last; a good frame afterwards is located again."""
    s, frames = scene
    before = int((depth_status(ros) or {}).get("frames_depth_refused", 0))
    for i, (what, make, k, offset, text) in enumerate(BAD_DEPTH):
        rgb = frames[6 + i][0]
        ros.stamp += 10**9  # no earlier depth image within depth_tolerance_s
        stamp, tracks, _ = send(ros, rgb, lambda st: make(s, st), camera_info(s, k), offset)
        assert ros.wait_for(lambda: ros.find("masks", stamp) is not None, 5.0), what
        obj = next(o for o in tracks.objects if o.object_id == 1)
        assert obj.visible and not obj.has_position and np.isnan(obj.position.z), what
        assert tracks.depth_header.frame_id == "", what
        assert ros.wait_for(lambda: text in node.log(), 5.0), (what, node.log()[-2000:])
    ros.received["diagnostics"].clear()
    assert ros.wait_for(lambda: depth_status(ros) is not None, 5.0)
    status = depth_status(ros)
    assert int(status["frames_depth_refused"]) >= before + len(BAD_DEPTH)
    assert status["level"] == 1 and "0.500 s older" in status["last_refusal"]
    depth = np.round(s.depth(frames[11][1]) * 1000).astype(np.uint16)
    _, tracks, _ = send(ros, frames[11][0], lambda st: depth_msg(depth, st), camera_info(s))
    assert next(o for o in tracks.objects if o.object_id == 1).has_position
