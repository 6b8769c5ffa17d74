"""``sam2_node``: a managed (lifecycle) ROS 2 node that tracks prompted objects in a camera stream.

configure builds the engine (a bad parameter or checkpoint fails the transition with the reason
in the log), activate subscribes to the camera, deactivate unsubscribes, cleanup releases the
model. Inference runs on one worker thread that always takes the newest frame; the executor
thread only receives messages and answers services (a prompt that waits for the frame it was
made on awaits it, so frames keep being received meanwhile). Topics, services and parameters:
SPEC 6.

    python -m sam2_ros.node --ros-args -p autostart:=true -r image:=/camera/image_raw
"""
from __future__ import annotations

import re
import threading
import time
import traceback
from dataclasses import replace
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, RegionOfInterest
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from sam2_ros_interfaces.msg import ObjectTrack, Tracks
from sam2_ros_interfaces.srv import AddPrompt, RemoveObject

from engine.tracker import ObjectResult

from .backend import BackendError, build_engine
from .config import LIVE_PARAMETERS, PARAMETERS, NodeConfig, check_parameter, coerce, describe
from .conversions import InputError, compressed_to_rgb, fill_image, image_to_rgb, label_image
from .depth_input import DepthInput
from .depth_output import depth_status, locate_tracks, markers, point_cloud, set_unknown
from .diagnostics import FrameStats, diagnostic_array
from engine.overlay import render_overlay
from .session import Frame, TrackingSession, stamp_text
from .worker import LatestFrameWorker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def _qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        return QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def _reason(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


class Sam2Node(LifecycleNode):
    """ROS glue around ``TrackingSession``: messages in, engine calls, messages out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sam2_node", **kwargs)
        for name, f in PARAMETERS.items():
            # Dynamic typing: a wrong type reaches the check below and is refused with a reason.
            self.declare_parameter(name, f.default, ParameterDescriptor(
                description=describe(name), dynamic_typing=True))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.cfg: NodeConfig | None = None
        self._session: TrackingSession | None = None
        self._worker: LatestFrameWorker | None = None
        self._banner = ""  # on ~/overlay: set at configure (random weights say so)
        self._sub = self._diag_timer = None
        self._pubs: dict[str, Any] = {}
        self._srvs: list[Any] = []
        self._seq = 0
        self._waiters: list[tuple[int, Future]] = []  # prompts waiting for their frame
        self._waiters_lock = threading.Lock()
        # A waiting prompt holds the default callback group: frames and the waits' timers
        # need groups of their own to run meanwhile (on the same executor thread).
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._wait_group = ReentrantCallbackGroup()
        self._stats = FrameStats()
        self._warned: dict[str, float] = {}
        self._depth: DepthInput | None = None  # with depth_enabled
        self._depth_subs: list[Any] = []

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg = NodeConfig.from_values({n: self.get_parameter(n).value for n in PARAMETERS})
            engine = build_engine(cfg)
        except (ValueError, BackendError) as err:
            self.get_logger().error(f"configure failed: {err}")
            return FAILURE
        except Exception as err:  # an engine bug: say so, stay alive
            self.get_logger().error(f"configure failed: {err!r}\n{traceback.format_exc()}")
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
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        self._srvs = [
            self.create_service(AddPrompt, "~/add_prompt", self._on_add_prompt),
            self.create_service(RemoveObject, "~/remove_object", self._on_remove_object),
            self.create_service(Trigger, "~/reset", self._on_reset),
        ]
        self._configure_depth(cfg, out)
        decode = compressed_to_rgb if cfg.input_transport == "compressed" else image_to_rgb
        self._stats = FrameStats()
        self._session = TrackingSession(engine, cfg, decode, self._publish, self._stats,
                                        self._warn_input)
        self._worker = LatestFrameWorker(self._session.process, self._on_worker_error).start()
        log.info(f"configured: {engine.backend}, max {cfg.max_objects} objects, "
                 f"prompt window {cfg.prompt_window_s:g} s, model warmed up in "
                 f"{engine.warmup_s:.2f} s")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        qos = _qos(cfg.input_qos, cfg.qos_depth)
        if cfg.input_transport == "compressed":
            self._sub = self.create_subscription(CompressedImage, "image/compressed",
                                                 self._on_image, qos,
                                                 callback_group=self._input_group)
        else:
            self._sub = self.create_subscription(Image, "image", self._on_image, qos,
                                                 callback_group=self._input_group)
        self._diag_timer = self.create_timer(cfg.diagnostics_period_s, self._on_diagnostics)
        self._subscribe_depth(qos)
        self.get_logger().info(f"active: listening on {self._sub.topic_name} ({cfg.input_qos})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def _unsubscribe(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._sub = self._diag_timer = None
        for sub in self._depth_subs:
            self.destroy_subscription(sub)
        self._depth_subs = []
        if self._worker is not None:
            self._worker.clear()

    def release(self) -> None:
        """Unsubscribe, stop the worker, drop the model, publishers and services."""
        self._unsubscribe()
        if self._worker is not None:
            self._worker.stop()
        for srv in self._srvs:
            self.destroy_service(srv)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._srvs, self._pubs = [], {}
        self._worker = self._session = None

    # -------------------------------------------------------------------- input
    def _on_image(self, msg: Image | CompressedImage) -> None:
        session, worker = self._session, self._worker
        if session is None or worker is None:  # released meanwhile
            return
        self._seq += 1
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        frame = Frame(self._seq, stamp_ns, msg, received=time.monotonic())
        self._stats.on_received()
        session.window.push(frame)
        worker.offer(frame)
        self._wake_waiters(stamp_ns)

    def _warn_input(self, text: str) -> None:
        """Log a rejected input at most every 5 s per kind of problem (one bad camera must not
        flood the log; the count is in /diagnostics)."""
        kind = re.split(r"[:(]", text.split("rejected: ", 1)[-1])[0]
        now = time.monotonic()
        if now - self._warned.get(kind, -1e9) >= 5.0:
            self._warned[kind] = now
            self.get_logger().warning(text)

    def _on_worker_error(self, err: BaseException) -> None:
        self.get_logger().error(f"tracking failed on a frame: {err!r}\n"
                                f"{''.join(traceback.format_exception(err))}",
                                throttle_duration_sec=5.0)

    # ------------------------------------------------------------------- output
    def _publish(self, frame: Frame, results: list[ObjectResult], labels: dict[int, int]) -> None:
        """Runs on the worker thread: masks, tracks and (when subscribed) overlay."""
        cfg, header = self.cfg, frame.msg.header
        h, w = frame.rgb.shape[:2]
        results = [r for r in results if r.obj_id in labels]
        masks = {r.obj_id: r.mask for r in results}
        dtype = "uint8" if cfg.label_encoding == "mono8" else "uint16"
        self._pubs["masks"].publish(fill_image(
            Image(header=header), label_image(masks, labels, (h, w), dtype), cfg.label_encoding))
        tracks = [self._track_msg(r, labels[r.obj_id]) for r in results]
        depth_header = self._locate(frame, results, tracks) if self._depth else None
        self._pubs["tracks"].publish(Tracks(header=header, objects=tracks,
                                            depth_header=depth_header or Header()))
        overlay = self._pubs["overlay"]
        if cfg.publish_overlay and overlay.get_subscription_count() > 0:
            shown = [(r.obj_id, labels[r.obj_id], r.mask, r.box)
                     for r, t in zip(results, tracks) if t.visible]
            picture = render_overlay(frame.rgb, shown, cfg.overlay_alpha, self._banner)
            overlay.publish(fill_image(Image(header=header), picture, "rgb8"))

    def _track_msg(self, r: ObjectResult, label: int) -> ObjectTrack:
        visible = r.presence >= self.cfg.presence_threshold and r.box is not None
        msg = ObjectTrack(object_id=r.obj_id, label=label, presence=float(r.presence),
                          predicted_iou=float(r.iou), visible=visible)
        set_unknown(msg)  # 3D fields: filled by _locate when depth is paired
        if r.box is not None:  # inclusive pixel bounds
            x0, y0, x1, y1 = r.box
            msg.bbox = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1,
                                        height=y1 - y0 + 1)
        return msg

    def _on_diagnostics(self) -> None:
        s, cfg = self._session, self.cfg
        if s is None:
            return
        extra = {"objects": str(len(s.labels)), "backend": s.engine.backend,
                 "model": cfg.model, "image_size": str(cfg.model_image_size),
                 "weights": s.engine.weights, "input": self._sub.topic_name if self._sub else ""}
        diag = diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: tracking",
            self.get_fully_qualified_name(), self._stats.snapshot(), extra)
        if self._depth is not None:
            diag.status.append(depth_status(f"{self.get_name()}: depth",
                                            self.get_fully_qualified_name(), self._depth))
        self._pubs["diagnostics"].publish(diag)

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
                             "its objects have no 3D position")
            return None
        if paired is None:
            self._warn_input("depth missing: no depth image received yet on depth/image "
                             "(remap it to the camera's aligned depth); objects have no 3D "
                             "position")
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
    def _call_worker(self, fn) -> tuple[Any, str | None]:
        """Run ``fn`` on the worker; (result, None) or (None, the reason it failed)."""
        if self._worker is None:
            return None, "node is not configured"
        try:
            return self._worker.run_job(fn, self.cfg.service_timeout_s), None
        except (ValueError, KeyError, TimeoutError, RuntimeError) as err:
            return None, _reason(err)
        except Exception as err:  # an engine bug: answer, log, keep running
            self.get_logger().error(f"request failed: {err!r}\n{traceback.format_exc()}")
            return None, f"internal error: {err!r}"

    def _frame_arrival(self, stamp_ns: int) -> Future | None:
        """A future done once a frame stamped ``stamp_ns`` or later has arrived (True) or
        ``prompt_wait_s`` has passed (False); None when no wait is needed."""
        session = self._session
        newest = session.window.newest() if session is not None else None
        if not stamp_ns or session is None or (newest is not None and
                                               newest.stamp_ns >= stamp_ns):
            return None
        future = Future()
        with self._waiters_lock:
            self._waiters.append((stamp_ns, future))
        timer = None

        def expire() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            with self._waiters_lock:
                self._waiters = [(s, f) for s, f in self._waiters if f is not future]
            if not future.done():
                future.set_result(False)
        timer = self.create_timer(self.cfg.prompt_wait_s, expire,
                                  callback_group=self._wait_group)
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

    async def _on_add_prompt(self, req: AddPrompt.Request, resp: AddPrompt.Response):
        stamp_ns = req.frame_stamp.sec * 10**9 + req.frame_stamp.nanosec
        arrival = self._frame_arrival(stamp_ns)
        if arrival is not None:
            # The request overtook the frame it was made on: the executor keeps receiving
            # frames while this callback waits for that one (or prompt_wait_s runs out).
            await arrival
        session = self._session
        out, err = self._call_worker(lambda: session.prompt(req.object_id, req, stamp_ns))
        resp.object_id = req.object_id
        if err is not None:
            resp.success, resp.message = False, f"prompt refused: {err}"
            self.get_logger().warning(resp.message)
            return resp
        resp.success, resp.message = True, out.message
        resp.applied_stamp = Time(sec=out.applied_stamp_ns // 10**9,
                                  nanosec=out.applied_stamp_ns % 10**9)
        resp.track = self._track_msg(out.result, out.label)
        self.get_logger().info(out.message)
        return resp

    def _on_remove_object(self, req: RemoveObject.Request, resp: RemoveObject.Response):
        session = self._session
        text, err = self._call_worker(lambda: session.remove(req.object_id))
        resp.success, resp.message = err is None, text if err is None else f"remove refused: {err}"
        return resp

    def _on_reset(self, req: Trigger.Request, resp: Trigger.Response):
        session = self._session
        text, err = self._call_worker(lambda: session.reset())
        resp.success, resp.message = err is None, text if err is None else f"reset failed: {err}"
        return resp

    # --------------------------------------------------------------- parameters
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        problems = [p for prm in params if (p := check_parameter(prm.name, prm.value))]
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        if self.cfg is not None:
            live = {p.name: coerce(p.name, p.value) for p in params if p.name in LIVE_PARAMETERS}
            self.cfg = replace(self.cfg, **live)
            later = [p.name for p in params if p.name not in LIVE_PARAMETERS]
            if later:
                self.get_logger().info(f"{', '.join(later)} take effect at the next configure")
        return SetParametersResult(successful=True)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = Sam2Node()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
