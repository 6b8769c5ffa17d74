"""The node's depth glue without DDS: depth image decoding (16UC1/mono16 mm, 32FC1 m, padded
rows, big endian), the refusal table, pairing by stamp (exact, nearest within the tolerance,
too old, too new, none yet) with a bounded buffer, and the 3D outputs (ObjectTrack fields,
PointCloud2, MarkerArray)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from engine.depth import Intrinsics, ObjectPosition
from sam2_ros.config import check_parameter
from sam2_ros.conversions import InputError, fill_image
from sam2_ros.depth_input import DepthInput, depth_array, intrinsics_from_info
from sam2_ros.depth_output import (depth_status, markers, point_cloud, set_position,
                                   set_unknown)
from sam2_ros.diagnostics import parse_status
from sam2_ros_interfaces.msg import ObjectTrack

H, W = 6, 8
MM = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 37 + 500)
K = [500.0, 0.0, 3.5, 0.0, 510.0, 2.5, 0.0, 0.0, 1.0]


def depth_msg(array: np.ndarray, encoding: str, stamp_ns: int = 0, pad: int = 0,
              frame_id: str = "depth_optical") -> Image:
    rows = np.ascontiguousarray(array).view(np.uint8).reshape(array.shape[0], -1)
    rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    msg = fill_image(Image(), rows, encoding)
    msg.width = array.shape[1]
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def info(k=K, w=W, h=H) -> CameraInfo:
    return CameraInfo(width=w, height=h, k=[float(v) for v in k])


@pytest.mark.parametrize("encoding, array, scale", [
    ("16UC1", MM, 0.001), ("mono16", MM, 0.001), ("32FC1", MM.astype(np.float32) / 1000, 1.0)])
@pytest.mark.parametrize("pad", [0, 4])
def test_depth_encodings_decode_to_metres(encoding, array, scale, pad):
    arr, s = depth_array(depth_msg(array, encoding, pad=pad))
    assert s == scale and arr.shape == (H, W)
    np.testing.assert_allclose(arr * s, MM / 1000, rtol=1e-6)


def test_big_endian_depth():
    msg = depth_msg(MM.astype(">u2"), "16UC1")
    msg.is_bigendian = 1
    arr, _ = depth_array(msg)
    assert (arr == MM).all()


def _bad(**fields) -> Image:
    msg = depth_msg(MM, "16UC1")
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("msg, match", [
    (_bad(encoding="rgb8"), r"encoding 'rgb8' is not supported; expected 16UC1 or mono16 "
                            r"\(millimetres\) or 32FC1 \(metres\)"),
    (_bad(height=0), "empty: depth image is 8x0"),
    (_bad(step=10), "step 10 does not fit rows of 8 16UC1 pixels"),
    (_bad(data=bytes(20)), r"truncated: depth image has 20 bytes, expected height\*step"),
])
def test_bad_depth_images_are_refused_with_reason(msg, match):
    with pytest.raises(InputError, match=match):
        depth_array(msg)


@pytest.mark.parametrize("camera, match", [
    (None, "no CameraInfo received on depth/camera_info"),
    (info(k=[0.0] * 9), "camera_info: bad camera matrix K .*missing or zero"),
    (info(k=[500, 0, 3.5, 0, float("inf"), 2.5, 0, 0, 1]), "finite"),
    (info(w=640, h=480), "CameraInfo is for 640x480 images but the depth image is 8x6"),
])
def test_bad_camera_info_is_refused_with_reason(camera, match):
    with pytest.raises(InputError, match=match):
        intrinsics_from_info(camera, W, H)


def test_camera_info_gives_intrinsics():
    assert intrinsics_from_info(info(), W, H) == Intrinsics(500.0, 510.0, 3.5, 2.5)
    assert intrinsics_from_info(info(w=0, h=0), W, H).fx == 500.0  # size not given: accepted


def test_pairing_exact_nearest_and_refusals():
    """Exact stamp wins; else the nearest within the tolerance; farther is refused (newer or
    older, saying by how much); nothing received yet is 'missing' (no refusal). Each outcome
    is counted."""
    d = DepthInput(queue_size=3)
    assert d.pair(10**9, (H, W), 0.02) is None and d.missing == 1
    d.on_info(info())
    for t in (0.90, 1.00, 1.013):
        d.on_depth(depth_msg(MM, "16UC1", int(t * 1e9), frame_id=f"d{t}"))
    assert d.pair(10**9, (H, W), 0.02).header.frame_id == "d1.0"  # exact, though 1.013 is near
    assert d.pair(int(1.02e9), (H, W), 0.02).header.frame_id == "d1.013"
    with pytest.raises(InputError, match=r"stamp: the nearest depth image is 0\.087 s older "
                                         r"than the colour frame .*within depth_tolerance_s = "
                                         r"0\.02 s"):
        d.pair(int(1.1e9), (H, W), 0.02)
    with pytest.raises(InputError, match=r"0\.100 s newer"):
        d.pair(int(0.8e9), (H, W), 0.02)
    assert d.refused == 2 and d.last_outcome == "refused"
    for t in (1.1, 1.2, 1.3):  # the buffer keeps the newest queue_size images
        d.on_depth(depth_msg(MM, "16UC1", int(t * 1e9)))
    with pytest.raises(InputError, match="stamp: the nearest depth image is 0.100 s newer"):
        d.pair(10**9, (H, W), 0.02)
    counters = d.counters()
    assert counters["depth_images_received"] == "6" and counters["frames_depth_refused"] == "3"
    assert counters["frames_without_depth"] == "1" and "0.100 s newer" in counters["last_refusal"]


def test_pairing_size_rule_and_a_bad_encoding():
    """Another aspect ratio is refused; the same view at another resolution is used, with a
    CameraInfo of the depth's own size; an unknown encoding is refused."""
    d = DepthInput(queue_size=2)
    d.on_info(info())
    d.on_depth(depth_msg(MM, "16UC1", 10**9))
    with pytest.raises(InputError, match=r"size: depth image is 8x6 but the colour frame is "
                                         r"20x12, another aspect ratio; an aligned depth"):
        d.pair(10**9, (12, 20), 0.02)
    paired = d.pair(10**9, (12, 16), 0.02)  # the same view at twice the resolution: accepted
    assert paired.depth.shape == (H, W) and paired.intrinsics.fx == 500.0
    d.on_info(info(w=16, h=12))  # CameraInfo of the colour image, not of the depth
    with pytest.raises(InputError, match="CameraInfo is for 16x12 images but the depth image "
                                         "is 8x6"):
        d.pair(10**9, (12, 16), 0.02)
    d.on_depth(depth_msg(MM, "8UC1", 2 * 10**9))
    with pytest.raises(InputError, match="encoding: depth image encoding '8UC1'"):
        d.pair(2 * 10**9, (H, W), 0.02)


