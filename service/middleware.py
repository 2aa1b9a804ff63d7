"""Plain ASGI middleware: framework-independent, and run before FastAPI parses anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """Refuse request bodies over `max_body_bytes` with 413 before the app parses anything.

    A declared Content-Length over the limit is refused up front, and a body without one (chunked
    transfer) is counted as it streams in, so a client cannot get around the limit by not declaring
    a length. Accepted bodies are buffered (at most the limit, which the app would hold anyway to
    parse the JSON) and replayed to the app as one message. Before answering 413 we read and discard
    what the client is still sending (up to `drain_bytes`; beyond that we just answer and close):
    closing a socket with unread data makes the kernel send a reset, and the client would see
    "connection reset" instead of our 413.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, drain_bytes: int = 64 * 2**20) -> None:
        self.app, self.max_body_bytes, self.drain_bytes = app, max_body_bytes, drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await error_response(
                        400, "bad_content_length", f"invalid Content-Length {value.decode('latin-1')!r}"
                    )(scope, receive, send)
                    return
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send, declared, already=0, more=declared <= self.drain_bytes)
            return
        chunks, total, more_body = [], 0, True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # client went away: nobody to answer
            chunk = message.get("body", b"")
            total += len(chunk)
            more_body = message.get("more_body", False)
            if total > self.max_body_bytes:
                await self._refuse(scope, receive, send, declared, already=total, more=more_body)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards only http.disconnect can come

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, declared, already: int, more: bool) -> None:
        drained = already
        while more and drained <= self.drain_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_body_bytes} bytes"
        await error_response(
            413,
            "body_too_large",
            f"request body is {size}; the limit is {self.max_body_bytes} bytes (send smaller batches)",
            headers={"Connection": "close"},
        )(scope, receive, send)


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
