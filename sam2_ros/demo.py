"""The main job, end to end through ROS 2 with no ROS install and no GPU (``make demo``).

Two processes on one loopback-only DDS domain:

* ``sam2_node`` (``python -m sam2_ros.node``, started here as a separate process with
  config/sam2.yaml and ``autostart``), on its default model: the bundled ``sam2_ros_compact``,
  trained by this project on the same synthetic world (engine/weights/TRAINING.md);
* this process: a camera publishing sensor_msgs/Image (a generated scene from
  ``engine.tools.synthetic``, with ground truth, or a video file), a user who clicks each object once
  through ``~/add_prompt`` (stamped with the frame the click was made on) and refines one later,
  and a recorder of ``~/overlay``, ``~/tracks``, ``~/masks`` and ``/diagnostics``.

On the generated scene the camera also publishes an aligned depth image (16UC1, with a few
holes and edge bleed) and its CameraInfo, the node runs with ``depth_enabled``, and each
object's 3D position in ``~/tracks`` is compared with the scene's exact geometry.

It writes the overlay video and prints rate, latency, drops and, on the generated scene, the
mask IoU and the 3D centroid error against ground truth. It ends by itself after ``--frames``
frames.

    python -m sam2_ros.demo --frames 300 --fps 15
    python -m sam2_ros.demo --checkpoint checkpoints/sam2.1_hiera_tiny.pt --image-size 1024
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from engine.tools.synthetic import Scene, click_inside

ROOT = Path(__file__).resolve().parents[1]
CAMERA_TOPIC = "/demo_camera/image_raw"
DEPTH_TOPIC = "/demo_camera/aligned_depth/image_raw"
DEPTH_INFO_TOPIC = "/demo_camera/aligned_depth/camera_info"
DEPTH_HOLES = 0.01  # fraction of depth pixels missing in the generated depth
NODE = "sam2_node"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int, default=300, help="camera frames to publish")
    p.add_argument("--fps", type=float, default=15.0, help="camera rate (Hz)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--objects", type=int, default=2, help="objects in the scene, all prompted")
    p.add_argument("--scene-seed", type=int, default=3)
    p.add_argument("--video", help="publish this video file instead of the generated scene")
    p.add_argument("--click", action="append", default=[], metavar="X,Y",
                   help="with --video: a click per object on the prompt frame")
    p.add_argument("--prompt-at", type=int, default=10, help="frame the user clicks on")
    p.add_argument("--compressed", action="store_true",
                   help="publish JPEG sensor_msgs/CompressedImage (input_transport compressed)")
    p.add_argument("--model", default="sam2_ros_compact",
                   help="the bundled compact model, or one of Meta's (e.g. sam2.1_hiera_tiny)")
    p.add_argument("--checkpoint", default="",
                   help="a .pt in Meta's format; default: the model's bundled weights (random "
                        "weights for Meta's models)")
    p.add_argument("--image-size", type=int, default=0,
                   help="model input side; 0: the model's own (192 compact, 1024 Meta's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch")
    p.add_argument("--threads", type=int, default=None,
                   help="the node's num_threads (CPU threads for inference); default: "
                        "config/sam2.yaml's")
    p.add_argument("--no-depth", dest="depth", action="store_false",
                   help="publish no depth image (the generated scene has one; a video has none)")
    p.add_argument("--out", default="artifacts/sam2_demo_overlay.mp4", help="overlay video")
    p.add_argument("--timeout", type=float, default=120.0, help="node start-up limit (s)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- sources
def demo_scene(args) -> Scene:
    return Scene(args.width, args.height, args.objects, seed=args.scene_seed,
                 object_size=(max(args.height // 6, 12), max(args.height // 3, 24)))


def video_source(args):
    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {args.video}")
    for _ in range(args.frames):
        ok, bgr = cap.read()
        if not ok:  # loop the file
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = cap.read()
        if not ok:
            return
        yield cv2.cvtColor(cv2.resize(bgr, (args.width, args.height)), cv2.COLOR_BGR2RGB), None


# -------------------------------------------------------------------------- the node
def ros_environment() -> dict[str, str]:
    """Loopback-only DDS on a domain of its own, large-image shared memory."""
    profile = str(ROOT / "config" / "fastdds_loopback.xml")
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(1 + os.getpid() % 100)),
           "FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile,
           "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0"}
    os.environ.update(env)
    return dict(os.environ)


def start_node(args) -> subprocess.Popen:
    params = {"autostart": "true", "model": args.model, "image_size": args.image_size,
              "checkpoint": f'"{args.checkpoint}"', "device": args.device,
              "backend": args.backend,
              "input_transport": "compressed" if args.compressed else "raw",
              "depth_enabled": str(args.depth).lower()}
    if args.threads is not None:
        params["num_threads"] = args.threads
    cmd = [sys.executable, "-m", "sam2_ros.node", "--ros-args",
           "--params-file", str(ROOT / "config" / "sam2.yaml"), "-r", f"image:={CAMERA_TOPIC}",
           "-r", f"image/compressed:={CAMERA_TOPIC}/compressed",
           "-r", f"depth/image:={DEPTH_TOPIC}", "-r", f"depth/camera_info:={DEPTH_INFO_TOPIC}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ros_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def relay() -> None:  # the node's log, prefixed
        for line in proc.stdout:
            print(f"  [node] {line.rstrip()}", flush=True)
    threading.Thread(target=relay, daemon=True).start()
    return proc


# -------------------------------------------------------------- camera, user, recorder
class DemoClient:
    """Camera + user + recorder, as one rclpy node spun on this process's main thread."""

    def __init__(self, args, source, scene: Scene | None = None) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import GetState
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from sam2_ros_interfaces.msg import Tracks
        from sam2_ros_interfaces.srv import AddPrompt

        self.args, self.source = args, source
        self.scene = scene if args.depth else None  # publishes depth when set
        self.node = rclpy.create_node("demo_camera")
        n = self.node
        img_type = CompressedImage if args.compressed else Image
        topic = CAMERA_TOPIC + ("/compressed" if args.compressed else "")
        self.camera = n.create_publisher(img_type, topic, qos_profile_sensor_data)
        self.depth_pub = n.create_publisher(Image, DEPTH_TOPIC, qos_profile_sensor_data)
        self.info_pub = n.create_publisher(CameraInfo, DEPTH_INFO_TOPIC, qos_profile_sensor_data)
        self.subs = [
            n.create_subscription(Image, f"/{NODE}/overlay", self._on_overlay, 10),
            n.create_subscription(Image, f"/{NODE}/masks", self._on_masks, 10),
            n.create_subscription(Tracks, f"/{NODE}/tracks", self._on_tracks, 10),
            n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)]
        self.prompt_cli = n.create_client(AddPrompt, f"/{NODE}/add_prompt")
        self.state_cli = n.create_client(GetState, f"/{NODE}/get_state")
        self.sent: dict[int, float] = {}  # stamp -> publish time (s)
        self.truth: dict[int, dict] = {}  # stamp -> ground-truth masks (bounded)
        self._truth_order: deque[int] = deque()
        self.latency_ms: list[float] = []
        self.track_times: list[float] = []
        self.overlays: list[tuple[np.ndarray, float]] = []
        self.ious: dict[int, list[float]] = {}
        self.labels: dict[int, int] = {}  # object id -> label, from the prompt answers
        self.prompts: list[str] = []
        self.prompts_ok: list[bool] = []
        self.diag: dict[str, str] = {}
        self.depth_diag: dict[str, str] = {}
        self.truth3d: dict[int, dict] = {}  # stamp -> true 3D centroids (bounded like truth)
        self.errors3d: dict[int, list[float]] = {}  # object id -> |centroid - truth| (m)
        self.errors3d_true_masks: list[float] = []  # the same on the true masks: depth alone
        self.positions = 0  # objects with a 3D position in ~/tracks
        self.published = 0
        self.done_at: float | None = None

    # ---- camera and user
    def start_camera(self) -> None:
        self.frames = iter(self.source)
        self.timer = self.node.create_timer(1.0 / self.args.fps, self._tick)

    def _tick(self) -> None:
        item = next(self.frames, None)
        if item is None:
            self.node.destroy_timer(self.timer)
            self.done_at = time.monotonic()
            return
        rgb, truth = item
        stamp = time.time_ns()
        if self.scene is not None and truth is not None:
            self._publish_depth(truth, stamp)
        self.camera.publish(self._image_msg(rgb, stamp))
        self.sent[stamp] = time.monotonic()
        if truth is not None:
            self.truth[stamp] = truth
            self._truth_order.append(stamp)
            if len(self._truth_order) > 200:
                old = self._truth_order.popleft()
                self.truth.pop(old, None)
                self.truth3d.pop(old, None)
        if self.published == self.args.prompt_at:
            self._prompt_all(rgb, truth, stamp)
        if self.published == self.args.prompt_at + int(2 * self.args.fps) and truth:
            self._click(1, truth.get(1), stamp, "refinement click")
        self.published += 1

    def _publish_depth(self, truth: dict, stamp: int) -> None:
        """The scene's aligned depth (16UC1 mm, a few holes, edge bleed) and CameraInfo,
        stamped like the colour frame; the true 3D centroids kept for the report."""
        from sensor_msgs.msg import CameraInfo, Image

        from engine.depth import locate_objects
        from sam2_ros.conversions import fill_image

        scene, k = self.scene, self.scene.intrinsics
        depth_mm = np.round(scene.depth(truth, DEPTH_HOLES, bleed=True) * 1000).astype(np.uint16)
        header = Image().header
        header.frame_id = "demo_camera"  # aligned: the colour camera's frame
        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
        self.info_pub.publish(CameraInfo(
            header=header, width=scene.width, height=scene.height, distortion_model="plumb_bob",
            d=[0.0] * 5, k=[k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
            r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p=[k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.depth_pub.publish(fill_image(Image(header=header), depth_mm, "16UC1"))
        self.truth3d[stamp] = scene.true_positions(truth)
        on_true_masks = locate_objects(depth_mm, 0.001, k, truth)
        self.errors3d_true_masks += [float(np.linalg.norm(on_true_masks[i].centroid - c))
                                     for i, c in self.truth3d[stamp].items()
                                     if on_true_masks[i].has_position]

    def _image_msg(self, rgb: np.ndarray, stamp: int):
        from sensor_msgs.msg import CompressedImage, Image

        from sam2_ros.conversions import fill_image

        if self.args.compressed:
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            msg = CompressedImage(format="jpeg", data=jpg.tobytes())
        else:
            msg = fill_image(Image(), rgb, "rgb8")
        msg.header.frame_id = "demo_camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        return msg

    def _prompt_all(self, rgb, truth, stamp: int) -> None:
        if truth is None:  # a video: the --click list
            for i, xy in enumerate(self.args.click, start=1):
                x, y = (float(v) for v in xy.split(","))
                self._send(i, [(x, y)], stamp, "click")
            return
        for obj_id, mask in sorted(truth.items()):
            self._click(obj_id, mask, stamp, "click")

    def _click(self, obj_id: int, mask, stamp: int, what: str) -> None:
        xy = click_inside(mask) if mask is not None else None
        if xy is not None:
            self._send(obj_id, [xy], stamp, what)

    def _send(self, obj_id: int, points, stamp: int, what: str) -> None:
        from sam2_ros_interfaces.srv import AddPrompt

        req = AddPrompt.Request(object_id=obj_id, points_x=[float(p[0]) for p in points],
                                points_y=[float(p[1]) for p in points], labels=[1] * len(points))
        req.frame_stamp.sec, req.frame_stamp.nanosec = divmod(stamp, 10**9)
        t0 = time.monotonic()
        label = f"{what} on object {obj_id} at {points[0][0]:.0f},{points[0][1]:.0f}"
        self.prompt_cli.call_async(req).add_done_callback(
            lambda f: self._answered(f.result(), t0, label))

    def _answered(self, resp, t0: float, what: str) -> None:
        if resp.success:
            self.labels[resp.object_id] = resp.track.label
        self.prompts_ok.append(resp.success)
        status = "ok" if resp.success else "REFUSED"
        self.prompts.append(f"{what}: {status} in {time.monotonic() - t0:.2f} s: {resp.message}")
        print(f"[demo] {self.prompts[-1]}", flush=True)

    # ---- recorder
    def _on_tracks(self, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if stamp in self.sent:
            self.latency_ms.append((time.monotonic() - self.sent[stamp]) * 1e3)
            self.track_times.append(time.monotonic())
        truth = self.truth3d.get(stamp, {})
        for obj in msg.objects:
            if obj.has_position:
                self.positions += 1
                if obj.object_id in truth:
                    p = np.array([obj.position.x, obj.position.y, obj.position.z])
                    self.errors3d.setdefault(obj.object_id, []).append(
                        float(np.linalg.norm(p - truth[obj.object_id])))

    def _on_overlay(self, msg) -> None:
        img = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3).copy()
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        lat = (time.monotonic() - self.sent[stamp]) * 1e3 if stamp in self.sent else float("nan")
        self.overlays.append((img, lat))

    def _on_masks(self, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        truth = self.truth.get(stamp)
        if truth is None or not self.labels:
            return
        dtype = np.uint8 if msg.encoding == "mono8" else np.uint16
        labels = np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)
        for obj_id, label in self.labels.items():
            gt = truth.get(obj_id)
            if gt is None:
                continue
            pred = labels == label
            union = np.logical_or(pred, gt).sum()
            if union:
                self.ious.setdefault(obj_id, []).append(np.logical_and(pred, gt).sum() / union)

    def _on_diag(self, msg) -> None:
        from .diagnostics import parse_status

        for status in msg.status:
            if status.name == f"{NODE}: depth":
                self.depth_diag = parse_status(status)
            elif status.name.startswith(NODE):
                self.diag = parse_status(status)

    def close(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_client(self.prompt_cli)
        self.node.destroy_client(self.state_cli)
        self.node.destroy_publisher(self.camera)
        self.node.destroy_publisher(self.depth_pub)
        self.node.destroy_publisher(self.info_pub)
        self.node.destroy_node()


def wait_active(client: DemoClient, executor, proc, timeout: float) -> bool:
    from lifecycle_msgs.srv import GetState

    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if client.state_cli.service_is_ready():
            fut = client.state_cli.call_async(GetState.Request())
            executor.spin_until_future_complete(fut, timeout_sec=5.0)
            if fut.done() and fut.result().current_state.label == "active" \
                    and client.camera.get_subscription_count() > 0:
                return True
        executor.spin_once(timeout_sec=0.2)
    return False


def write_video(path: str, overlays: list, fps: float) -> None:
    if not overlays:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    h, w = overlays[0][0].shape[:2]
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), max(fps, 1.0), (w, h))
    for img, lat in overlays:
        if img.shape[:2] != (h, w):
            continue
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.putText(bgr, f"latency {lat:.0f} ms", (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)
        out.write(bgr)
    out.release()


def random_weights(args) -> bool:
    from engine.checkpoint import bundled_checkpoint

    return not args.checkpoint and bundled_checkpoint(args.model) is None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(args, c: DemoClient, seconds: float) -> None:
    rate = (len(c.track_times) - 1) / (c.track_times[-1] - c.track_times[0]) \
        if len(c.track_times) > 2 else 0.0
    d = c.diag
    random = random_weights(args)
    weights = "RANDOM weights: masks are not meaningful; pass --checkpoint for Meta's weights" \
        if random else d.get("weights", args.checkpoint or "bundled weights")
    print(f"\n=== sam2_ros demo ({seconds:.0f} s) ===")
    print(f"model        {args.model} at image_size {d.get('image_size', args.image_size)} on "
          f"{args.device}; {weights}")
    print(f"camera       {c.published} frames {args.width}x{args.height} at {args.fps:g} Hz "
          f"({'JPEG' if args.compressed else 'raw rgb8'}), "
          f"{'video ' + args.video if args.video else 'generated scene'}")
    received = d.get("frames_received", "?")
    lost = f" ({c.published - int(received)} overwritten in DDS before the node read them)" \
        if received.isdigit() and int(received) < c.published else ""
    print(f"node         received {received}{lost}, tracked {d.get('frames_processed', '?')}, "
          f"skipped {d.get('frames_dropped', '?')} (it always takes the newest frame), "
          f"rejected {d.get('frames_rejected', '?')}")
    print(f"output rate  {rate:.1f} Hz of ~/tracks ({len(c.track_times)} frames) for a "
          f"{args.fps:g} Hz camera")
    print(f"latency      camera publish -> ~/tracks received: p50 "
          f"{percentile(c.latency_ms, 50):.0f} ms, p99 {percentile(c.latency_ms, 99):.0f} ms; "
          f"in the node (receive -> publish): p50 {d.get('latency_p50_ms', '?')} ms, p99 "
          f"{d.get('latency_p99_ms', '?')} ms")
    for line in c.prompts:
        print(f"prompt       {line}")
    for obj_id, ious in sorted(c.ious.items()):
        note = " (random weights: not meaningful)" if random else ""
        print(f"IoU vs truth object {obj_id}: mean {np.mean(ious):.2f} over {len(ious)} "
              f"frames{note}")
    report_3d(c, random)
    print(f"overlay      {args.out} ({len(c.overlays)} frames)")


def report_3d(c: DemoClient, random: bool) -> None:
    """The 3D centroid error of ~/tracks against the scene's geometry (mm)."""
    if c.scene is None:
        return
    d = c.depth_diag
    print(f"depth        {d.get('depth_images_received', '?')} aligned depth images (16UC1, "
          f"{DEPTH_HOLES:.0%} holes, edge bleed) + CameraInfo; frames with depth "
          f"{d.get('frames_with_depth', '?')}, refused {d.get('frames_depth_refused', '?')}, "
          f"without {d.get('frames_without_depth', '?')}; {c.positions} object positions")
    note = " (random weights: not meaningful)" if random else ""
    for obj_id, errs in sorted(c.errors3d.items()):
        mm = np.array(errs) * 1e3
        print(f"3D error vs truth object {obj_id}: median {np.median(mm):.1f} mm, p90 "
              f"{np.percentile(mm, 90):.1f} mm over {len(mm)} frames{note}")
    if c.errors3d_true_masks:
        mm = np.array(c.errors3d_true_masks) * 1e3
        far = int((mm > 10).sum())
        why = " (objects almost hidden: the few pixels left are edge bleed)" if far else ""
        print(f"3D error on the true masks (the depth step alone): median {np.median(mm):.2f} "
              f"mm, p90 {np.percentile(mm, 90):.2f} mm over {len(mm)} object-frames; {far} "
              f"over 1 cm{why}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scene = None if args.video else demo_scene(args)
    source = video_source(args) if args.video else scene.frames(args.frames)
    env = ros_environment()
    print(f"[demo] starting {NODE} (separate process; domain {env['ROS_DOMAIN_ID']}, loopback "
          f"only); camera on {CAMERA_TOPIC}", flush=True)
    proc = start_node(args)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    client = DemoClient(args, source, scene)
    executor = SingleThreadedExecutor()
    executor.add_node(client.node)
    t0 = time.monotonic()
    try:
        if not wait_active(client, executor, proc, args.timeout):
            print(f"[demo] {NODE} did not become active (exit code {proc.poll()}); see its log "
                  "above", flush=True)
            return 1
        print(f"[demo] {NODE} active after {time.monotonic() - t0:.1f} s; streaming "
              f"{args.frames} frames at {args.fps:g} Hz", flush=True)
        t0 = time.monotonic()
        client.start_camera()
        while client.done_at is None or time.monotonic() - client.done_at < 3.0:
            executor.spin_once(timeout_sec=0.05)
            if proc.poll() is not None:
                print(f"[demo] {NODE} exited with code {proc.returncode}", flush=True)
                return 1
        rate = len(client.overlays) / max(client.done_at - t0, 1e-3)
        write_video(args.out, client.overlays, rate)
        report(args, client, time.monotonic() - t0)
        located = client.scene is None or client.positions > 0  # depth given: 3D came back
        return 0 if (client.track_times and client.prompts_ok and all(client.prompts_ok)
                     and located) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
        executor.shutdown()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
