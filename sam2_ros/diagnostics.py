"""Frame counters and timing for /diagnostics: rate, latency p50/p99, drops, objects, backend.

``FrameStats`` is thread-safe (the worker writes, the diagnostics timer reads) and bounded: a
fixed window of recent latencies and completion times, never a growing list.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

WINDOW = 256  # recent frames the rate and percentiles are computed over


class FrameStats:
    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._done_at: deque[float] = deque(maxlen=window)
        self.received = self.processed = self.dropped = self.rejected = 0

    def on_received(self) -> None:
        with self._lock:
            self.received += 1

    def on_processed(self, latency_s: float, skipped: int) -> None:
        with self._lock:
            self.processed += 1
            self.dropped += skipped
            self._latency_ms.append(latency_s * 1e3)
            self._done_at.append(time.monotonic())

    def on_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def snapshot(self) -> dict[str, float]:
        """Counters, output rate (Hz over the recent window) and latency percentiles (ms)."""
        with self._lock:
            lat = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
            done = list(self._done_at)
            counts = dict(received=self.received, processed=self.processed,
                          dropped=self.dropped, rejected=self.rejected)
        rate = 0.0
        if len(done) >= 2 and time.monotonic() - done[-1] < 2.0:
            rate = (len(done) - 1) / max(done[-1] - done[0], 1e-6)
        return dict(counts, rate_hz=rate, latency_p50_ms=float(np.percentile(lat, 50)),
                    latency_p99_ms=float(np.percentile(lat, 99)))


def diagnostic_array(stamp, name: str, hardware_id: str, stats: dict[str, float],
                     extra: dict[str, str]) -> DiagnosticArray:
    """One DiagnosticStatus: OK while frames flow, WARN when idle or when frames are rejected."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if stats["processed"] == 0 or stats["rate_hz"] == 0.0:
        status.level, status.message = DiagnosticStatus.WARN, "no frames processed recently"
    elif stats["rejected"]:
        status.level = DiagnosticStatus.WARN
        status.message = f"{int(stats['rejected'])} input frames rejected (see the log)"
    else:
        status.level, status.message = DiagnosticStatus.OK, f"tracking at {stats['rate_hz']:.1f} Hz"
    values = {
        "rate_hz": f"{stats['rate_hz']:.2f}",
        "latency_p50_ms": f"{stats['latency_p50_ms']:.1f}",
        "latency_p99_ms": f"{stats['latency_p99_ms']:.1f}",
        "frames_received": str(int(stats["received"])),
        "frames_processed": str(int(stats["processed"])),
        "frames_dropped": str(int(stats["dropped"])),
        "frames_rejected": str(int(stats["rejected"])),
        **extra,
    }
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def parse_status(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a status as a dict (for tests and the demo)."""
    return {kv.key: kv.value for kv in status.values}
