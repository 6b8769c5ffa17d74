"""The node's parameters: one typed, frozen config, declared, described and validated here.

Every parameter has a default, a one-line description and a check that returns the reason a
value is refused (or None). ``NodeConfig.from_values`` is the one place a config is built from
ROS parameter values; nothing here imports rclpy, so it is testable without ROS.

Parameters marked ``live`` take effect at once; the others take effect at the next configure
(they choose the model, the input topic or QoS).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from engine.backends import BACKENDS, PRECISIONS
from engine.config import (MAX_COND_FRAMES, MAX_OBJECTS, MEMORY_RULE_EXPECTED, known_models,
                           parse_memory_rule)
TRANSPORTS = ("raw", "compressed")
QOS_PROFILES = ("sensor_data", "reliable")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
MAX_LABEL = 65535  # the ~/masks label image is mono16 beyond 255 objects


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"
    check.constraint = f"one of: {', '.join(choices)}"
    return check


def _int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: int) -> str | None:
        return None if lo <= v <= hi else f"must be an integer in [{lo}, {hi}]"
    check.range = (lo, hi)  # the descriptor's IntegerRange
    return check


def _float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: float) -> str | None:
        ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi
        return None if ok else f"must be a number in {'(' if lo_open else '['}{lo}, {hi}]"
    check.range = (float(lo), float(hi))  # the descriptor's FloatingPointRange (closed)
    if lo_open:
        check.constraint = f"greater than {lo:g}"
    return check


def _model(v: str) -> str | None:
    known = known_models()
    return None if v in known else f"unknown model; known models: {', '.join(known)}"


def _image_size(v: int) -> str | None:
    if v == 0 or (64 <= v <= 2048 and v % 32 == 0):
        return None
    return ("must be 0 (the model's own size) or a multiple of 32 in [64, 2048] (1024 as "
            "Meta's models were trained; 256-512 for them on a CPU)")


_image_size.range = (0, 2048)
_image_size.constraint = "0, or a multiple of 32 in [64, 2048]"


def _device(v: str) -> str | None:
    return None if _DEVICE.match(v) else "must be 'cpu', 'cuda' or 'cuda:N'"


_device.constraint = "cpu, cuda or cuda:N"
_model.constraint = "a known model name (engine/config.py)"


def _memory_admission(v: str) -> str | None:
    try:
        parse_memory_rule(v)
    except ValueError:
        return MEMORY_RULE_EXPECTED
    return None


def _param(default: Any, description: str, check: Callable[[Any], str | None] | None = None,
           live: bool = False):
    return field(default=default, metadata={"description": description, "check": check,
                                            "live": live})


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``sam2_node`` can be told, with its defaults (see config/sam2.yaml)."""

    # Model and runtime.
    model: str = _param("sam2_ros_compact", "model: the bundled sam2_ros_compact, or one of "
                        "Meta's (its file name without .pt, e.g. sam2.1_hiera_tiny)", _model)
    checkpoint: str = _param("", "path of a checkpoint (.pt, Meta's format); empty: the model's "
                                 "bundled weights (sam2_ros_compact), or for Meta's models random "
                                 "weights (masks not meaningful: plumbing tests only)")
    engine_dir: str = _param("", "folder of cached ONNX exports and TensorRT engines "
                                 "(onnxruntime, tensorrt); empty: the default cache")
    backend: str = _param("torch", "inference runtime", _one_of(*BACKENDS))
    device: str = _param("cpu", "torch device: cpu, cuda or cuda:N", _device)
    precision: str = _param("fp32", "inference precision (torch: tf32 and fp16 on cuda only)",
                            _one_of(*PRECISIONS))
    compile: bool = _param(False, "torch: compile the per-frame step (torch.compile; CUDA "
                                  "graphs on a GPU); the first frames take minutes")
    image_size: int = _param(0, "model input side in pixels: 0 = the model's own (192 for "
                             "sam2_ros_compact, 1024 for Meta's), else a multiple of 32",
                             _image_size)
    seed: int = _param(0, "seed of the random weights when no checkpoint is given",
                       _int_in(0, 2**31 - 1))
    num_threads: int = _param(0, "CPU threads for inference (0: all usable CPUs but one)",
                              _int_in(0, 256))
    # Tracking.
    max_objects: int = _param(MAX_OBJECTS,
                              "most objects tracked at once (>255 makes ~/masks mono16)",
                              _int_in(1, MAX_LABEL))
    # Memory bank: spatial memories (7) and object pointers (16) per object are fixed by the
    # model's weights; how many prompted frames an object keeps is a choice.
    max_cond_frames: int = _param(MAX_COND_FRAMES,
                                  "prompted frames kept per object's memory bank",
                                  _int_in(1, 16))
    memory_admission: str = _param("model", "which tracked frames join an object's memory: "
                                   "'model' (0.5 for sam2_ros_compact; every frame for Meta's), "
                                   "'all' (SAM 2's rule), or a number: frames where the object is "
                                   "judged present with an IoU estimate >= it", _memory_admission)
    presence_threshold: float = _param(0.5, "presence probability above which an object is "
                                            "visible", _float_in(0.0, 1.0), live=True)
    prompt_window_s: float = _param(0.5, "how long received frames stay promptable by stamp",
                                    _float_in(0.0, 10.0))
    prompt_wait_s: float = _param(1.0, "how long a prompt stamped with a frame that has not "
                                       "arrived yet waits for it", _float_in(0.0, 10.0),
                                  live=True)
    max_window_frames: int = _param(32, "cap on frames kept in the prompt window",
                                    _int_in(1, 1000))
    service_timeout_s: float = _param(30.0, "how long a request may wait for the tracker to "
                                      "start it; one not started by then is cancelled (nothing "
                                      "changes) and refused; one already running is answered "
                                      "when it ends", _float_in(0.0, 600.0, lo_open=True),
                                      live=True)
    max_pending_requests: int = _param(128, "service requests that may wait at once (queued "
                                       "for the tracker or for their frame); more are answered "
                                       "'busy' at once and counted in /diagnostics",
                                       _int_in(1, 10000))
    # Prompts from a detector (vision_msgs/Detection2DArray on detections, when installed).
    detection_match_iou: float = _param(0.5, "a detection whose box overlaps an object's box by "
                                        "this IoU is that object (a lost one is re-prompted); "
                                        "others start new objects", _float_in(0.0, 1.0,
                                                                               lo_open=True),
                                        live=True)
    detection_min_score: float = _param(0.5, "detections scored below this start no new object",
                                        _float_in(0.0, 1.0), live=True)
    # Input and output.
    input_transport: str = _param("raw", "'raw' subscribes to image, 'compressed' to "
                                         "image/compressed", _one_of(*TRANSPORTS))
    input_qos: str = _param("sensor_data", "input QoS: sensor_data (best effort) or reliable",
                            _one_of(*QOS_PROFILES))
    output_qos: str = _param("reliable", "QoS of masks, tracks and overlay",
                             _one_of(*QOS_PROFILES))
    qos_depth: int = _param(5, "history depth of the input and output topics",
                            _int_in(1, 100))
    max_image_side: int = _param(8192, "largest image side accepted, raw or compressed (a "
                                 "compressed image's size is read from its header before it is "
                                 "decoded)", _int_in(16, 65535))
    publish_overlay: bool = _param(True, "publish ~/overlay (computed only while subscribed)",
                                   live=True)
    overlay_alpha: float = _param(0.5, "opacity of the masks in ~/overlay",
                                  _float_in(0.0, 1.0), live=True)
    diagnostics_period_s: float = _param(1.0, "period of /diagnostics",
                                         _float_in(0.05, 60.0))
    autostart: bool = _param(False, "configure and activate at start-up (no lifecycle manager)")
    # 3D from an aligned depth image (sam2_ros.depth_input, engine.depth).
    depth_enabled: bool = _param(False, "subscribe to depth/image (16UC1 or mono16 in mm, 32FC1 "
                                        "in m; aligned with image: its size or aspect ratio) and "
                                        "depth/camera_info, and give each visible object a 3D "
                                        "position in ~/tracks")
    depth_tolerance_s: float = _param(0.02, "a colour frame takes the depth image of the same "
                                            "stamp, else the nearest one within this many "
                                            "seconds", _float_in(0.0, 1.0), live=True)
    depth_queue_size: int = _param(10, "recent depth images kept for pairing with colour frames",
                                   _int_in(1, 100))
    depth_erosion_px: int = _param(2, "the object's depth is the median over its mask eroded by "
                                      "this many pixels (its rim bleeds)", _int_in(0, 50),
                                   live=True)
    depth_band_m: float = _param(0.05, "mask pixels within this depth of the object's median "
                                       "depth (or 3 robust sigmas, if more) are its inliers",
                                 _float_in(0.0, 100.0, lo_open=True), live=True)
    depth_min_pixels: int = _param(10, "inliers an object needs for a position",
                                   _int_in(1, 10**7), live=True)
    publish_object_points: bool = _param(False, "publish ~/object_points, a PointCloud2 of the "
                                                "objects' inliers (while subscribed)", live=True)
    object_points_stride: int = _param(4, "~/object_points keeps every n-th image row and column",
                                       _int_in(1, 64), live=True)
    publish_object_markers: bool = _param(True, "publish ~/object_markers, a box per located "
                                                "object for rviz (while subscribed)", live=True)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "NodeConfig":
        """A validated config; raises ValueError naming every refused parameter and why."""
        problems = [p for name, v in values.items() if (p := check_parameter(name, v))]
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        return cls(**{k: coerce(k, v) for k, v in values.items()})

    @property
    def random_weights(self) -> bool:
        from engine.checkpoint import bundled_checkpoint

        return not self.checkpoint and bundled_checkpoint(self.model) is None

    @property
    def model_image_size(self) -> int:
        """The image size the model runs at (``image_size``, or the model's own when 0)."""
        from engine.config import get_config

        return self.image_size or get_config(self.model).image_size

    @property
    def label_encoding(self) -> str:
        return "mono8" if self.max_objects <= 255 else "mono16"


