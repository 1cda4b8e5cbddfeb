"""Keyed lanes: work queued per key (a destination), run by at most N daemon threads, one thread per key at a time."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, Hashable, TypeVar

Item = TypeVar("Item")


class KeyedLanes(Generic[Item]):
    """`submit(key, items)` queues items behind the key's earlier ones; a free thread takes a key and runs
    `run(key, items)` with everything queued for it, so one key's work never runs twice at once and a key whose
    work hangs holds up only itself (and one of the `workers` threads). Threads are daemons: a hung `run` never
    keeps the interpreter from exiting. An exception of `run` is kept (`take_errors`), never raised in the thread."""

    def __init__(self, workers: int, run: Callable[[Hashable, list[Item]], None],
                 done: Callable[[], None] | None = None, name: str = "lane"):
        """`done()`: after each `run`, e.g. to wake whoever claims more work."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._run = run
        self._done = done
        self._name = name
        self._cond = threading.Condition()
        self._backlog: dict[Hashable, list[Item]] = {}  # queued, not taken by a thread yet
        self._ready: deque[Hashable] = deque()  # keys with a backlog and no thread on them, oldest first
        self._active: set[Hashable] = set()  # keys a thread runs now
        self._threads = 0
        self._closed = False
        self._errors: list[BaseException] = []

    def submit(self, key: Hashable, items: list[Item]) -> bool:
        """Queue items for the key; False (nothing queued) once closed."""
        with self._cond:
            if self._closed:
                return False
            self._backlog.setdefault(key, []).extend(items)
            if key not in self._active and key not in self._ready:
                self._ready.append(key)
            if self._ready and self._threads < self.workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
            return True

    def busy(self, key: Hashable) -> bool:
        """Whether the key has work running or queued."""
        with self._cond:
            return key in self._active or key in self._backlog

    def idle(self) -> bool:
        with self._cond:
            return not self._active and not self._backlog

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing runs or is queued (after `close`: until nothing runs); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._active or (self._backlog and not self._closed):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> dict[Hashable, list[Item]]:
        """Take no more work: threads finish what they run and take nothing new. Returns what was queued and not
        taken (for the caller to give back)."""
        with self._cond:
            self._closed = True
            left, self._backlog = self._backlog, {}
            self._ready.clear()
            self._cond.notify_all()
            return left

    def take_errors(self) -> list[BaseException]:
        with self._cond:
            errors, self._errors = self._errors, []
            return errors

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._closed or not self._ready:
                    self._threads -= 1
                    self._cond.notify_all()
                    return
                key = self._ready.popleft()
                items = self._backlog.pop(key, [])
                self._active.add(key)
            try:
                if items:
                    self._run(key, items)
            except BaseException as exc:  # noqa: BLE001 - kept for the owner, who says it (take_errors)
                with self._cond:
                    self._errors.append(exc)
            finally:
                with self._cond:
                    self._active.discard(key)
                    if key in self._backlog and not self._closed:  # queued while it ran: its turn again, last
                        self._ready.append(key)
                    self._cond.notify_all()
                if self._done is not None:
                    self._done()
