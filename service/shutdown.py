"""Graceful shutdown that answers every request instead of dropping it: drain first, then stop uvicorn.

uvicorn's own shutdown on SIGTERM stops accepting at once, waits `timeout_graceful_shutdown` seconds
for busy connections and then *cancels* the requests still running, which its protocol answers with a
plain-text 500. And with several workers the listening socket stays open in the parent process, so a
client that connects meanwhile sits in the kernel's accept queue until it is reset.

So each worker drains before uvicorn's shutdown starts. The first SIGTERM or SIGINT (DrainGate.signal):
  - the worker keeps accepting, and every request that arrives now is answered 503 shutting_down with
    `Connection: close`, without running (middleware.RequestGuard);
  - requests already in progress go on; when the last one has finished, or `shutdown_timeout` seconds
    have passed, uvicorn's shutdown starts (its own signal handler is called, as if the signal had only
    just arrived);
  - at the timeout every request still in progress is cancelled: RequestGuard answers it 503 right away
    (if its response has not started) and cancels its WorkBudget, so that its worker thread stops at its
    next check (service/budget.py).
A second signal skips what is left of the drain: uvicorn's handler runs at once (and a third makes
uvicorn exit without waiting, as it always does on a repeated Ctrl-C).

How the gate hears the signal: uvicorn installs its handlers before it runs the application's lifespan
startup, so the lifespan wraps them (`chain_signal_handlers`); uvicorn puts its own back when it stops.
If uvicorn ever installed them later, the wrapper would be replaced and shutdown would fall back to
uvicorn's plain behaviour; the SIGTERM tests in tests/test_serve_shutdown.py would catch that.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DrainGate:
    """One per worker process: whether the worker is draining, and the requests still in progress.

    Everything but `signal` runs on the event loop thread (the ASGI middleware); `signal` runs in a
    signal handler, which Python also runs on the main thread, between two bytecodes of the loop, so it
    only sets a flag and hands the rest to the loop with call_soon_threadsafe.
    """

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.draining = False
        self.in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Future | None = None
        self._time_up = False
        self._stop_server: Callable[[], None] | None = None
        self._server_stopped = False

    # ---- request side (event loop) ------------------------------------------------------------------

    def timeout(self) -> asyncio.Future:
        """A future that completes when the drain time is up (never, unless the worker drains).

        One per event loop: uvicorn runs one loop per worker, but an in-process test client may run
        each request on a loop of its own, and a future belongs to the loop that made it."""
        loop = asyncio.get_running_loop()
        if self._timeout is None or self._timeout.get_loop() is not loop:
            self._timeout = loop.create_future()
            if self._time_up:
                self._timeout.set_result(None)
        return self._timeout

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.draining and self.in_flight == 0:
            self._stop()

    # ---- signal side --------------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def signal(self, stop_server: Callable[[], None]) -> None:
        """A shutdown signal arrived; `stop_server()` starts uvicorn's own shutdown."""
        if self.draining or self._loop is None:
            stop_server()  # a second signal, or no loop to drain on: do not wait any longer
            return
        self.draining = True
        self._stop_server = stop_server
        self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        if self.in_flight == 0:
            self._stop()
            return
        asyncio.get_running_loop().call_later(self.shutdown_timeout, self._time_is_up)

    def _time_is_up(self) -> None:
        self._time_up = True
        timeout = self.timeout()
        if not timeout.done():
            timeout.set_result(None)
        self._stop()

    def _stop(self) -> None:
        if not self._server_stopped and self._stop_server is not None:
            self._server_stopped = True
            self._stop_server()


def chain_signal_handlers(gate: DrainGate) -> Callable[[], None]:
    """Route SIGTERM/SIGINT through `gate` before the handlers installed now (uvicorn's).

    Call it from the lifespan startup, on the event loop. Returns a function that puts the previous
    handlers back. Outside the main thread (an in-process test client) signals cannot be handled: no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    gate.attach(asyncio.get_running_loop())
    previous: dict[int, Any] = {}

    def make_handler(sig: int) -> Callable[[int, FrameType | None], None]:
        before = previous[sig]

        def stop_server(frame: FrameType | None = None) -> None:
            if callable(before):
                before(sig, frame)
            else:  # SIG_DFL / SIG_IGN: nothing to chain to; behave as if we had not been here
                signal.signal(sig, before)
                signal.raise_signal(sig)

        def handler(signum: int, frame: FrameType | None) -> None:
            gate.signal(lambda: stop_server(frame))

        return handler

    for sig in SHUTDOWN_SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, make_handler(sig))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