PARAMETERS: dict[str, Any] = {f.name: f for f in fields(NodeConfig)}
LIVE_PARAMETERS = frozenset(n for n, f in PARAMETERS.items() if f.metadata["live"])


def defaults() -> dict[str, Any]:
    return {name: f.default for name, f in PARAMETERS.items()}


def describe(name: str) -> str:
    return PARAMETERS[name].metadata["description"]


def coerce(name: str, value: Any) -> Any:
    """An integer given for a float parameter is taken as that float (1 -> 1.0)."""
    f = PARAMETERS.get(name)
    if f is not None and type(f.default) is float and type(value) is int:
        return float(value)
    return value


def limits(name: str) -> tuple[tuple[float, float] | None, str]:
    """The parameter's (low, high) range for its descriptor (None: no range) and the text of
    its other constraints, so that rqt_reconfigure and `ros2 param describe` show them."""
    check = PARAMETERS[name].metadata["check"]
    when = ("applies at once" if PARAMETERS[name].metadata["live"] else
            "applies at configure: set it while the node is unconfigured")
    extra = getattr(check, "constraint", "")
    return getattr(check, "range", None), f"{extra}; {when}" if extra else when


def check_parameter(name: str, value: Any) -> str | None:
    """None if ``value`` is acceptable for parameter ``name``, else the reason it is not."""
    f = PARAMETERS.get(name)
    if f is None:
        return f"{name}: unknown parameter"
    expected, value = type(f.default), coerce(name, value)
    if type(value) is not expected:
        return f"{name}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
    reason = f.metadata["check"](value) if f.metadata["check"] else None
    return f"{name}={value!r} {reason}" if reason else None
