"""The service's app and middleware in-process (no sockets): a tokenizer without special tokens, the
schema it publishes, the body limit's and body timeout's edge cases, the shutdown guard driven by hand,
and the CPU budget. The real-server tests are in test_serve*.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from harness.service_process import free_loopback_port
from service import FINGERPRINT_HEADER, ServeSettings, create_app, parse_args
from service.budget import WorkBudget, WorkCancelled
from service.client import TokenizerClient
from service.errors import ServiceError
from service.middleware import WORK_BUDGET_KEY, BodySizeLimit, RequestGuard
from service.settings import ServeLimits
from service.shutdown import DrainGate
from tokenizer import Tokenizer
from tokenizer.byte_order import BYTE_ORDER


@pytest.fixture(scope="module")
def bytes_only() -> Tokenizer:
    """256 byte tokens, no merges, no special tokens: the smallest valid tokenizer."""
    return Tokenizer({bytes([BYTE_ORDER[i]]): i for i in range(256)}, name="bytes-only")


@pytest.fixture(scope="module")
def app_client(bytes_only):
    settings = ServeSettings(tokenizer_path="unused.ljt.json", max_body_bytes=2048, max_batch=3)
    return TestClient(create_app(bytes_only, settings))


def test_tokenizer_without_specials(app_client, bytes_only):
    r = app_client.post("/v1/encode", json={"texts": ["hi", "é"]})
    assert r.status_code == 200
    assert r.json()["batch"] == [bytes_only.encode("hi"), bytes_only.encode("é")]
    assert r.headers[FINGERPRINT_HEADER] == bytes_only.fingerprint
    # No special tokens: "<|endoftext|>" is plain text and naming it as special is an error.
    assert app_client.post("/v1/count", json={"text": "<|endoftext|>"}).json()["count"] == 13
    r = app_client.post("/v1/encode", json={"text": "x", "allowed_special": ["<|endoftext|>"]})
    assert r.status_code == 422 and r.json()["error"] == "unknown_special"
    info = app_client.get("/v1/info").json()
    assert info["special_tokens"] == {} and info["eot_id"] is None and info["n_vocab"] == 256
    assert info["limits"] == {**ServeLimits().limits(), "max_body_bytes": 2048, "max_batch": 3}


def test_schema_states_the_limits(app_client):
    schemas = app_client.get("/openapi.json").json()["components"]["schemas"]
    texts = schemas["EncodeRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 3)
    ids = schemas["DecodeRequest"]["properties"]["ids"]["items"]
    assert ids["minimum"] == 0 and ids["exclusiveMaximum"] == 256
    assert schemas["EncodeRequest"]["additionalProperties"] is False
    assert {"required": ["text"]} in schemas["EncodeRequest"]["oneOf"]


def test_integral_float_ids_are_ids(app_client, bytes_only):
    ids = bytes_only.encode("ok")
    assert app_client.post("/v1/decode", json={"ids": [float(i) for i in ids]}).json()["text"] == "ok"
    assert app_client.post("/v1/decode", json={"ids": [1.5]}).status_code == 422


def test_body_limit_exact_boundary(app_client):
    envelope = b'{"text":""}'
    fits = b'{"text":"' + b"a" * (2048 - len(envelope)) + b'"}'
    assert len(fits) == 2048
    assert app_client.post("/v1/count", content=fits, headers={"Content-Type": "application/json"}).json()["count"] > 0
    over = fits[:-2] + b'a"}'
    r = app_client.post("/v1/count", content=over, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def _run_middleware(messages: list[dict], headers: list[tuple[bytes, bytes]], limit: int = 10):
    """Drive BodySizeLimit by hand: returns (what the inner app received, what was sent back)."""
    seen, sent = [], []
    queue = list(messages)

    async def inner(scope, receive, send):
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodySizeLimit(inner, max_body_bytes=limit)(scope, receive, send))
    return seen, sent


def test_middleware_reassembles_streamed_body_within_limit():
    chunks = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"67890", "more_body": False},
    ]
    seen, sent = _run_middleware(chunks, headers=[])
    assert seen == [{"type": "http.request", "body": b"1234567890", "more_body": False}]
    assert sent[0]["status"] == 200


def test_middleware_counts_streamed_bytes_without_content_length():
    chunks = [
        {"type": "http.request", "body": b"123456", "more_body": True},
        {"type": "http.request", "body": b"789012", "more_body": True},
        {"type": "http.request", "body": b"3", "more_body": False},
    ]
    seen, sent = _run_middleware(chunks, headers=[])
    assert seen == [] and sent[0]["status"] == 413  # the app never saw the body


def test_middleware_refuses_declared_oversize_and_bad_content_length():
    seen, sent = _run_middleware(
        [{"type": "http.request", "body": b"x" * 50, "more_body": False}], headers=[(b"content-length", b"50")]
    )
    assert seen == [] and sent[0]["status"] == 413
    seen, sent = _run_middleware([], headers=[(b"content-length", b"abc")])
    assert seen == [] and sent[0]["status"] == 400


def test_middleware_conflicting_or_combined_lengths_are_json_400():
    """What h11 refuses itself (tests/test_serve_raw_http.py) is refused by the middleware too, in JSON,
    for servers that pass such headers on; and Content-Length with Transfer-Encoding, which h11 passes."""
    for headers in (
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"5, 6")],
        [(b"content-length", b"-5")],
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
    ):
        seen, sent = _run_middleware([{"type": "http.request", "body": b"12345", "more_body": False}], headers)
        assert seen == [] and sent[0]["status"] == 400, headers
        assert (b"connection", b"close") in sent[0]["headers"]
        assert json.loads(sent[1]["body"])["error"] == "bad_content_length"


def test_middleware_times_out_a_stalled_body():
    """A body whose rest never comes: 408 body_timeout after body_timeout seconds, the app never runs."""
    seen, sent = [], []

    async def inner(scope, receive, send):
        seen.append(await receive())

    async def run():
        queue = [{"type": "http.request", "body": b"123", "more_body": True}]

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)  # the client stalls

        async def send(message):
            sent.append(message)

        middleware = BodySizeLimit(inner, max_body_bytes=100, body_timeout=0.2)
        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await asyncio.wait_for(middleware(scope, receive, send), 5)

    t0 = time.monotonic()
    asyncio.run(run())
    assert 0.15 < time.monotonic() - t0 < 2
    assert seen == [] and sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {
        "error": "body_timeout",
        "message": "the request body did not arrive within 0.2 s (body_timeout); got 3 bytes",
    }


def _guarded(app, gate: DrainGate):
    return RequestGuard(app, gate=gate, max_cpu_seconds=5)


def test_guard_answers_503_at_the_drain_timeout_and_cancels_the_work():
    """In progress at the signal, unfinished when shutdown_timeout is up: 503 shutting_down from the
    guard, the request's WorkBudget is cancelled, and uvicorn's shutdown is started."""
    budgets, sent, stopped = [], [], []

    async def slow_app(scope, receive, send):
        budgets.append(scope["state"][WORK_BUDGET_KEY])
        await asyncio.sleep(3600)

    async def run():
        gate = DrainGate(shutdown_timeout=0.2)
        gate.attach(asyncio.get_running_loop())

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        request = asyncio.ensure_future(_guarded(slow_app, gate)(scope, None, send))
        await asyncio.sleep(0.05)
        assert gate.in_flight == 1
        gate.signal(lambda: stopped.append(True))  # what the SIGTERM handler does
        await asyncio.wait_for(request, 5)
        assert gate.in_flight == 0 and stopped == [True]

    asyncio.run(run())
    assert sent[0]["status"] == 503 and json.loads(sent[1]["body"])["error"] == "shutting_down"
    assert budgets[0].cancelled
    with pytest.raises(WorkCancelled):
        budgets[0].check()


def test_guard_refuses_new_requests_while_draining_and_stops_when_idle():
    calls, sent, stopped = [], [], []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run():
        gate = DrainGate(shutdown_timeout=10)
        gate.attach(asyncio.get_running_loop())

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        guard = _guarded(app, gate)
        await guard({"type": "http", "path": "/before", "headers": []}, receive, send)
        gate.signal(lambda: stopped.append(True))
        await asyncio.sleep(0.01)
        assert stopped == [True]  # nothing in progress: uvicorn's shutdown starts at once
        await guard({"type": "http", "path": "/after", "headers": []}, receive, send)

    asyncio.run(run())
    assert calls == ["/before"]
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 503]


def test_guard_answers_503_when_uvicorn_cancels_the_request():
    """uvicorn cancels requests still running after its own timeout; without the guard its protocol
    then answers a plain-text 500."""
    sent = []

    async def slow_app(scope, receive, send):
        await asyncio.sleep(3600)

    async def run():
        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        request = asyncio.ensure_future(_guarded(slow_app, DrainGate(5))(scope, None, send))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(run())
    assert sent[0]["status"] == 503 and json.loads(sent[1]["body"])["error"] == "shutting_down"


def test_work_budget_counts_this_threads_cpu_time():
    budget = WorkBudget(max_cpu_seconds=0.05)
    budget.check()  # starts the clock
    time.sleep(0.2)  # sleeping is not CPU time
    budget.check()
    deadline = time.monotonic() + 10
    with pytest.raises(ServiceError) as err:
        while time.monotonic() < deadline:
            sum(range(10_000))
            budget.check("texts[2]")
    assert err.value.status == 413 and err.value.code == "too_expensive"
    assert err.value.message.startswith("texts[2]: this request needs more than 0.05 s of CPU time")


def test_limits_are_validated_and_reach_the_command_line(tmp_path):
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        ServeSettings(tokenizer_path="x", max_tokens=0)
    with pytest.raises(ValueError, match="body_timeout must be > 0"):
        ServeSettings(tokenizer_path="x", body_timeout=0)
    args = parse_args(["--tokenizer", "x", "--max-run-chars", "100", "--body-timeout", "2.5"])
    assert (args.max_run_chars, args.body_timeout, args.max_cpu_seconds) == (100, 2.5, ServeLimits().max_cpu_seconds)
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n\n[serve]\nmax_cpu_seconds = 3\nshutdown_timeout = 0.5\n')
    args = parse_args(["--config", str(recipe), "--shutdown-timeout", "2"])
    assert (args.max_cpu_seconds, args.shutdown_timeout) == (3, 2.0)


def test_client_argument_errors_and_unreachable_service():
    with pytest.raises(ValueError, match="http://host:port"):
        TokenizerClient("127.0.0.1:8000")
    client = TokenizerClient(f"http://127.0.0.1:{free_loopback_port()}", timeout=5)
    with pytest.raises(TypeError, match="not the string"):
        client.encode("x", allowed_special="<|endoftext|>")  # a str is not a set of names (only "all" is)
    with pytest.raises(ConnectionRefusedError):
        client.health()  # nothing listens there
