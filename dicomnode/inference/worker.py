"""One worker thread per GPU: every run on that device, from any thread, executes there in FIFO order."""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class DeviceWorker:
    """Runs submitted calls one at a time on a single thread, so two studies never hold GPU memory at once.

    CUDA state (TensorRT contexts, streams, buffers) is created and used on this same thread.
    """

    def __init__(self, device: str):
        if not device:
            raise ValueError("DeviceWorker needs a device name such as 'cuda:0'")
        self.device = device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dicomnode-{device.replace(':', '')}")
        self._thread_ident: int | None = None

    def _mark(self) -> None:
        self._thread_ident = threading.get_ident()

    def submit(self, call: Callable[..., T], *args, **kwargs) -> "Future[T]":
        return self._executor.submit(call, *args, **kwargs)

    def call(self, call: Callable[..., T], *args, **kwargs) -> T:
        """Run `call` on the worker thread and wait for its result (re-entrant: a call from the worker runs inline)."""
        if self._thread_ident == threading.get_ident():
            return call(*args, **kwargs)

        def marked():
            self._mark()
            return call(*args, **kwargs)

        return self._executor.submit(marked).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


_workers: dict[str, DeviceWorker] = {}
_workers_lock = threading.Lock()


def worker_for(device: str) -> DeviceWorker:
    """The process-wide worker of one device ('cuda:0'); every Runtime shares it."""
    with _workers_lock:
        if device not in _workers:
            _workers[device] = DeviceWorker(device)
        return _workers[device]
