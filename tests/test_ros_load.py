"""Load: frames published much faster than inference. sam2_node must stay on the newest frame
(the age of what it publishes does not grow), count the frames it skips, and keep its memory
flat. A real node process over loopback DDS, random weights at image_size 128."""
from __future__ import annotations

import time

import numpy as np
import pytest

from engine.tools.synthetic import Scene, click_inside
from ros_helpers import NodeProcess, RosHarness, stamp_of

RATE_HZ, SECONDS = 100.0, 8.0


@pytest.fixture(scope="module")
def node():
    with NodeProcess({"model": "sam2.1_hiera_tiny", "image_size": 128, "autostart": True,
                      "diagnostics_period_s": 0.5, "qos_depth": 5}) as proc:
        yield proc


def test_faster_input_than_inference_stays_on_newest_with_flat_memory(node):
    scene = list(Scene(128, 96, 2, seed=5, object_size=(24, 36)).frames(60))
    frames, truth = [f for f, _ in scene], scene[0][1]
    with RosHarness(node) as ros:
        ros.subscribe("tracks", "diagnostics")
        assert ros.wait_subscribers(30.0), node.log()
        sent: dict[int, float] = {}
        ages: list[float] = []  # per ~/tracks received: seconds since its frame was sent
        seen: set[int] = set()

        def collect() -> None:
            for msg in ros.received["tracks"]:
                s = stamp_of(msg)
                if s in sent and s not in seen:
                    seen.add(s)
                    ages.append(time.monotonic() - sent[s])

        # Prompt one object so memory attention and the memory bank are exercised.
        ros.track_frame(frames[0])
        assert ros.add_prompt(1, [click_inside(truth[1])], [1]).success
        base = ros.next_stamp()

        start, i, rss = time.monotonic(), 1, []
        while (now := time.monotonic()) - start < SECONDS:
            stamp = base + i * 10**6
            ros.publish_image(frames[i % len(frames)], stamp)
            sent[stamp] = now
            i += 1
            if i % int(RATE_HZ) == 0:
                rss.append(node.rss_mb())
            while time.monotonic() < start + i / RATE_HZ:
                ros.executor.spin_once(timeout_sec=0.002)
            collect()
        ros.spin_for(1.5)
        collect()
        published = i

        assert node.alive(), node.log()[-3000:]
        processed = len(ages)
        assert 5 <= processed < published, (processed, published)
        # Stays on the newest frame: what it publishes is never much older than one inference,
        # and that age does not grow over the run (a queue would make it grow linearly).
        age = np.array(ages)
        half = len(age) // 2
        assert np.median(age[half:]) < np.median(age[:half]) * 2 + 0.3, age
        assert np.percentile(age, 90) < 4.0, age  # a queue would reach tens of seconds
        # It says what it skipped: processed + skipped + rejected = received (minus in-flight).
        d = ros.diagnostics(fresh=True)
        received, done = int(d["frames_received"]), int(d["frames_processed"])
        dropped = int(d["frames_dropped"])
        assert dropped > 0
        assert abs(received - (done + dropped + int(d["frames_rejected"]))) <= 2, d
        assert d["objects"] == "1"
        # Memory flat after warm-up (process RSS sampled once a second).
        warm = rss[2:]
        growth = max(warm) - warm[0]
        assert growth < max(30.0, 0.05 * warm[0]), rss
        print(f"\npublished {published} at {RATE_HZ:g} Hz, processed {processed}, node "
              f"dropped {dropped}, age p50 {np.median(age) * 1e3:.0f} ms, RSS {warm[0]:.0f} -> "
              f"{max(warm):.0f} MiB")
