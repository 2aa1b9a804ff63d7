"""Plain ASGI middleware: framework-independent, and run before FastAPI parses anything.

Every limit that does not depend on what a request means lives here, so that every route gets it,
including routes added later: the body size and body-read deadline (BodySizeLimit), the shutdown drain
and the per-request WorkBudget (RequestGuard), the fingerprint header (ResponseHeader). Routes that do
long work take their WorkBudget with `Depends(...)` (see app.py) and call `budget.check()` as they go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .budget import WorkBudget
from .errors import error_response
from .shutdown import DrainGate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where RequestGuard puts a request's WorkBudget: the ASGI scope's "state" dict (request.state in Starlette).
WORK_BUDGET_KEY = "work_budget"
CLOSE = {"Connection": "close"}
# Most we read and discard from a client before answering an error that comes before its body was read
# (see BodySizeLimit): enough for any body a client would send us, bounded in time by body_timeout.
DRAIN_BYTES = 64 * 2**20


async def _answer(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Send a JSON error and ask for the connection to be closed (the request was not read to its end,
    or the server is going away, so the connection cannot carry another request)."""

    async def no_receive() -> Message:
        return {"type": "http.disconnect"}

    await error_response(status, code, message, headers=CLOSE)(scope, no_receive, send)


async def _discard_body(receive: Receive, max_bytes: int, deadline: float) -> None:
    """Read and drop what the client is still sending, up to `max_bytes` or `deadline` (loop time).

    Closing a socket with unread data makes the kernel send a reset, and the client would see
    "connection reset" instead of the answer we are about to send."""
    loop = asyncio.get_running_loop()
    drained, more = 0, True
    while more and drained <= max_bytes:
        try:
            message = await asyncio.wait_for(receive(), deadline - loop.time())
        except asyncio.TimeoutError:
            return
        if message["type"] == "http.disconnect":
            return
        drained += len(message.get("body", b""))
        more = message.get("more_body", False)


def _declared_length(scope: Scope) -> tuple[int | None, str | None]:
    """(Content-Length, None) or (None, what is wrong with it). h11, the HTTP parser the service runs on,
    already refuses a non-numeric, negative or conflicting Content-Length before the app sees the request
    (a plain-text 400, see the README); these checks are for other servers, and for Transfer-Encoding
    together with Content-Length, which h11 passes on (it ignores the length)."""
    values, chunked = [], False
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"content-length":
            values.extend(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            chunked = True
    if not values:
        return None, None
    shown = ", ".join(repr(v.decode("latin-1")) for v in values)
    if len(set(values)) > 1:
        return None, f"conflicting Content-Length headers {shown}"
    if not values[0].isdigit():
        return None, f"invalid Content-Length {shown}: must be a number of bytes"
    if chunked:
        return None, "Content-Length together with Transfer-Encoding: send one of them"
    return int(values[0]), None


class BodySizeLimit:
    """Read the whole request body before the app, within `max_body_bytes` and `body_timeout` seconds.

    - 413 body_too_large: a declared Content-Length over the limit is refused up front, and a body
      without one (chunked transfer) is counted as it streams in, so a client cannot get around the
      limit by not declaring a length.
    - 408 body_timeout: the last byte of the body must arrive within `body_timeout` seconds of the
      first read; a client that sends half a body and stalls is answered and disconnected, instead of
      holding a connection (and its buffered half body) for as long as it likes.
    - 400 bad_content_length: a Content-Length that cannot be right (see _declared_length).
    Accepted bodies are buffered (at most the limit, which the app would hold anyway to parse the JSON)
    and replayed to the app as one message. Before answering 413 we read and discard what the client is
    still sending (up to `drain_bytes`, within the same deadline), see _discard_body.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout: float = 10.0, drain_bytes: int = DRAIN_BYTES
    ) -> None:
        self.app, self.max_body_bytes, self.drain_bytes = app, max_body_bytes, drain_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        declared, problem = _declared_length(scope)
        if problem is not None:
            await _answer(scope, send, 400, "bad_content_length", problem)
            return
        if declared is not None and declared > self.max_body_bytes:
            if declared <= self.drain_bytes:
                await _discard_body(receive, self.drain_bytes, deadline)
            await self._too_large(scope, send, f"{declared} bytes")
            return
        body = await self._read_body(scope, receive, send, deadline)
        if body is None:
            return  # answered (413 / 408) or the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards only http.disconnect can come

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send, deadline: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        chunks, total, more_body = [], 0, True
        while more_body:
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except asyncio.TimeoutError:
                await _answer(
                    scope,
                    send,
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.body_timeout:g} s (body_timeout); "
                    f"got {total} bytes",
                )
                return None
            if message["type"] == "http.disconnect":
                return None  # client went away: nobody to answer
            chunk = message.get("body", b"")
            total += len(chunk)
            more_body = message.get("more_body", False)
            if total > self.max_body_bytes:
                if more_body:
                    await _discard_body(receive, self.drain_bytes - total, deadline)
                await self._too_large(scope, send, f"more than {self.max_body_bytes} bytes")
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, send: Send, size: str) -> None:
        await _answer(
            scope,
            send,
            413,
            "body_too_large",
            f"request body is {size}; the limit is {self.max_body_bytes} bytes (send smaller batches)",
        )


class RequestGuard:
    """Shutdown drain and per-request WorkBudget, for every route (see service/shutdown.py).

    - While the worker drains, a new request is answered 503 shutting_down without running.
    - Otherwise the request gets a fresh WorkBudget in scope["state"][WORK_BUDGET_KEY] and runs as its
      own task, so that the guard can answer for it: when the drain time is up, or when uvicorn cancels
      it, a request that has not started its response is answered 503 shutting_down (never uvicorn's
      plain-text 500) and its budget is cancelled, which stops its worker thread at the next check.
      Anything the app sends after that is dropped. A response that has already started (a stream)
      cannot become a 503: at the drain timeout it is cut off, and its budget is cancelled so that the
      code producing it can stop.
    """

    def __init__(self, app: ASGIApp, gate: DrainGate, max_cpu_seconds: float) -> None:
        self.app, self.gate, self.max_cpu_seconds = app, gate, max_cpu_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.gate.draining:
            loop_time = asyncio.get_running_loop().time()
            await _discard_body(receive, DRAIN_BYTES, loop_time + 1.0)
            await _answer(scope, send, 503, "shutting_down", "the service is shutting down; retry elsewhere or later")
            return
        budget = WorkBudget(self.max_cpu_seconds)
        scope.setdefault("state", {})[WORK_BUDGET_KEY] = budget
        started = answered = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the guard has answered for this request
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def take_over() -> None:
            nonlocal answered
            budget.cancel()
            if not started:
                answered = True
                await _answer(
                    scope, send, 503, "shutting_down", "the service is shutting down and could not finish this request"
                )

        self.gate.enter()
        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        try:
            await asyncio.wait({task, self.gate.timeout()}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the drain time is up
                await take_over()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return
            task.result()  # re-raise what the app raised (Starlette's error middleware answers it)
        except asyncio.CancelledError:
            # uvicorn gave up waiting (or a second signal): answer 503 rather than let it send a 500.
            task.cancel()
            await take_over()
            raise
        finally:
            self.gate.leave()


class ResponseHeader:
    """Add one fixed header to every HTTP response (plain ASGI: no buffering of the response body)."""

    def __init__(self, app: ASGIApp, name: str, value: str) -> None:
        self.app, self.header = app, (name.lower().encode("latin-1"), value.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)
