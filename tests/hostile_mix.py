"""A sustained hostile mix against sam2_node as a real process (a script, not a unit test):
good camera frames at a steady rate, interleaved with bad frames, bad prompts (huge, NaN,
outside, mismatched, bursts), good prompts, removals, resets and lifecycle transitions.

After every answer the node gives, the script waits for the ~/tracks of a frame sent after that
answer and checks its objects against what the answers said (an answer that matched the node's
state); with no answer pending, every ~/tracks message must hold exactly the objects the answers
left (none lost, none appearing). The node's RSS is sampled throughout.

    .venv/bin/python tests/hostile_mix.py --minutes 10 \
        --out engine/benchmarks/results/hostile_mix.md

Ctrl-C ends the run early and still reports.

Lives in tests/ because it drives ROS (engine/ never imports rclpy).
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ros_helpers import NodeProcess, RosHarness, stamp_of  # noqa: E402

W, H = 320, 240
RATE_HZ = 15.0


def bad_frames():
    """(case name, sensor_msgs/Image) of frames the node must reject and survive."""
    from sensor_msgs.msg import Image

    from sam2_ros.conversions import fill_image

    def img(**fields):
        msg = fill_image(Image(), np.zeros((H, W, 3), np.uint8), "rgb8")
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg
    rng = np.random.default_rng(1)
    return [
        ("bogus encoding", lambda: img(encoding=f"enc{rng.integers(1e9)}")),
        ("truncated", lambda: img(data=bytes(1000))),
        ("short step", lambda: img(step=7)),
        ("empty", lambda: img(height=0, width=0, step=0, data=b"")),
        ("oversized header", lambda: img(width=60000, height=60000, step=180000, data=b"")),
        ("odd yuv", lambda: fill_image(Image(), np.zeros((H, W - 1, 2), np.uint8), "yuv422")),
    ]


def bad_prompts():
    """(case name, request factory, text the refusal must contain)."""
    from sam2_ros.conversions import fill_image
    from sam2_ros_interfaces.srv import AddPrompt

    def req(**fields):
        return AddPrompt.Request(object_id=fields.pop("object_id", 1), **fields)

    def mask(shape):
        r = req()
        fill_image(r.mask, np.full(shape, 255, np.uint8), "mono8")
        return r
    rng = np.random.default_rng(2)
    many = rng.uniform(0, [W, H], (50_000, 2)).astype(np.float32)
    return [
        ("point outside", lambda: req(points_x=[W + 50.0], points_y=[5.0], labels=[1]),
         "outside the frame"),
        ("NaN click", lambda: req(points_x=[float("nan")], points_y=[5.0], labels=[1]),
         "finite"),
        ("mismatched", lambda: req(points_x=[1.0, 2.0], points_y=[1.0], labels=[1]),
         "differ in length"),
        ("50,000 clicks", lambda: req(points_x=many[:, 0].tolist(), points_y=many[:, 1].tolist(),
                                      labels=[1] * len(many)), "too many clicks"),
        ("mask size", lambda: mask((10, 10)), "mask prompt is 10x10"),
        ("inverted box", lambda: req(has_box=True, box=[60.0, 50.0, 10.0, 10.0]), "x0 <= x1"),
        ("empty", lambda: req(), "empty prompt"),
        ("unknown stamp future", lambda: _stamped(req(points_x=[5.0], points_y=[5.0],
                                                      labels=[1]), time.time_ns() + 3600 * 10**9),
         "has not arrived"),
    ]


def _stamped(request, stamp_ns: int):
    request.frame_stamp.sec, request.frame_stamp.nanosec = divmod(stamp_ns, 10**9)
    return request


class Mix:
    def __init__(self, ros: RosHarness, node: NodeProcess, seed: int) -> None:
        from engine.tools.synthetic import Scene

        self.ros, self.node = ros, node
        self.rng = np.random.default_rng(seed)
        self.frames = list(Scene(W, H, 3, seed=seed, object_size=(40, 60)).frames(90))
        self.i = 0
        self.expected: set[int] = set()
        self.active = True
        self.cases: collections.Counter = collections.Counter()
        self.answers = self.matched = 0
        self.mismatches: list[str] = []
        self.tracks_checked = self.tracks_wrong = 0
        self.last_pub = 0.0
        self.stamp = ros.next_stamp()
        self.checked_upto = 0  # ~/tracks index already checked
        self.pending = False  # a request or transition in flight: the state may change
        self.valid_from = self.stamp  # ~/tracks of frames stamped after this must match
        self.reconfigure = 0.3  # share of the lifecycle cases that clean up and configure

    # ------------------------------------------------------------------ frames
    def tick(self) -> None:
        """Publish the next good frame when due; spin; check the ~/tracks that came."""
        now = time.monotonic()
        if self.active and now - self.last_pub >= 1.0 / RATE_HZ:
            self.last_pub = now
            self.stamp += 10**9 // int(RATE_HZ)
            self.ros.publish_image(self.frames[self.i % len(self.frames)][0], self.stamp)
            self.i += 1
        self.ros.executor.spin_once(timeout_sec=0.005)
        got = self.ros.received["tracks"]
        if not self.pending:
            for msg in got[self.checked_upto:]:
                if stamp_of(msg) <= self.valid_from:
                    continue
                self.tracks_checked += 1
                ids = {o.object_id for o in msg.objects}
                if ids != self.expected:
                    self.tracks_wrong += 1
                    self.mismatches.append(f"tracks {sorted(ids)} while the answers left "
                                           f"{sorted(self.expected)}")
            self.checked_upto = len(got)
        if len(got) > 2000:  # keep the script's own memory flat
            del got[:1000]
            self.checked_upto -= 1000

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()

    def truth(self):
        return self.frames[(self.i - 1) % len(self.frames)][1]

    # ---------------------------------------------------------------- requests
    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        cli = self.ros.client(srv_type, name, depth=100)
        self.pending = True
        future = cli.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            self.tick()
        self.pending = False
        self.valid_from = self.stamp
        if not future.done():
            self.mismatches.append(f"{name}: no answer in {timeout} s")
            return None
        return future.result()

    def settle(self, what: str) -> None:
        """After an answer: the ~/tracks of a frame sent after it must show ``expected``."""
        self.answers += 1
        if not self.active:
            self.matched += 1  # checked at the next activation
            return
        after = self.stamp
        end = time.monotonic() + 10.0
        while time.monotonic() < end:
            self.tick()
            msg = next((m for m in reversed(self.ros.received["tracks"])
                        if stamp_of(m) > after), None)
            if msg is not None:
                ids = {o.object_id for o in msg.objects}
                if ids == self.expected:
                    self.matched += 1
                else:
                    self.mismatches.append(f"{what}: tracks {sorted(ids)}, expected "
                                           f"{sorted(self.expected)}")
                return
        self.mismatches.append(f"{what}: no ~/tracks within 10 s")

    def good_prompt(self) -> None:
        from engine.tools.synthetic import click_inside
        from sam2_ros_interfaces.srv import AddPrompt

        truth = self.truth()
        obj = int(self.rng.integers(1, 4))
        if not truth[obj].any():
            return
        x, y = click_inside(truth[obj])
        r = self.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=obj, points_x=[float(x)], points_y=[float(y)], labels=[1]))
        self.cases["good prompt"] += 1
        if r is not None:
            if r.success:
                self.expected.add(obj)
            self.settle(f"prompt {obj}: {r.message[:80]}")

    def bad_prompt(self, cases) -> None:
        from sam2_ros_interfaces.srv import AddPrompt

        name, make, expected = cases[self.rng.integers(len(cases))]
        r = self.call(AddPrompt, "add_prompt", make())
        self.cases[f"bad prompt: {name}"] += 1
        if r is None:
            return
        if r.success or expected not in r.message:
            self.mismatches.append(f"bad prompt {name}: {r.success} {r.message[:120]}")
        self.settle(f"bad prompt {name}")

    def burst(self) -> None:
        """20 concurrent refused prompts."""
        from sam2_ros_interfaces.srv import AddPrompt

        cli = self.ros.client(AddPrompt, "add_prompt", depth=100)
        self.pending = True
        futures = [cli.call_async(AddPrompt.Request(object_id=1, points_x=[-5.0 - k],
                                                    points_y=[5.0], labels=[1]))
                   for k in range(20)]
        end = time.monotonic() + 60
        while not all(f.done() for f in futures) and time.monotonic() < end:
            self.tick()
        self.pending, self.valid_from = False, self.stamp
        self.cases["burst of 20 bad prompts"] += 1
        done = [f.result() for f in futures if f.done()]
        if len(done) != 20 or any(r.success for r in done):
            self.mismatches.append(f"burst: {len(done)}/20 answered")
        self.settle("burst")

    def remove(self) -> None:
        from sam2_ros_interfaces.srv import RemoveObject

        obj = int(self.rng.integers(1, 5))  # 4 is never added: a refusal
        r = self.call(RemoveObject, "remove_object", RemoveObject.Request(object_id=obj))
        self.cases["remove object" if obj in self.expected else "remove unknown id"] += 1
        if r is not None:
            if r.success != (obj in self.expected):
                self.mismatches.append(f"remove {obj}: {r.message}")
            self.expected.discard(obj)
            self.settle(f"remove {obj}")

    def reset(self) -> None:
        from std_srvs.srv import Trigger

        r = self.call(Trigger, "reset", Trigger.Request())
        self.cases["reset"] += 1
        if r is not None and r.success:
            self.expected.clear()
            self.settle("reset")

    def bad_frame(self, cases) -> None:
        name, make = cases[self.rng.integers(len(cases))]
        msg = make()
        self.stamp += 1000
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp, 10**9)
        self.ros.publish_raw(msg)
        self.cases[f"bad frame: {name}"] += 1

    def transition(self) -> None:
        """deactivate + activate (objects kept), or a full cleanup/configure (objects go)."""
        full = self.rng.random() < self.reconfigure
        steps = (["deactivate", "cleanup", "configure", "activate"] if full
                 else ["deactivate", "activate"])
        self.pending = True
        for step in steps:
            ok = self.ros.change_state(step)
            if not ok:
                self.mismatches.append(f"transition {step} refused")
            self.active = step in ("activate",)
            if step == "cleanup":
                self.expected.clear()
        self.cases["lifecycle: cleanup+configure" if full
                   else "lifecycle: deactivate+activate"] += 1
        self.ros.wait_subscribers(20.0)
        self.pending, self.valid_from = False, self.stamp
        self.settle("after " + "/".join(steps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reconfigure", type=float, default=0.3,
                    help="share of lifecycle cases that clean up and configure again")
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the table")
    args = ap.parse_args()

    params = {"autostart": True, "num_threads": 1, "diagnostics_period_s": 1.0}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with NodeProcess(params) as node, RosHarness(node) as ros:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C ends the mix only
        ros.subscribe("tracks", "diagnostics")
        assert ros.wait_subscribers(60.0), node.log()
        mix = Mix(ros, node, args.seed)
        mix.reconfigure = args.reconfigure
        frames, prompts = bad_frames(), bad_prompts()
        actions = [(mix.good_prompt, 3), (lambda: mix.bad_prompt(prompts), 4),
                   (lambda: mix.bad_frame(frames), 6), (mix.remove, 1), (mix.reset, 0.3),
                   (mix.burst, 0.2), (mix.transition, 0.15)]
        weights = np.array([w for _, w in actions], float)
        weights /= weights.sum()
        mix.run_for(2.0)
        rss = [(0.0, node.rss_mb())]
        start = time.monotonic()
        last_sample = start
        try:
            while (elapsed := time.monotonic() - start) < args.minutes * 60:
                actions[mix.rng.choice(len(actions), p=weights)][0]()
                mix.run_for(float(mix.rng.uniform(0.05, 0.4)))
                if time.monotonic() - last_sample >= 5.0:
                    last_sample = time.monotonic()
                    rss.append((elapsed, node.rss_mb()))
                    if not node.alive():
                        break
        except KeyboardInterrupt:
            args.minutes = (time.monotonic() - start) / 60
        alive = node.alive()
        if alive:
            mix.run_for(2.0)
            rss.append((time.monotonic() - start, node.rss_mb()))
        diag = ros.diagnostics(fresh=True) if alive else {}
        log = node.log()
    warm = [r for t, r in rss if t >= args.warmup_s] or [rss[-1][1]]
    figures = {
        "alive": alive, "cases": sum(mix.cases.values()), "answers": mix.answers,
        "matched": mix.matched, "mismatches": mix.mismatches,
        "tracks_checked": mix.tracks_checked, "tracks_wrong": mix.tracks_wrong,
        "rss_start": rss[0][1], "rss_warm": warm[0], "rss_end": rss[-1][1],
        "rss_max_after_warm": max(warm), "frames": mix.i, "diag": diag,
        "tracebacks": log.count("Traceback"), "log_lines": log.count("\n"), "rss": rss,
    }
    text = report(args, started, mix.cases, figures)
    print(text)
    if args.out:
        args.out.write_text(text)
    ok = alive and not mix.mismatches and mix.tracks_wrong == 0
    return 0 if ok else 1


def report(args, started: str, cases, f) -> str:
    growth = 100.0 * (f["rss_max_after_warm"] - f["rss_warm"]) / f["rss_warm"]
    d = f["diag"]
    lines = [
        "# Hostile mix: sam2_node under sustained bad input",
        "",
        f"Machine: Debian 12, {os.cpu_count()} cores, no GPU ({platform.processor() or 'x86_64'}),"
        f" Python {platform.python_version()}  ",
        f"Date: {started}  ",
        f"Command: `python tests/hostile_mix.py --minutes {args.minutes:g} --warmup-s "
        f"{args.warmup_s:g} --seed {args.seed}`  ",
        "Node: defaults (bundled sam2_ros_compact, torch, 1 inference thread), raw input, "
        f"{W}x{H} synthetic frames at {RATE_HZ:g} Hz",
        "",
        "| figure | value |",
        "|---|---|",
        f"| duration | {args.minutes:g} min |",
        f"| hostile and ordinary cases sent | {f['cases']} |",
        f"| good frames sent | {f['frames']} |",
        f"| node alive at the end / tracebacks in its log | {'yes' if f['alive'] else 'NO'} / "
        f"{f['tracebacks']} |",
        f"| RSS at start / after {args.warmup_s:g} s warm-up / at end | {f['rss_start']:.0f} / "
        f"{f['rss_warm']:.0f} / {f['rss_end']:.0f} MiB |",
        f"| RSS growth after warm-up (largest sample) | {growth:+.1f}% |",
        f"| answers that matched the node's state (next ~/tracks) | {f['matched']} of "
        f"{f['answers']} |",
        f"| ~/tracks messages checked / with an object lost or unexpected | "
        f"{f['tracks_checked']} / {f['tracks_wrong']} |",
        f"| objects kept at the end (expected by the answers) | {d.get('objects', '?')} |",
        f"| node's counts: received / processed / dropped (newest-frame) / rejected | "
        f"{d.get('frames_received', '?')} / {d.get('frames_processed', '?')} / "
        f"{d.get('frames_dropped', '?')} / {d.get('frames_rejected', '?')} |",
        f"| node's counts: worker errors / requests refused busy / lost in transport | "
        f"{d.get('worker_errors', '?')} / {d.get('requests_refused_busy', '?')} / "
        f"{d.get('frames_lost_in_transport', '?')} |",
        f"| log lines over the run (throttled per kind of problem) | {f['log_lines']} |",
        "",
        "RSS by minute (MiB): " + ", ".join(
            f"{r:.0f}" for t, r in f["rss"] if int(t) % 60 < 5) + "",
        "",
        "Cases:",
        "",
        "| case | count |",
        "|---|---|",
        *[f"| {name} | {n} |" for name, n in sorted(cases.items())],
        "",
    ]
    if f["mismatches"]:
        lines += ["Mismatches:", "", *[f"- {m}" for m in f["mismatches"][:50]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
