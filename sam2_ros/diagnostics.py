"""Frame counters and timing for /diagnostics: rate, latency p50/p99, drops, objects, backend,
failures; and ``LogThrottle``, which keeps one bad input source from flooding the log.

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
        self.lost = 0  # frames the middleware reported lost before they reached the node
        self.worker_errors = 0  # frames that failed inside the tracker (an exception)
        self.requests_refused_busy = 0  # service requests refused: too many already waiting
        self.requests_late = 0  # service requests answered after service_timeout_s
        # prompts by source ("service", "click", "negative_click", "detection"): applied,
        # refused, and why the latest refused one was refused
        self.prompts_applied: dict[str, int] = {}
        self.prompts_refused: dict[str, int] = {}
        self.last_prompt_refused = ""
        self.last_error = ""
        self.configure_error = ""
        self.last_rejected = ""  # why the latest rejected frame was refused (the log is throttled)
        self._errors_reported = 0  # worker_errors at the previous snapshot
        self._last_frame_failed = False

    def on_received(self) -> None:
        with self._lock:
            self.received += 1

    def on_processed(self, latency_s: float, skipped: int) -> None:
        with self._lock:
            self.processed += 1
            self.dropped += skipped
            self._latency_ms.append(latency_s * 1e3)
            self._done_at.append(time.monotonic())
            self._last_frame_failed = False

    def on_rejected(self, reason: str = "") -> None:
        with self._lock:
            self.rejected += 1
            self.last_rejected = reason[:300]

    def on_lost(self, count: int) -> None:
        with self._lock:
            self.lost += count

    def on_worker_error(self, text: str) -> None:
        with self._lock:
            self.worker_errors += 1
            self.last_error = text
            self._last_frame_failed = True

    def on_error(self, text: str) -> None:
        """An error outside frame processing (a request crashed)."""
        with self._lock:
            self.last_error = text

    def on_configure_failed(self, text: str) -> None:
        """Configure failed: the node cannot track until a configure succeeds (which starts
        new stats)."""
        with self._lock:
            self.last_error = self.configure_error = text

    def on_busy(self) -> None:
        with self._lock:
            self.requests_refused_busy += 1

    def on_prompt(self, source: str, applied: bool, reason: str = "") -> None:
        with self._lock:
            counts = self.prompts_applied if applied else self.prompts_refused
            counts[source] = counts.get(source, 0) + 1
            if not applied:
                self.last_prompt_refused = f"{source}: {reason}"[:300]

    def on_late(self) -> None:
        with self._lock:
            self.requests_late += 1

    def snapshot(self) -> dict[str, float]:
        """Counters, output rate (Hz over the recent window) and latency percentiles (ms)."""
        with self._lock:
            lat = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
            done = list(self._done_at)
            counts = dict(received=self.received, processed=self.processed,
                          dropped=self.dropped, rejected=self.rejected, lost=self.lost,
                          worker_errors=self.worker_errors,
                          requests_refused_busy=self.requests_refused_busy,
                          requests_late=self.requests_late)
            # failing: frames failed since the previous snapshot, or the latest one did
            failing = self._last_frame_failed or self.worker_errors > self._errors_reported
            self._errors_reported = self.worker_errors
            last_error, last_rejected = self.last_error, self.last_rejected
            configure_error = self.configure_error
            prompts = {f"prompts_{what}_{source}": str(n)
                       for what, counts in (("applied", self.prompts_applied),
                                            ("refused", self.prompts_refused))
                       for source, n in sorted(counts.items())}
            last_prompt_refused = self.last_prompt_refused
        rate = 0.0
        if len(done) >= 2 and time.monotonic() - done[-1] < 2.0:
            rate = (len(done) - 1) / max(done[-1] - done[0], 1e-6)
        return dict(counts, rate_hz=rate, latency_p50_ms=float(np.percentile(lat, 50)),
                    latency_p99_ms=float(np.percentile(lat, 99)), failing=failing,
                    last_error=last_error, last_rejected=last_rejected,
                    configure_error=configure_error, prompts=prompts,
                    last_prompt_refused=last_prompt_refused)


def diagnostic_array(stamp, name: str, hardware_id: str, stats: dict, extra: dict[str, str],
                     state: str = "active") -> DiagnosticArray:
    """One DiagnosticStatus: ERROR when frames fail inside the tracker (or configure failed),
    WARN when not active, idle, or when frames are rejected or lost, else OK."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if stats.get("failing"):
        status.level = DiagnosticStatus.ERROR
        status.message = (f"tracking failed on {int(stats['worker_errors'])} frame(s): "
                          f"{stats['last_error']}")
    elif state != "active":
        failed = stats.get("configure_error")
        status.level = DiagnosticStatus.ERROR if failed else DiagnosticStatus.WARN
        status.message = f"node is {state}: not tracking" + (f" ({failed})" if failed else "")
    elif stats["processed"] == 0 or stats["rate_hz"] == 0.0:
        status.level, status.message = DiagnosticStatus.WARN, "no frames processed recently"
    elif stats["rejected"]:
        status.level = DiagnosticStatus.WARN
        status.message = f"{int(stats['rejected'])} input frames rejected (see the log)"
    elif stats.get("lost"):
        status.level = DiagnosticStatus.WARN
        status.message = (f"{int(stats['lost'])} frames lost in transport before reaching the "
                          "node (see the log)")
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
        "frames_lost_in_transport": str(int(stats.get("lost", 0))),
        "worker_errors": str(int(stats.get("worker_errors", 0))),
        "requests_refused_busy": str(int(stats.get("requests_refused_busy", 0))),
        "requests_answered_late": str(int(stats.get("requests_late", 0))),
        "last_error": str(stats.get("last_error", "")),
        "last_rejected": str(stats.get("last_rejected", "")),
        "last_prompt_refused": str(stats.get("last_prompt_refused", "")),
        **stats.get("prompts", {}),
        "state": state,
        **extra,
    }
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def parse_status(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a status as a dict."""
    return {kv.key: kv.value for kv in status.values}


class LogThrottle:
    """At most one log line per kind of problem every ``period_s``; counts the lines it held
    back. Kinds are a small fixed vocabulary (``InputError.kind``, ...); its state is bounded
    by ``max_kinds`` whatever the caller passes (extra kinds share one slot)."""

    OTHER = "other"

    def __init__(self, period_s: float = 5.0, max_kinds: int = 32) -> None:
        self.period_s, self.max_kinds = period_s, max_kinds
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str, now: float | None = None) -> int | None:
        """None to stay quiet; else the number of lines of this kind held back since the
        previous one (log now, and say so)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if kind not in self._last and len(self._last) >= self.max_kinds - 1:
                kind = self.OTHER
            if now - self._last.get(kind, -1e18) < self.period_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._held.pop(kind, 0)

    def __len__(self) -> int:
        return len(self._last)
