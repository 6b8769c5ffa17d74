"""Helpers for the ROS tests: run ``sam2_node`` as a real process on an isolated DDS domain and
talk to it from the test process over loopback.

    with NodeProcess(params) as node, RosHarness(node) as ros:
        ros.change_state("configure"); ...

Each node runs on its own DDS domain and in its own namespace, so test runs that happen at
the same time on one machine cannot answer each other's requests.

Every wait is bounded; every publisher, subscription and client is destroyed on exit.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_PROFILE = ROOT / "config" / "fastdds_loopback.xml"
NODE = "sam2_node"
_domains = itertools.count()


def unique_domain_id() -> int:
    """A DDS domain for one test module: distinct per process and per call (1..100)."""
    return 1 + (os.getpid() * 7 + next(_domains) * 13) % 100


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment that keeps DDS on this machine and on ``domain_id``."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTRTPS_DEFAULT_PROFILES_FILE=str(LOOPBACK_PROFILE),
               FASTDDS_DEFAULT_PROFILES_FILE=str(LOOPBACK_PROFILE), PYTHONUNBUFFERED="1",
               RCUTILS_COLORIZED_OUTPUT="0")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def ros_args(params: dict[str, Any], remaps: dict[str, str] | None = None) -> list[str]:
    args = ["--ros-args"]
    for k, v in params.items():
        v = str(v).lower() if isinstance(v, bool) else v
        args += ["-p", f"{k}:={v}"]
    for k, v in (remaps or {}).items():
        args += ["-r", f"{k}:={v}"]
    return args


def node_process_fixtures(params: dict[str, Any]):
    """Fixtures of a test module over one ``sam2_node`` process with ``params``: ``node`` (the
    process, for the module) and ``_node_alive`` (autouse: the node still runs after each
    test). Use as ``node, _node_alive = node_process_fixtures(PARAMS)``."""

    @pytest.fixture(scope="module")
    def node():
        with NodeProcess(params) as proc:
            yield proc

    @pytest.fixture(autouse=True)
    def _node_alive(node):
        yield
        assert node.alive(), "sam2_node died:\n" + node.log()[-3000:]

    return node, _node_alive


@contextmanager
def in_process_node(**params: Any):
    """A ``Sam2Node`` in this process (so a test can look inside it), not yet configured, with a
    ``probe`` node beside it on one executor, on a DDS domain of its own; yields
    ``(node, probe, executor)``. Parameters as keyword arguments."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from sam2_ros.node import Sam2Node

    domain = unique_domain_id()
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in ros_env(domain).items() if k.startswith(("ROS_", "FAST"))})
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    namespace = f"/t{uuid.uuid4().hex[:10]}"
    node = Sam2Node(context=ctx, namespace=namespace, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node("probe", namespace=namespace, context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(probe)
    try:
        yield node, probe, executor
    finally:
        node.close()
        executor.shutdown()
        probe.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        os.environ.clear()
        os.environ.update(saved)


class NodeProcess:
    """``python -m sam2_ros.node`` in a subprocess (or ``command``, given the node's ROS
    arguments, e.g. an installed ``sam2_node``); its output goes to a temp file."""

    def __init__(self, params: dict[str, Any], domain_id: int | None = None,
                 remaps: dict[str, str] | None = None,
                 command: Callable[[list[str]], list[str]] | None = None,
                 cwd: Path | None = None) -> None:
        self.domain_id = domain_id if domain_id is not None else unique_domain_id()
        self.namespace = f"/t{uuid.uuid4().hex[:10]}"
        self.name = f"{self.namespace}/{NODE}"
        remaps = {"__ns": self.namespace, **(remaps or {})}
        self._log = tempfile.NamedTemporaryFile("w+", prefix="sam2_node_", suffix=".log")
        args = ros_args(params, remaps)
        argv = command(args) if command else [sys.executable, "-m", "sam2_ros.node", *args]
        self.proc = subprocess.Popen(
            argv, cwd=cwd or ROOT, env=ros_env(self.domain_id), stdout=self._log,
            stderr=subprocess.STDOUT)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the node process in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()


class RosHarness:
    """The test's side: one rclpy context and node on the same domain as the node process."""

    def __init__(self, target: NodeProcess, image_topic: str = "image") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        os.environ.update({k: v for k, v in ros_env(target.domain_id).items()
                           if k.startswith(("ROS_", "FAST"))})
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=target.domain_id)
        self.node = rclpy.create_node("sam2_test", namespace=target.namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.target = target.name  # fully qualified name of the node under test
        self.image_pub = self.node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, f"{image_topic}/compressed", qos_profile_sensor_data)
        self.received: dict[str, list] = {k: [] for k in ("masks", "tracks", "overlay",
                                                         "diagnostics")}
        self._subs: list = []
        self._clients: dict[str, Any] = {}
        self._settled: set[int] = set()  # clients whose first call waited for discovery
        self.stamp = unique_stamp_base()

    # ---------------------------------------------------------------- topics
    def subscribe(self, *names: str) -> None:
        """Collect ~/masks, ~/tracks, ~/overlay and/or /diagnostics into ``self.received``."""
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from sam2_ros_interfaces.msg import Tracks

        types = {"masks": Image, "tracks": Tracks, "overlay": Image,
                 "diagnostics": DiagnosticArray}
        for name in names:
            topic = "/diagnostics" if name == "diagnostics" else f"{self.target}/{name}"
            self._subs.append(self.node.create_subscription(
                types[name], topic, lambda m, n=name: self.received[n].append(m), 10))

    def unsubscribe_all(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []

    def publish_image(self, rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8",
                      frame_id: str = "camera") -> None:
        from sensor_msgs.msg import Image

        from sam2_ros.conversions import fill_image

        msg = fill_image(Image(), rgb, encoding)
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.image_pub.publish(msg)

    def publish_raw(self, msg) -> None:
        (self.compressed_pub if hasattr(msg, "format") else self.image_pub).publish(msg)

    def diagnostics(self, fresh: bool = True, timeout: float = 5.0) -> dict[str, str]:
        """Key/values of the node's /diagnostics status: the next one to arrive (fresh) or the
        latest received. Needs subscribe("diagnostics")."""
        from sam2_ros.diagnostics import parse_status

        if fresh:
            self.received["diagnostics"].clear()

        def latest():
            for msg in reversed(self.received["diagnostics"]):
                for status in msg.status:
                    if status.hardware_id == self.target:
                        return parse_status(status)
            return None
        assert self.wait_for(lambda: latest() is not None, timeout), "no /diagnostics"
        return latest()

    def next_stamp(self) -> int:
        """A stamp never used before in this run (10 ms after the previous one)."""
        self.stamp += 10**7
        return self.stamp

    def find(self, topic: str, stamp: int):
        """The received message of ``topic`` with this header stamp, or None."""
        return next((m for m in self.received[topic] if stamp_of(m) == stamp), None)

    def track_frame(self, rgb: np.ndarray, frame_id: str = "camera", tries: int = 3,
                    timeout: float = 5.0):
        """Publish ``rgb`` under a fresh stamp until its ~/tracks arrive (best effort may drop
        a frame while discovery settles); returns (stamp, Tracks). Needs subscribe("tracks")."""
        for _ in range(tries):
            stamp = self.next_stamp()
            self.publish_image(rgb, stamp, frame_id=frame_id)
            if self.wait_for(lambda: self.find("tracks", stamp) is not None, timeout):
                return stamp, self.find("tracks", stamp)
        raise AssertionError(f"no ~/tracks for a frame published {tries} times")

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.wait_for(lambda: False, seconds)

    def wait_subscribers(self, timeout: float = 20.0) -> bool:
        """Until the node's image subscription is matched (so frames are not lost)."""
        pub = self.image_pub
        return self.wait_for(lambda: pub.get_subscription_count() > 0, timeout)

    # -------------------------------------------------------------- services
    def client(self, srv_type, name: str, depth: int | None = None):
        """A client of the node's service ``name``; ``depth``: the client's own queue depth
        (a client that sends a burst of requests needs room for the burst's answers)."""
        key = name if depth is None else f"{name}#{depth}"
        if key not in self._clients:
            kwargs = {}
            if depth is not None:
                from rclpy.qos import QoSProfile, ReliabilityPolicy
                kwargs["qos_profile"] = QoSProfile(depth=depth,
                                                   reliability=ReliabilityPolicy.RELIABLE)
            self._clients[key] = self.node.create_client(srv_type, f"{self.target}/{name}",
                                                         **kwargs)
        return self._clients[key]

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        """Call a service of the node; the response, or AssertionError on timeout."""
        cli = self.client(srv_type, name)
        if id(cli) not in self._settled:
            assert self.wait_for(cli.service_is_ready, min(timeout, 20.0)), f"{name} not available"
            # The client sees the service's request reader before the service has matched the
            # client's response reader; a request sent in between can have its answer dropped
            # (seen once under load). Give discovery a moment on a client's first call.
            self.spin_for(0.5)
            self._settled.add(id(cli))
        assert self.wait_for(cli.service_is_ready, min(timeout, 20.0)), f"{name} not available"
        future = cli.call_async(request)
        assert self.wait_for(future.done, timeout), f"{name} did not answer in {timeout} s"
        return future.result()

    def change_state(self, transition: str, timeout: float = 60.0) -> bool:
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request()
        req.transition.label = transition
        return self.call(ChangeState, "change_state", req, timeout).success

    def walk_to(self, target: str) -> None:
        """Walk the node's lifecycle to ``target`` (unconfigured, inactive or active) from
        wherever it is (a test of a shared node may run after any other)."""
        order = ("unconfigured", "inactive", "active")
        up = {"unconfigured": "configure", "inactive": "activate"}
        down = {"active": "deactivate", "inactive": "cleanup"}
        state = self.state()
        while state != target:
            step = up[state] if order.index(state) < order.index(target) else down[state]
            assert self.change_state(step), f"{step} from {state} failed"
            state = self.state()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, "get_state", GetState.Request()).current_state.label

    def set_parameters(self, **values):
        """Set parameters on the node; the list of SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParameters, "set_parameters", req).results

    def add_prompt(self, obj_id: int, points=(), labels=(), box=None, mask=None,
                   stamp_ns: int = 0, timeout: float = 60.0):
        from sam2_ros_interfaces.srv import AddPrompt

        req = AddPrompt.Request(object_id=obj_id)
        req.points_x = [float(p[0]) for p in points]
        req.points_y = [float(p[1]) for p in points]
        req.labels = [int(v) for v in labels]
        if box is not None:
            req.has_box, req.box = True, [float(v) for v in box]
        if mask is not None:
            from sam2_ros.conversions import fill_image
            fill_image(req.mask, (np.asarray(mask) > 0).astype(np.uint8) * 255, "mono8")
        req.frame_stamp.sec, req.frame_stamp.nanosec = divmod(stamp_ns, 10**9)
        return self.call(AddPrompt, "add_prompt", req, timeout)

    def remove_object(self, obj_id: int):
        from sam2_ros_interfaces.srv import RemoveObject

        return self.call(RemoveObject, "remove_object", RemoveObject.Request(object_id=obj_id))

    def reset(self):
        from std_srvs.srv import Trigger

        return self.call(Trigger, "reset", Trigger.Request())

    # ------------------------------------------------------------- lifetime
    def close(self) -> None:
        import rclpy

        self.unsubscribe_all()
        for cli in self._clients.values():
            self.node.destroy_client(cli)
        self.node.destroy_publisher(self.image_pub)
        self.node.destroy_publisher(self.compressed_pub)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "RosHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def unique_stamp_base() -> int:
    """A stamp (ns) no earlier run used, so stale messages can't match."""
    return (time.time_ns() // 10**9) * 10**9
