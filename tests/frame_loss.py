"""How many best-effort frames of a given size reach another process with a Fast DDS profile
(a script, not a unit test): a publisher process sends frames at a steady rate, this process
counts what arrives and what the middleware reports lost (the event sam2_node counts as
frames_lost_in_transport).

    .venv/bin/python tests/frame_loss.py --profile config/fastdds_loopback.xml
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ros_helpers import ROOT, ros_env, unique_domain_id  # noqa: E402

SIZES = [(1024, 1024), (1920, 1080), (2560, 1440), (3840, 2160), (4096, 3072)]

PUBLISHER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    w, h, n, rate = map(float, sys.argv[1:5])
    rclpy.init()
    node = rclpy.create_node("frame_loss_camera")
    pub = node.create_publisher(Image, "frame_loss", qos_profile_sensor_data)
    end = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)
    msg = Image(height=int(h), width=int(w), encoding="rgb8", step=int(w) * 3)
    msg.data = np.zeros(int(h * w * 3), np.uint8).tobytes()
    start = time.monotonic()
    for i in range(int(n)):
        msg.header.stamp.sec = i + 1
        pub.publish(msg)
        while time.monotonic() < start + (i + 1) / rate:
            time.sleep(0.001)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
""")


def measure(profile: Path, w: int, h: int, frames: int, rate: float) -> dict:
    import os

    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    domain = unique_domain_id()
    env = ros_env(domain)
    env.update(FASTRTPS_DEFAULT_PROFILES_FILE=str(profile),
               FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "FAST"))})
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("frame_loss_probe", context=ctx)
    got, lost = set(), [0]

    def on_lost(info):
        lost[0] += info.total_count_change
    sub = node.create_subscription(
        Image, "frame_loss", lambda m: got.add(m.header.stamp.sec), qos_profile_sensor_data,
        event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(w), str(h), str(frames),
                            str(rate)], env=env, cwd=ROOT)
    try:
        while pub.poll() is None:
            _spin(node, ctx)
        for _ in range(50):
            _spin(node, ctx)
    finally:
        pub.wait(30)
        _executors.pop(id(ctx)).shutdown()
        node.destroy_subscription(sub)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return {"size": f"{w}x{h}x3", "mib": w * h * 3 / 2**20, "sent": frames,
            "received": len(got), "reported_lost": lost[0]}


_executors: dict = {}


def _spin(node, ctx) -> None:
    from rclpy.executors import SingleThreadedExecutor

    ex = _executors.get(id(ctx))
    if ex is None:
        ex = _executors[id(ctx)] = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
    ex.spin_once(timeout_sec=0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", type=Path, default=ROOT / "config" / "fastdds_loopback.xml")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--rate", type=float, default=30.0)
    args = ap.parse_args()
    print(f"profile {args.profile}, {args.frames} frames at {args.rate:g} Hz, best effort")
    print("| frame | MiB | sent | received | reported lost |")
    print("|---|---|---|---|---|")
    for w, h in SIZES:
        r = measure(args.profile, w, h, args.frames, args.rate)
        print(f"| {r['size']} | {r['mib']:.1f} | {r['sent']} | {r['received']} | "
              f"{r['reported_lost']} |", flush=True)


if __name__ == "__main__":
    main()
