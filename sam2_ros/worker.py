"""The inference thread: it owns the tracker, runs queued jobs (service requests) first and
otherwise the newest frame. A newer frame replaces an unprocessed one, so nothing queues up
when inference is slower than the camera; the skipped frames are counted by sequence number.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class _Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.done = fn, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as err:  # handed back to the caller's thread
            self.error = err
        finally:
            self.done.set()


class LatestFrameWorker:
    """``offer(item)`` from any thread; ``process(item)`` runs on the worker thread for the
    newest item only (its exceptions go to ``on_error``); ``run_job(fn)`` runs ``fn`` on the
    worker thread and returns its result."""

    def __init__(self, process: Callable[[Any], None],
                 on_error: Callable[[BaseException], None], name: str = "sam2_worker") -> None:
        self._process, self._on_error = process, on_error
        self._cv = threading.Condition()
        self._newest: Any = None
        self._jobs: deque[_Job] = deque()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "LatestFrameWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def offer(self, item: Any) -> None:
        """Make ``item`` the next frame to process, replacing any unprocessed one."""
        with self._cv:
            self._newest = item
            self._cv.notify()

    def clear(self) -> None:
        with self._cv:
            self._newest = None

    def run_job(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run ``fn`` on the worker thread before the next frame; its exceptions are re-raised
        here. TimeoutError if it has not finished within ``timeout`` seconds (a job that has
        not started by then is dropped)."""
        job = _Job(fn)
        with self._cv:
            if self._stop:
                raise RuntimeError("the tracker is shutting down")
            self._jobs.append(job)
            self._cv.notify()
        if not job.done.wait(timeout):
            job.cancelled = True
            raise TimeoutError(f"the tracker did not answer within {timeout:g} s")
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._jobs and self._newest is None:
                    self._cv.wait()
                if self._stop:
                    for job in self._jobs:
                        job.error = RuntimeError("the tracker is shutting down")
                        job.done.set()
                    return
                job = self._jobs.popleft() if self._jobs else None
                item, self._newest = (None, self._newest) if job else (self._newest, None)
            if job is not None:
                if not job.cancelled:
                    job.run()
            else:
                try:
                    self._process(item)
                except Exception as err:  # a bad frame must not end the thread
                    self._on_error(err)
