"""Callbacks due at a time, run by one periodic timer of the node.

A timer per request would do the same, but rclpy's callback groups keep a weak reference to
every entity ever created in them, so a node that makes a timer per request grows by one entry
per request for as long as it runs. ``Deadlines`` is a plain list under a lock, driven by one
timer created with the node; what is cancelled or run leaves the list.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

TICK_S = 0.05  # how often the node's timer runs what is due (the resolution of the deadlines)


class Deadline:
    """One pending call; ``cancel()`` removes it (a no-op once it has run)."""

    __slots__ = ("when", "fn", "_owner")

    def __init__(self, when: float, fn: Callable[[], None], owner: "Deadlines") -> None:
        self.when, self.fn, self._owner = when, fn, owner

    def cancel(self) -> None:
        self._owner.cancel(self)


class Deadlines:
    """``add(seconds, fn)`` runs ``fn`` once ``seconds`` have passed, at the first
    ``run_due()`` after that (the node calls it every TICK_S on its executor)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: list[Deadline] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, seconds: float, fn: Callable[[], None]) -> Deadline:
        entry = Deadline(self._clock() + seconds, fn, self)
        with self._lock:
            self._pending.append(entry)
        return entry

    def cancel(self, entry: Deadline) -> None:
        with self._lock:
            if entry in self._pending:
                self._pending.remove(entry)

    def run_due(self) -> int:
        """Run (and forget) every call that is due; how many ran."""
        if not self._pending:  # the usual case, every tick
            return 0
        now = self._clock()
        with self._lock:
            due = [e for e in self._pending if e.when <= now]
            self._pending = [e for e in self._pending if e.when > now]
        for entry in sorted(due, key=lambda e: e.when):
            entry.fn()
        return len(due)

    def clear(self) -> None:
        with self._lock:
            self._pending = []
