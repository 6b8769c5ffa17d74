"""The inference thread: it owns the tracker, runs queued jobs (service requests) first and
otherwise the newest frame. A newer frame replaces an unprocessed one, so nothing queues up
when inference is slower than the camera; the skipped frames are counted by sequence number.

A job is either cancelled before it starts (then it never runs: nothing changed) or runs to
the end; ``Job.cancel`` says which, so a caller that gives up waiting can tell the truth.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

PENDING, RUNNING, DONE, CANCELLED = "pending", "running", "done", "cancelled"


class ShuttingDown(RuntimeError):
    """The worker is stopping: the job was not run."""


class Job:
    """One call of ``fn`` on the worker thread. ``state`` goes pending -> running -> done, or
    pending -> cancelled (never run). ``on_done(job)`` runs on the worker thread once it is done
    or was refused at shutdown."""

    def __init__(self, fn: Callable[[], Any], on_done: Callable[["Job"], None] | None = None):
        self.fn, self.on_done = fn, on_done
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = PENDING
        self._lock = threading.Lock()

    def cancel(self) -> bool:
        """Cancel the job if it has not started: True then (it will never run), else False
        (it is running or done, and its outcome stands)."""
        with self._lock:
            if self.state == PENDING:
                self.state = CANCELLED
                self.fn = self.on_done = None  # never runs: hold nothing it would have used
                return True
            return self.state == CANCELLED

    def _start(self) -> bool:
        with self._lock:
            if self.state != PENDING:
                return False
            self.state = RUNNING
            return True

    def _finish(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.error = error
        with self._lock:
            if self.state in (PENDING, RUNNING):
                self.state = DONE
        self.finished.set()
        # A finished job keeps its outcome only. Its function and callback go: the callback
        # usually holds the caller's future, which holds this job, and the function the session
        # it ran on; kept, that cycle would keep a cleaned-up session's tracker and model alive
        # until the next full garbage collection.
        on_done, self.on_done, self.fn = self.on_done, None, None
        if on_done is not None:
            on_done(self)

    def run(self) -> None:
        if not self._start():
            return
        try:
            self.result = self.fn()
        except BaseException as err:  # handed back to the caller
            self._finish(err)
            return
        self._finish()


class LatestFrameWorker:
    """``offer(item)`` from any thread; ``process(item)`` runs on the worker thread for the
    newest item only (its exceptions go to ``on_error``); ``submit(fn)`` queues ``fn`` to run on
    the worker thread before the next frame; ``run_job(fn)`` does that and waits."""

    def __init__(self, process: Callable[[Any], None],
                 on_error: Callable[[BaseException], None], name: str = "sam2_worker",
                 max_jobs: int = 256) -> None:
        self._process, self._on_error = process, on_error
        self._cv = threading.Condition()
        self._newest: Any = None
        self._jobs: deque[Job] = deque()
        self.max_jobs = max_jobs
        self._stop = False
        self._busy_since: float | None = None  # time.monotonic() the running item started
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "LatestFrameWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking work; queued jobs fail with ShuttingDown. Waits up to ``timeout`` s for
        the running frame or job; True if the thread has ended."""
        with self._cv:
            self._stop = True
            self._newest = None
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop

    def offer(self, item: Any) -> None:
        """Make ``item`` the next frame to process, replacing any unprocessed one."""
        with self._cv:
            if not self._stop:
                self._newest = item
                self._cv.notify()

    def clear(self) -> None:
        with self._cv:
            self._newest = None

    def busy_s(self) -> float:
        """Seconds the running frame or job has been running (0 when idle)."""
        since = self._busy_since
        return time.monotonic() - since if since is not None else 0.0

    def pending_jobs(self) -> int:
        with self._cv:
            return len(self._jobs)

    def submit(self, fn: Callable[[], Any], on_done: Callable[[Job], None] | None = None) -> Job:
        """Queue ``fn``; ShuttingDown when stopping, OverflowError when ``max_jobs`` are
        already waiting (the job is then not queued)."""
        job = Job(fn, on_done)
        with self._cv:
            if self._stop:
                raise ShuttingDown("the tracker is shutting down")
            if len(self._jobs) >= self.max_jobs:
                raise OverflowError(f"{len(self._jobs)} requests are already waiting for the "
                                    f"tracker (at most {self.max_jobs}); try again later")
            self._jobs.append(job)
            self._cv.notify()
        return job

    def run_job(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run ``fn`` on the worker thread and return its result (its exceptions re-raised).
        A job not started within ``timeout`` s is cancelled (it never runs) and TimeoutError
        raised; a job already running is waited for to the end."""
        job = self.submit(fn)
        if not job.finished.wait(timeout) and job.cancel():
            raise TimeoutError(f"the tracker did not start the request within {timeout:g} s; "
                               "it was cancelled and nothing changed")
        job.finished.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._jobs and self._newest is None:
                    self._cv.wait()
                if self._stop:
                    jobs, self._jobs = list(self._jobs), deque()
                    break
                job = self._jobs.popleft() if self._jobs else None
                item, self._newest = (None, self._newest) if job else (self._newest, None)
            self._busy_since = time.monotonic()
            if job is not None:
                job.run()
            else:
                try:
                    self._process(item)
                except Exception as err:  # a bad frame must not end the thread
                    self._on_error(err)
            self._busy_since = None
        for job in jobs:
            if job.cancel():
                job._finish(ShuttingDown("the tracker is shutting down; the request was "
                                         "not applied"))
