"""``sam2_node``: a managed (lifecycle) ROS 2 node that tracks prompted objects in a camera stream.

configure builds the engine (a bad parameter or checkpoint fails the transition with the reason
in the log), activate subscribes to the camera, deactivate unsubscribes, cleanup releases the
model. Inference runs on one worker thread that always takes the newest frame; the executor
thread only receives messages and answers services. A service request never blocks the executor:
it awaits its frame and its turn on the worker, in a callback group of its own, so frames,
lifecycle and parameter services go on meanwhile. SIGINT/SIGTERM stop the worker before the
context shuts down, and the process exits within ``SHUTDOWN_BUDGET_S`` whatever is running.
Topics, services and parameters: the README's node table and config/sam2.yaml.

    python -m sam2_ros.node --ros-args -p autostart:=true -r image:=/camera/image_raw
"""
from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, RegionOfInterest
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from sam2_ros_interfaces.msg import ObjectTrack, PromptEvent, Tracks
from sam2_ros_interfaces.srv import AddPrompt, RemoveObject

from engine.overlay import render_overlay
from engine.tracker import ObjectResult

from .backend import BackendError, load_tracker
from .config import (LIVE_PARAMETERS, PARAMETERS, NodeConfig, check_parameter, coerce, describe,
                     limits)
from .conversions import (InputError, check_prompt_size, compressed_to_rgb, fill_image,
                          fill_track_mask, image_to_rgb, label_image)
from .deadlines import TICK_S as DEADLINE_TICK_S, Deadlines
from .depth_input import DepthInput
from .depth_output import depth_status, locate_tracks, markers, point_cloud, set_unknown
from .diagnostics import FrameStats, LogThrottle, diagnostic_array
from .session import DetectionOutcome, Frame, PromptOutcome, TrackingSession, stamp_text
from .topic_prompts import click_prompt, detections_from_msg, track_detections
from .transport import shm_segment_bytes
from .worker import CANCELLED, LatestFrameWorker, ShuttingDown

try:  # optional: ROS desktop installs have vision_msgs; the pip wheels used here do not
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray,
                                 ObjectHypothesisWithPose)
    VISION_MSGS = ""
except ImportError as _err:  # no detections in or out; said once at configure
    Detection2DArray = None
    VISION_MSGS = str(_err)

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
SHUTDOWN_BUDGET_S = 1.5  # SIGINT/SIGTERM: longest wait for a running inference before exiting
SHUTDOWN_IDLE_S = 1.0  # SIGINT/SIGTERM with no inference running: the process ends by then


def _qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        return QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


# The services' QoS: reliable, every request kept until the executor takes it (KEEP_ALL; the
# default depth of 10 dropped the rest of a burst unseen). The executor takes requests as fast
# as they come (none blocks it) and answers "busy" beyond max_pending_requests: an overflow is
# an answer and a count in /diagnostics, never a silent loss.
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
# Prompts on topics (clicks, detections): kept the same way, each one applied or refused.
PROMPT_QOS = SERVICE_QOS


def _answers_errors(handler):
    """A service callback that answers an unexpected exception (success false, the error)
    instead of raising it into the executor, which would end the node."""
    @functools.wraps(handler)
    async def guarded(self, req, resp):
        try:
            return await handler(self, req, resp)
        except Exception as err:  # an engine or node bug: answer, log, keep running
            self._stats.on_error(f"request failed: {err!r}"[:300])
            self.get_logger().error(f"request failed: {err!r}\n{traceback.format_exc()}")
            resp.success, resp.message = False, f"internal error: {err!r}"
            return resp
    return guarded


