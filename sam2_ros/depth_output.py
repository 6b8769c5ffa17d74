"""The 3D outputs of sam2_node: ObjectTrack's position fields, ~/object_points (PointCloud2),
~/object_markers (MarkerArray) and the depth status in /diagnostics. Messages are only filled
here; nothing imports rclpy."""
from __future__ import annotations

import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from engine.depth import ObjectPosition, locate_object

from engine.overlay import colour

_NAN = float("nan")
MIN_MARKER_SIZE = 0.01  # m: a flat object's box stays visible in rviz


def set_unknown(track) -> None:
    """ObjectTrack without a position: has_position false, NaN position and extent."""
    track.has_position, track.depth_pixels = False, 0
    track.position = Point(x=_NAN, y=_NAN, z=_NAN)
    track.extent = Vector3(x=_NAN, y=_NAN, z=_NAN)


def set_position(track, pos: ObjectPosition) -> None:
    """ObjectTrack's 3D fields from ``engine.depth``'s result (unknown when it has none)."""
    set_unknown(track)
    track.depth_pixels = int(pos.num_valid)
    if pos.has_position:
        x, y, z = (float(v) for v in pos.centroid)
        ex, ey, ez = (float(v) for v in pos.extent)
        track.has_position = True
        track.position, track.extent = Point(x=x, y=y, z=z), Vector3(x=ex, y=ey, z=ez)


_FIELDS = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
           PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
           PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
           PointField(name="object_id", offset=12, datatype=PointField.INT32, count=1)]
_POINT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("object_id", "<i4")])


def point_cloud(header, points: dict[int, np.ndarray]) -> PointCloud2:
    """An unorganised cloud (fields x, y, z float32 and object_id int32) of each object's
    (N, 3) points."""
    total = sum(len(p) for p in points.values())
    cloud = np.empty(total, _POINT)
    i = 0
    for obj_id, p in points.items():
        part = cloud[i:i + len(p)]
        part["x"], part["y"], part["z"], part["object_id"] = p[:, 0], p[:, 1], p[:, 2], obj_id
        i += len(p)
    return PointCloud2(header=header, height=1, width=total, fields=_FIELDS,
                       is_bigendian=False, point_step=_POINT.itemsize,
                       row_step=_POINT.itemsize * total, data=cloud.tobytes(), is_dense=True)


def markers(header, located: list[tuple[int, int, ObjectPosition]]) -> MarkerArray:
    """One translucent box (the object's extent, in its ~/overlay colour) and one text label
    per (object id, label, position); a DELETEALL first clears objects no longer located."""
    out = [Marker(header=header, ns="sam2_objects", action=Marker.DELETEALL)]
    for obj_id, label, pos in located:
        r, g, b = (c / 255.0 for c in colour(label))
        x, y, z = (float(v) for v in pos.centroid)
        size = [max(float(v), MIN_MARKER_SIZE) if math.isfinite(v) else MIN_MARKER_SIZE
                for v in pos.extent]
        box = Marker(header=header, ns="sam2_objects", id=2 * obj_id, type=Marker.CUBE,
                     action=Marker.ADD)
        box.pose.position = Point(x=x, y=y, z=z)
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=size[0], y=size[1], z=size[2])
        box.color = ColorRGBA(r=r, g=g, b=b, a=0.5)
        text = Marker(header=header, ns="sam2_objects", id=2 * obj_id + 1,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, text=f"{obj_id}")
        text.pose.position = Point(x=x, y=y - size[1] / 2 - 0.03, z=z)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.05
        text.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        out += [box, text]
    return MarkerArray(markers=out)


def locate_tracks(paired, results, tracks, cfg, points_stride: int = 0
                  ) -> tuple[list[tuple[int, int, ObjectPosition]], dict[int, np.ndarray]]:
    """Fill each visible track's 3D fields from ``paired`` (a ``depth_input.PairedDepth``) and
    the tracker's results (same order as ``tracks``); the located objects (id, label, position)
    and, when ``points_stride`` > 0, their inlier points by id."""
    located, points = [], {}
    for r, track in zip(results, tracks):
        if not track.visible:
            continue
        pos = locate_object(paired.depth, paired.scale, paired.intrinsics, r.mask, r.box,
                            erosion_px=cfg.depth_erosion_px, band_m=cfg.depth_band_m,
                            min_pixels=cfg.depth_min_pixels, points_stride=points_stride)
        set_position(track, pos)
        if pos.has_position:
            located.append((r.obj_id, track.label, pos))
            if points_stride:
                points[r.obj_id] = pos.points
    return located, points


def depth_status(name: str, hardware_id: str, depth) -> DiagnosticStatus:
    """The depth input's /diagnostics status (``depth``: a ``depth_input.DepthInput``): OK while
    the latest frame had usable depth, WARN (with the last refusal) otherwise."""
    values = depth.counters()
    last = depth.last_outcome
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    status.level = DiagnosticStatus.OK if last == "paired" else DiagnosticStatus.WARN
    status.message = {"paired": "depth paired with the latest frame",
                      "refused": f"depth refused: {values['last_refusal']}",
                      "missing": "no depth image received"}.get(last, "no frame yet")
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status