def test_track_fields_cloud_and_markers():
    t = ObjectTrack()
    set_unknown(t)
    assert not t.has_position and math.isnan(t.position.x) and math.isnan(t.extent.z)
    pts = np.array([[0.1, 0.2, 1.0], [0.3, -0.1, 1.1]], np.float32)
    pos = ObjectPosition(np.array([0.2, 0.05, 1.05]), np.array([0.2, 0.3, 0.1]), 42, pts)
    set_position(t, pos)
    assert t.has_position and t.depth_pixels == 42
    assert (t.position.x, t.position.y, t.position.z) == (0.2, 0.05, 1.05)
    set_position(t, ObjectPosition(np.full(3, np.nan), np.full(3, np.nan), 3))
    assert not t.has_position and t.depth_pixels == 3 and math.isnan(t.position.z)

    cloud = point_cloud(Image().header, {7: pts, 9: pts[:1]})
    assert (cloud.width, cloud.point_step, [f.name for f in cloud.fields]) == (
        3, 16, ["x", "y", "z", "object_id"])
    rec = np.frombuffer(bytes(cloud.data), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                     ("object_id", "<i4")]))
    assert rec["object_id"].tolist() == [7, 7, 9] and rec["z"][1] == pytest.approx(1.1)

    arr = markers(Image().header, [(7, 1, pos)])
    assert [m.action for m in arr.markers][0] == 3  # DELETEALL first
    box = arr.markers[1]
    assert (box.pose.position.z, box.scale.x, box.scale.z) == (1.05, 0.2, pytest.approx(0.1))


@pytest.mark.parametrize("name, value, match", [
    ("depth_enabled", "yes", "expected bool"),
    ("depth_tolerance_s", -0.1, r"\[0.0, 1.0\]"),
    ("depth_queue_size", 0, r"\[1, 100\]"),
    ("depth_erosion_px", -1, r"\[0, 50\]"),
    ("depth_band_m", 0.0, r"\(0.0, 100.0\]"),
    ("object_points_stride", 0, r"\[1, 64\]"),
])
def test_depth_parameters_refused_with_reason(name, value, match):
    reason = check_parameter(name, value)
    assert reason is not None and name in reason
    assert __import__("re").search(match, reason), reason


def test_depth_status_warns_while_depth_is_refused_or_missing():
    d = DepthInput(queue_size=2)
    status = depth_status("n: depth", "/n", d)
    assert status.message == "no frame yet"
    d.pair(10**9, (H, W), 0.02)
    assert depth_status("n: depth", "/n", d).message == "no depth image received"
    d.on_depth(depth_msg(MM, "16UC1", 10**9))
    with pytest.raises(InputError):
        d.pair(10**9, (H, W), 0.02)  # no CameraInfo yet
    status = depth_status("n: depth", "/n", d)
    assert status.level == status.WARN and "no CameraInfo received" in status.message
    d.on_info(info())
    assert d.pair(10**9, (H, W), 0.02) is not None
    d.on_paired()
    status = depth_status("n: depth", "/n", d)
    assert status.level == status.OK and status.hardware_id == "/n"
    assert parse_status(status)["frames_with_depth"] == "1"