def _reason(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


class Sam2Node(LifecycleNode):
    """ROS glue around ``TrackingSession``: messages in, engine calls, messages out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sam2_node", **kwargs)
        self._refused_overrides: dict[str, str] = {}  # bad start-up values: configure says why
        for name in PARAMETERS:
            self._declare(name)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.cfg: NodeConfig | None = None
        self._session: TrackingSession | None = None
        self._worker: LatestFrameWorker | None = None
        self._banner = ""  # on ~/overlay: set at configure (random weights say so)
        self._sub = None
        self._pubs: dict[str, Any] = {}
        self._seq = 0
        self._waiters: list[tuple[int, Future]] = []  # prompts waiting for their frame
        self._waiters_lock = threading.Lock()
        # Lifecycle and parameter services hold the default callback group while they run:
        # requests that wait (for a frame, for the worker) live in a reentrant group of their
        # own, frames in another, so none of them waits on another.
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._wait_group = ReentrantCallbackGroup()
        self._stats = FrameStats()
        self._throttle = LogThrottle(period_s=5.0)
        self._depth: DepthInput | None = None  # with depth_enabled
        self._depth_subs: list[Any] = []
        self._prompt_subs: list[Any] = []  # clicks and detections, while active
        self._camera_info: CameraInfo | None = None  # the latest, republished with ~/overlay
        self._state = "unconfigured"
        self._closing = False  # set once shutdown has begun: the worker publishes nothing more
        # Jobs finished on the worker thread, handed to the executor thread by a guard condition.
        self._finished: deque[tuple[Any, Future]] = deque()
        self._job_done = self.create_guard_condition(self._on_jobs_done,
                                                     callback_group=self._wait_group)
        # Timeouts of waiting requests: one timer for all of them (see deadlines.py).
        self._deadlines = Deadlines()
        self._deadline_timer = self.create_timer(DEADLINE_TICK_S, self._deadlines.run_due,
                                                 callback_group=self._wait_group)
        self._shm_bytes = shm_segment_bytes()
        self._largest_frame = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # What became of every prompt (service, click, detection): applied or refused, and why.
        self._events_pub = self.create_publisher(PromptEvent, "~/events", 100)
        # The services live as long as the node: a request waiting when the node is cleaned
        # up is answered ("not configured"), and one sent while unconfigured is told so.
        srv_qos, group = SERVICE_QOS, self._wait_group
        self._srvs = [
            self.create_service(AddPrompt, "~/add_prompt", self._on_add_prompt,
                                qos_profile=srv_qos, callback_group=group),
            self.create_service(RemoveObject, "~/remove_object", self._on_remove_object,
                                qos_profile=srv_qos, callback_group=group),
            self.create_service(Trigger, "~/reset", self._on_reset, qos_profile=srv_qos,
                                callback_group=group),
        ]
        period = self.get_parameter("diagnostics_period_s").value
        self._diag_timer = self.create_timer(period if isinstance(period, float) and period > 0
                                             else 1.0, self._on_diagnostics)

    def _declare(self, name: str) -> None:
        """Declare a parameter with its type, range and constraints. A start-up value (launch
        file, --ros-args) that the parameter's check refuses is not taken: the default is kept
        and configure fails with the reason; an integer for a float parameter is its float."""
        default = PARAMETERS[name].default

        def descriptor() -> ParameterDescriptor:
            span, text = limits(name)
            d = ParameterDescriptor(description=describe(name), additional_constraints=text)
            if span is not None and isinstance(default, int) and not isinstance(default, bool):
                d.integer_range = [IntegerRange(from_value=span[0], to_value=span[1], step=0)]
            elif span is not None and isinstance(default, float):
                d.floating_point_range = [FloatingPointRange(from_value=span[0],
                                                             to_value=span[1], step=0.0)]
            return d
        given = getattr(self, "_parameter_overrides", {}).get(name)
        if given is None:
            self.declare_parameter(name, default, descriptor())
            return
        value = coerce(name, given.value)
        problem = check_parameter(name, value)
        if problem:
            self._refused_overrides[name] = problem
            value = default
        self.declare_parameter(name, value, descriptor(), ignore_override=True)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self._refused_overrides:
                raise ValueError("invalid parameters: " +
                                 "; ".join(self._refused_overrides.values()) +
                                 " (the default was kept; set a valid value and configure "
                                 "again)")
            cfg = NodeConfig.from_values({n: self.get_parameter(n).value for n in PARAMETERS})
            self.get_logger().info(f"configuring: loading {cfg.model} ({cfg.backend}, "
                                   f"{cfg.device})")
            engine = load_tracker(cfg)
        except (ValueError, BackendError) as err:
            self.get_logger().error(f"configure failed: {err}")
            self._stats.on_configure_failed(f"configure failed: {err}")
            return FAILURE
        except Exception as err:  # an engine bug: say so, stay alive
            self.get_logger().error(f"configure failed: {err!r}\n{traceback.format_exc()}")
            self._stats.on_configure_failed(f"configure failed: {err!r}")
            return FAILURE
        self.cfg = cfg
        log = self.get_logger()
        (log.warning if engine.random_weights else log.info)(f"model: {engine.weights}")
        self._banner = "RANDOM WEIGHTS: masks not meaningful" if engine.random_weights else ""
        out = _qos(cfg.output_qos, cfg.qos_depth)
        self._pubs = {
            "masks": self.create_lifecycle_publisher(Image, "~/masks", out),
            "tracks": self.create_lifecycle_publisher(Tracks, "~/tracks", out),
            "overlay": self.create_lifecycle_publisher(Image, "~/overlay", out),
            "camera_info": self.create_lifecycle_publisher(CameraInfo, "~/camera_info", out),
        }
        if Detection2DArray is not None:
            self._pubs["detections"] = self.create_lifecycle_publisher(
                Detection2DArray, "~/detections", out)
            log.info("vision_msgs found: boxes on detections become prompts; ~/detections "
                     "published")
        else:
            log.info(f"vision_msgs not installed ({VISION_MSGS}): no detections input, no "
                     "~/detections output")
        self._configure_depth(cfg, out)
        raw = compressed_to_rgb if cfg.input_transport == "compressed" else image_to_rgb

        def decode(msg):
            return raw(msg, cfg.max_image_side)
        self._stats, self._seq = FrameStats(), 0  # a new session counts from its first frame
        self._largest_frame = 0
        self._session = TrackingSession(engine, lambda: self.cfg, decode, self._publish,
                                        self._stats, self._warn_input)
        self._worker = LatestFrameWorker(self._session.process, self._on_worker_error,
                                         max_jobs=cfg.max_pending_requests).start()
        if self._diag_timer.timer_period_ns != int(cfg.diagnostics_period_s * 1e9):
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(cfg.diagnostics_period_s, self._on_diagnostics)
        self._state = "inactive"
        log.info(f"configured: {engine.backend}, max {cfg.max_objects} objects, "
                 f"prompt window {cfg.prompt_window_s:g} s, model warmed up in "
                 f"{engine.warmup_s:.2f} s")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        qos = _qos(cfg.input_qos, cfg.qos_depth)
        # Frames the middleware knows it lost (a best-effort sample too large for the shared
        # memory segment goes by UDP, where a lost fragment loses the frame) are counted.
        events = SubscriptionEventCallbacks(message_lost=self._on_frames_lost)
        msg_type, topic = ((CompressedImage, "image/compressed")
                           if cfg.input_transport == "compressed" else (Image, "image"))
        try:
            self._sub = self.create_subscription(msg_type, topic, self._on_image, qos,
                                                 callback_group=self._input_group,
                                                 event_callbacks=events)
        except Exception as err:  # noqa: BLE001 - a middleware without the event
            self.get_logger().warning(f"lost frames cannot be counted here: {err}")
            self._sub = self.create_subscription(msg_type, topic, self._on_image, qos,
                                                 callback_group=self._input_group)
        self._subscribe_depth(qos)
        self._subscribe_prompts(qos)
        self.get_logger().info(f"active: listening on {self._sub.topic_name} ({cfg.input_qos})")
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = "unconfigured"
        return SUCCESS

    def _unsubscribe(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        self._sub = None
        for sub in self._depth_subs + self._prompt_subs:
            self.destroy_subscription(sub)
        self._depth_subs, self._prompt_subs = [], []
        self._camera_info = None
        if self._worker is not None:
            self._worker.clear()

    def release(self, wait_s: float = 10.0) -> bool:
        """Unsubscribe, stop the worker (waiting up to ``wait_s`` for a running inference),
        drop the model and the publishers. False if the worker is still running."""
        self._unsubscribe()
        stopped = self._worker.stop(wait_s) if self._worker is not None else True
        if stopped:  # a worker still running may publish: its publishers stay until exit
            for pub in self._pubs.values():
                self.destroy_lifecycle_publisher(pub)
            self._pubs = {}
        self._worker = self._session = None
        self._fail_waiters()
        return stopped

    def worker_busy_s(self) -> float:
        """Seconds the worker's current frame or request has been running (0 when idle)."""
        return self._worker.busy_s() if self._worker is not None else 0.0

    def close(self) -> bool:
        """Shutdown by signal: nothing is published from now on; the worker is stopped before
        the context goes (within SHUTDOWN_BUDGET_S). False if an inference was still running."""
        self._closing = True
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        return self.release(wait_s=SHUTDOWN_BUDGET_S)

    # -------------------------------------------------------------------- input
    def _on_image(self, msg: Image | CompressedImage) -> None:
        session, worker = self._session, self._worker
        if session is None or worker is None:  # released meanwhile
            return
        self._seq += 1
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        frame = Frame(self._seq, stamp_ns, msg, received=time.monotonic())
        self._stats.on_received()
        size = len(msg.data)
        if size > self._largest_frame:
            self._largest_frame = size
            if self._shm_bytes and size > self._shm_bytes // 2:
                self.get_logger().warning(
                    f"frames of {size / 2**20:.1f} MiB: more than half the Fast DDS shared-memory "
                    f"segment ({self._shm_bytes / 2**20:.0f} MiB, from the profile in "
                    "FASTRTPS_DEFAULT_PROFILES_FILE); at best effort such frames can be lost "
                    "between processes: raise segment_size (README, 'Large images')")
        session.window.push(frame)
        worker.offer(frame)
        self._wake_waiters(stamp_ns)

    def _on_frames_lost(self, info) -> None:
        lost = int(info.total_count_change)
        if lost <= 0:
            return
        self._stats.on_lost(lost)
        self._log_throttled("warning", "transport_loss", (
            f"{lost} frame(s) lost in transport before reaching the node (best effort; "
            f"frames of up to {self._largest_frame / 2**20:.1f} MiB seen): a frame larger than "
            "the shared-memory segment travels by UDP; see README, 'Large images'"))

    def _log_throttled(self, level: str, kind: str, text: str) -> None:
        """Log at most one line per kind of problem every 5 s (one bad camera or client must
        not flood the log; the counts are in /diagnostics)."""
        held = self._throttle.allow(kind)
        if held is None:
            return
        if held:
            text += f" [and {held} more like this since the previous such line]"
        log = self.get_logger()  # rclpy wants one severity per call site: one line each
        if level == "error":
            log.error(text)
        elif level == "warning":
            log.warning(text)
        else:
            log.info(text)

    def _warn_input(self, text: str, kind: str = "input") -> None:
        self._log_throttled("warning", f"frame:{kind}", text)

    def _on_worker_error(self, err: BaseException) -> None:
        self._stats.on_worker_error(f"{err!r}"[:300])
        if self._closing:
            return
        self._log_throttled("error", f"worker:{type(err).__name__}",
                            f"tracking failed on a frame: {err!r}\n"
                            f"{''.join(traceback.format_exception(err))}")

    # ------------------------------------------------------------------- output
    def _publish(self, frame: Frame, results: list[ObjectResult], labels: dict[int, int]) -> None:
        """Runs on the worker thread: masks, tracks and (when subscribed) overlay; nothing once
        shutdown has begun (the context may be gone under a frame that was running)."""
        if self._closing or not self._pubs:
            return
        try:
            self._publish_outputs(frame, results, labels)
        except Exception:
            if not self._closing:
                raise

    def _publish_outputs(self, frame: Frame, results: list[ObjectResult],
                         labels: dict[int, int]) -> None:
        cfg, header = self.cfg, frame.msg.header
        h, w = frame.rgb.shape[:2]
        masks = {r.obj_id: r.mask for r in results}
        dtype = "uint8" if cfg.label_encoding == "mono8" else "uint16"
        self._pubs["masks"].publish(fill_image(
            Image(header=header), label_image(masks, labels, (h, w), dtype), cfg.label_encoding))
        tracks = [self._track_msg(r, labels[r.obj_id]) for r in results]
        depth_header = self._locate(frame, results, tracks) if self._depth else None
        self._pubs["tracks"].publish(Tracks(header=header, image_width=w, image_height=h,
                                            objects=tracks,
                                            depth_header=depth_header or Header()))
        if "detections" in self._pubs:
            self._pubs["detections"].publish(_detection_array(header, tracks))
        overlay = self._pubs["overlay"]
        if cfg.publish_overlay and overlay.get_subscription_count() > 0:
            shown = [(r.obj_id, labels[r.obj_id], r.mask, r.box)
                     for r, t in zip(results, tracks) if t.visible]
            picture = render_overlay(frame.rgb, shown, cfg.overlay_alpha, self._banner)
            overlay.publish(fill_image(Image(header=header), picture, "rgb8"))
            info = self._camera_info
            if info is not None:  # for rviz's Camera display: same stamp and frame as overlay
                self._pubs["camera_info"].publish(CameraInfo(
                    header=header, height=info.height, width=info.width,
                    distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r,
                    p=info.p, binning_x=info.binning_x, binning_y=info.binning_y,
                    roi=info.roi))

    def _track_msg(self, r: ObjectResult, label: int) -> ObjectTrack:
        visible = r.presence >= self.cfg.presence_threshold and r.box is not None
        msg = ObjectTrack(object_id=r.obj_id, label=label, presence=float(r.presence),
                          predicted_iou=float(r.iou), visible=visible)
        set_unknown(msg)  # 3D fields: filled by _locate when depth is paired
        if r.box is not None:  # inclusive pixel bounds
            x0, y0, x1, y1 = r.box
            msg.bbox = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1,
                                        height=y1 - y0 + 1)
            fill_track_mask(msg, r.mask, r.box)
        return msg

    def _on_diagnostics(self) -> None:
        """Published in every state (unconfigured, inactive, active): state, counts, errors."""
        if self._closing:
            return
        s, cfg = self._session, self.cfg
        extra = {"objects": str(len(s.engine.tracker.object_ids)) if s is not None else "0",
                 "input": self._sub.topic_name if self._sub else "",
                 "largest_frame_bytes": str(self._largest_frame),
                 "shm_segment_bytes": str(self._shm_bytes or 0),
                 "pending_requests": str(self._worker.pending_jobs() if self._worker else 0),
                 "worker_busy_s": f"{self._worker.busy_s() if self._worker else 0.0:.2f}"}
        if s is not None:
            extra.update(backend=s.engine.backend, model=cfg.model,
                         image_size=str(cfg.model_image_size), weights=s.engine.weights)
        diag = diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: tracking",
            self.get_fully_qualified_name(), self._stats.snapshot(), extra, self._state)
        if self._depth is not None:
            diag.status.append(depth_status(f"{self.get_name()}: depth",
                                            self.get_fully_qualified_name(), self._depth))
        self._diag_pub.publish(diag)

    # -------------------------------------------------------------------- depth
    def _configure_depth(self, cfg: NodeConfig, out: QoSProfile) -> None:
        self._depth = DepthInput(cfg.depth_queue_size) if cfg.depth_enabled else None
        if self._depth is not None:
            self._pubs["object_points"] = self.create_lifecycle_publisher(
                PointCloud2, "~/object_points", out)
            self._pubs["object_markers"] = self.create_lifecycle_publisher(
                MarkerArray, "~/object_markers", out)

    def _subscribe_depth(self, qos: QoSProfile) -> None:
        depth = self._depth
        if depth is not None:
            self._depth_subs = [
                self.create_subscription(Image, "depth/image", depth.on_depth, qos,
                                         callback_group=self._input_group),
                self.create_subscription(CameraInfo, "depth/camera_info", depth.on_info, qos,
                                         callback_group=self._input_group)]
            self.get_logger().info(f"depth: {self._depth_subs[0].topic_name} + "
                                   f"{self._depth_subs[1].topic_name}")

    def _locate(self, frame: Frame, results: list[ObjectResult],
                tracks: list[ObjectTrack]) -> Header | None:
        """Worker thread: the tracks' 3D fields from the depth paired with ``frame`` (and
        ~/object_points, ~/object_markers while subscribed); the depth's header, or None."""
        cfg, depth = self.cfg, self._depth
        try:
            paired = depth.pair(frame.stamp_ns, frame.rgb.shape[:2], cfg.depth_tolerance_s)
        except InputError as err:
            self._warn_input(f"depth for frame {stamp_text(frame.stamp_ns)} rejected: {err}; "
                             "its objects have no 3D position",
                             kind=f"depth:{getattr(err, 'kind', 'input')}")
            return None
        if paired is None:
            self._warn_input("depth missing: no depth image received yet on depth/image "
                             "(remap it to the camera's aligned depth); objects have no 3D "
                             "position", kind="depth:missing")
            return None
        points_pub, markers_pub = self._pubs["object_points"], self._pubs["object_markers"]
        stride = cfg.object_points_stride if (cfg.publish_object_points and
                                              points_pub.get_subscription_count()) else 0
        try:
            located, points = locate_tracks(paired, results, tracks, cfg, stride)
        except Exception as err:  # a bug in the 3D step must not stop the 2D outputs
            self.get_logger().error(f"3D step failed: {err!r}\n{traceback.format_exc()}",
                                    throttle_duration_sec=5.0)
            for track in tracks:
                set_unknown(track)
            return None
        depth.on_paired()
        header = Header(stamp=frame.msg.header.stamp,
                        frame_id=paired.header.frame_id or frame.msg.header.frame_id)
        if stride:
            points_pub.publish(point_cloud(header, points))
        if cfg.publish_object_markers and markers_pub.get_subscription_count():
            markers_pub.publish(markers(header, located))
        return paired.header

    # ----------------------------------------------------------------- services
    async def _call_worker(self, fn) -> tuple[Any, str | None, str]:
        """Run ``fn`` on the worker without blocking the executor; (result, None, "") or
        (None, the reason it failed, its kind for the log's throttle). A request the worker has
        not started within service_timeout_s is cancelled: it never runs, and the reason says
        nothing changed. One already running is waited for, and its real outcome answered."""
        worker, cfg = self._worker, self.cfg
        if worker is None:
            return None, "node is not configured", "unconfigured"
        future = Future()
        asked = time.monotonic()

        def done(job) -> None:  # worker thread
            self._finished.append((job, future))
            if not self._closing:  # after shutdown the guard condition may be gone
                try:
                    self._job_done.trigger()
                except Exception:  # noqa: BLE001 - destroyed under a late job: nothing to wake
                    pass
        try:
            job = worker.submit(fn, on_done=done)
        except ShuttingDown as err:
            return None, str(err), "shutdown"
        except OverflowError as err:
            self._stats.on_busy()
            self._log_throttled("warning", "busy", f"request refused: {err}")
            return None, f"busy: {err}", "busy"
        timeout = cfg.service_timeout_s

        def expire() -> None:
            if job.cancel() and not future.done():
                future.set_result(None)
        deadline = self._deadlines.add(timeout, expire)
        try:
            await future
        finally:
            deadline.cancel()
        if job.state == CANCELLED:
            if isinstance(job.error, ShuttingDown):
                return None, str(job.error), "shutdown"
            return None, (f"the tracker did not start the request within service_timeout_s "
                          f"({timeout:g} s); it was cancelled and nothing changed"), "timeout"
        if time.monotonic() - asked > timeout:
            self._stats.on_late()
        err = job.error
        if err is None:
            return job.result, None, ""
        if isinstance(err, (ValueError, KeyError, RuntimeError)):
            return None, _reason(err), getattr(err, "kind", type(err).__name__)
        # an engine bug: answer, log, keep running
        self._stats.on_error(f"request failed: {err!r}"[:300])
        self.get_logger().error(f"request failed: {err!r}\n"
                                f"{''.join(traceback.format_exception(err))}")
        return None, f"internal error: {err!r}", "internal"

    def _on_jobs_done(self) -> None:
        """Executor thread, woken by the worker: complete the futures of finished jobs."""
        while self._finished:
            job, future = self._finished.popleft()
            if not future.done():
                future.set_result(job)

    def _fail_waiters(self) -> None:
        with self._waiters_lock:
            waiting, self._waiters = self._waiters, []
        for _, future in waiting:
            if not future.done():
                future.set_result(False)

    def _frame_arrival(self, stamp_ns: int) -> Future | bool | None:
        """A future done once a frame stamped ``stamp_ns`` or later has arrived (True) or
        ``prompt_wait_s`` has passed (False); None when no wait is needed: no stamp, or a
        frame with that stamp is in the window, or one stamped later (stamps need not
        increase: what was received decides, not the order of stamps). False when
        max_pending_requests prompts are waiting already."""
        session = self._session
        if not stamp_ns or session is None or session.window.find(stamp_ns) is not None or \
                session.window.has_reached(stamp_ns):
            return None
        future = Future()
        with self._waiters_lock:
            if len(self._waiters) >= self.cfg.max_pending_requests:
                self._stats.on_busy()
                return False
            self._waiters.append((stamp_ns, future))

        def expire() -> None:
            with self._waiters_lock:
                self._waiters = [(s, f) for s, f in self._waiters if f is not future]
            if not future.done():
                future.set_result(False)
        deadline = self._deadlines.add(self.cfg.prompt_wait_s, expire)
        future.add_done_callback(lambda _: deadline.cancel())  # woken by its frame: forget it
        return future

    def _wake_waiters(self, stamp_ns: int) -> None:
        if not self._waiters:  # the usual case, on every frame
            return
        with self._waiters_lock:
            woken = [f for s, f in self._waiters if s <= stamp_ns]
            self._waiters = [(s, f) for s, f in self._waiters if s > stamp_ns]
        for future in woken:
            if not future.done():
                future.set_result(True)

    async def _run_prompt(self, stamp_ns: int, job) -> tuple[Any, str | None, str]:
        """Wait for the frame stamped ``stamp_ns`` if it has not arrived (prompt_wait_s), then
        run ``job(session)`` on the worker: (result, None, "") or (None, reason, kind)."""
        if (arrival := self._frame_arrival(stamp_ns)) is not None:
            # The prompt overtook the frame it was made on: the executor keeps receiving
            # frames while this callback waits for that one (or prompt_wait_s runs out).
            if arrival is False:
                return None, (f"busy: {self.cfg.max_pending_requests} prompts are already "
                              "waiting for their frame; try again later"), "busy"
            await arrival
        session = self._session
        return await self._call_worker(lambda: job(session))

    @_answers_errors
    async def _on_add_prompt(self, req: AddPrompt.Request, resp: AddPrompt.Response):
        asked = time.monotonic()
        resp.object_id = req.object_id
        stamp_ns = req.frame_stamp.sec * 10**9 + req.frame_stamp.nanosec
        try:
            check_prompt_size(req)  # before anything waits or is queued
        except InputError as e:
            out, err, kind = None, str(e), e.kind
        else:
            out, err, kind = await self._run_prompt(
                stamp_ns, lambda s: s.prompt(req.object_id, req, stamp_ns, asked))
        event = Header(stamp=req.frame_stamp)
        if err is not None:
            resp.success, resp.message = False, f"prompt refused: {err}"
            self._report("service", event, req.object_id, None, resp.message, kind)
            return resp
        resp.success, resp.message = True, out.message
        late = time.monotonic() - asked
        if late > self.cfg.service_timeout_s:
            resp.message += (f" (answered after {late:.1f} s, more than service_timeout_s "
                             f"{self.cfg.service_timeout_s:g} s: it had already started)")
        resp.applied_stamp = Time(sec=out.applied_stamp_ns // 10**9,
                                  nanosec=out.applied_stamp_ns % 10**9)
        resp.track = self._track_msg(out.result, out.label)
        self._report("service", event, out.object_id, out, out.message)
        return resp

    # ------------------------------------------------------------ topic prompts
    def _subscribe_prompts(self, qos: QoSProfile) -> None:
        """Clicks (rqt_image_view's <image>_mouse_left convention), negative clicks, the
        camera's CameraInfo (republished with ~/overlay) and, with vision_msgs, detections."""
        group = self._wait_group
        subs = [
            self.create_subscription(PointStamped, "image_mouse_left", self._on_click,
                                     PROMPT_QOS, callback_group=group),
            self.create_subscription(PointStamped, "~/overlay_mouse_left", self._on_click,
                                     PROMPT_QOS, callback_group=group),
            self.create_subscription(PointStamped, "~/negative_click", self._on_negative_click,
                                     PROMPT_QOS, callback_group=group),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                     callback_group=self._input_group),
        ]
        if Detection2DArray is not None:
            subs.append(self.create_subscription(Detection2DArray, "detections",
                                                 self._on_detections, PROMPT_QOS,
                                                 callback_group=group))
        self._prompt_subs = subs
        self.get_logger().info("clicks on " + ", ".join(s.topic_name for s in subs[:3]) + (
            f"; detections on {subs[4].topic_name}" if len(subs) > 4 else
            "; no detections input (vision_msgs not installed)"))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    async def _on_click(self, msg: PointStamped) -> None:
        await self._click(msg, positive=True)

    async def _on_negative_click(self, msg: PointStamped) -> None:
        await self._click(msg, positive=False)

    async def _click(self, msg: PointStamped, positive: bool) -> None:
        """A click: the object under it is refined, or a new object starts (a negative click
        on no object is refused). Outcome in the log, on ~/events and in /diagnostics."""
        try:
            asked = time.monotonic()
            stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            x, y = float(msg.point.x), float(msg.point.y)
            source = "click" if positive else "negative_click"
            try:
                click_prompt(x, y, positive)  # before anything waits or is queued
            except InputError as e:
                out, err, kind = None, str(e), e.kind
            else:
                out, err, kind = await self._run_prompt(
                    stamp_ns, lambda s: s.click(x, y, positive, stamp_ns, asked))
            text = out.message if err is None else f"{source} refused: {err}"
            self._report(source, msg.header, out.object_id if out else -1, out, text, kind,
                         (x, y))
        except Exception as err:  # a bug: log it, keep the node running
            self._prompt_crashed("click", err)

    async def _on_detections(self, msg) -> None:
        """A detector's boxes: new objects, or re-prompts of lost objects (sam2_ros/
        topic_prompts.py); each box's outcome in the log, on ~/events and in /diagnostics."""
        try:
            asked = time.monotonic()
            stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            try:
                dets = detections_from_msg(msg)
            except (AttributeError, TypeError, ValueError) as e:
                self._report("detection", msg.header, -1, None,
                             f"detections refused: not a Detection2DArray as expected ({e!r})",
                             "detection_msg")
                return
            if not dets:
                return
            cfg = self.cfg
            out, err, kind = await self._run_prompt(
                stamp_ns, lambda s: s.detections(dets, stamp_ns, cfg.detection_match_iou,
                                                 cfg.detection_min_score, asked))
            if err is not None:  # the frame or the worker refused them all
                for d in dets:
                    self._report("detection", msg.header, -1, None,
                                 f"detection refused: {err}", kind, (d.center_x, d.center_y))
                return
            for o in out:
                self._report_detection(msg.header, o)
        except Exception as err:  # a bug: log it, keep the node running
            self._prompt_crashed("detections", err)

    def _report_detection(self, header: Header, o: DetectionOutcome) -> None:
        d = o.detection
        where = (d.center_x, d.center_y)
        if o.prompt is None:  # no prompt needed or possible: said at debug level only
            self.get_logger().debug(f"detection at ({where[0]:.0f}, {where[1]:.0f}) left out: "
                                    f"{o.error}")
            return
        text = o.outcome.message if o.outcome else f"detection refused: {o.error}"
        self._report("detection", header, o.prompt.object_id, o.outcome, text, "detection",
                     where)

    def _report(self, source: str, header: Header, obj_id: int, out: PromptOutcome | None,
                text: str, kind: str = "", xy: tuple[float, float] | None = None) -> None:
        """One prompt's outcome: logged (throttled per kind), counted in /diagnostics,
        published on ~/events."""
        applied = out is not None
        self._stats.on_prompt(source, applied, "" if applied else text)
        if applied:
            self._log_throttled("info", "prompt_applied", text)
        else:
            self._log_throttled("warning", f"prompt_refused:{kind}", text)
        x, y = (_f32(v) for v in xy) if xy else (float("nan"),) * 2
        self._events_pub.publish(PromptEvent(
            header=header, source=source, success=applied,
            action=out.action if applied else "refused", object_id=int(obj_id), x=x, y=y,
            message=text[:1000]))

    def _prompt_crashed(self, what: str, err: Exception) -> None:
        self._stats.on_error(f"{what} failed: {err!r}"[:300])
        self.get_logger().error(f"{what} failed: {err!r}\n{traceback.format_exc()}")

    @_answers_errors
    async def _on_remove_object(self, req: RemoveObject.Request, resp: RemoveObject.Response):
        session = self._session
        text, err, _ = await self._call_worker(lambda: session.remove(req.object_id))
        resp.success, resp.message = err is None, text if err is None else f"remove refused: {err}"
        return resp

    @_answers_errors
    async def _on_reset(self, req: Trigger.Request, resp: Trigger.Response):
        session = self._session
        text, err, _ = await self._call_worker(lambda: session.reset())
        resp.success, resp.message = err is None, text if err is None else f"reset failed: {err}"
        return resp

    # --------------------------------------------------------------- parameters
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Refuse bad values (the reason says why), and, while configured, a parameter that
        only applies at configure: what `ros2 param get` shows is always what is in effect."""
        params = [p for p in params if p.name in PARAMETERS]  # not rclpy's own (use_sim_time)
        problems = [p for prm in params if (p := check_parameter(prm.name, prm.value))]
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        later = [p.name for p in params if p.name not in LIVE_PARAMETERS]
        if later and self._state in ("inactive", "active"):
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(later)} only apply at configure and the node is {self._state}: "
                "deactivate and clean it up, set them, configure again"))
        if self.cfg is not None:
            live = {p.name: coerce(p.name, p.value) for p in params if p.name in LIVE_PARAMETERS}
            self.cfg = replace(self.cfg, **live)  # the session reads it from here
        for p in params:  # a valid value replaces a refused start-up value
            self._refused_overrides.pop(p.name, None)
        return SetParametersResult(successful=True)


def _f32(v: float) -> float:
    """``v`` as a float32 field takes it (beyond float32's range: infinity)."""
    return v if not math.isfinite(v) or abs(v) <= 3.4e38 else math.copysign(math.inf, v)


def _detection_array(header: Header, tracks: list[ObjectTrack]):
    """vision_msgs/Detection2DArray of the visible objects (id as class, presence as score)."""
    out = Detection2DArray(header=header)
    for obj_id, d in track_detections(tracks):
        det = Detection2D(header=header, id=str(obj_id), bbox=BoundingBox2D(
            size_x=d.size_x, size_y=d.size_y))
        det.bbox.center.position.x, det.bbox.center.position.y = d.center_x, d.center_y
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = d.class_id, d.score
        det.results = [hyp]
        out.detections.append(det)
    return out


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM (or the context is shut down); exit code 0.

    rclpy's own signal handlers would shut the context down first, under a worker thread that
    may be publishing; here a signal only asks the executor loop to end, the worker is stopped
    (SHUTDOWN_BUDGET_S at most: an inference cannot be interrupted), then the context goes."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    running: list[Sam2Node] = []

    def on_signal(signum, _frame) -> None:
        if stop.is_set():  # a second signal: no more waiting
            _exit_now()
        stop.set()
        # A long callback (configure loading a model) may hold the main thread: the process
        # still ends within the budget, sooner when no inference is running.
        busy = bool(running) and running[0].worker_busy_s() > 0
        watchdog = threading.Timer(SHUTDOWN_BUDGET_S + 0.4 if busy else SHUTDOWN_IDLE_S,
                                   _exit_now)
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    node = Sam2Node()
    running.append(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    finished = True
    try:
        if node.get_parameter("autostart").value and not stop.is_set():
            if node.trigger_configure() == SUCCESS and not stop.is_set():
                node.trigger_activate()
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        busy = node.worker_busy_s()
        if busy:
            node.get_logger().info(f"shutting down: waiting at most {SHUTDOWN_BUDGET_S:g} s for "
                                   f"the running inference ({busy:.1f} s so far)")
        finished = node.close()
        if not finished:
            node.get_logger().warning(f"exiting with an inference still running after "
                                      f"{SHUTDOWN_BUDGET_S:g} s")
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    if not finished:  # a worker inside torch: do not wait for it at interpreter exit
        _exit_now()


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
