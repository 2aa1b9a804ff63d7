"""The service's app and middleware in-process (no sockets): a tokenizer without special tokens, the
schema it publishes, and the body limit's edge cases. The real-server tests are in test_serve.py."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from harness.service_process import free_loopback_port
from service import FINGERPRINT_HEADER, ServeSettings, create_app
from service.client import TokenizerClient
from service.middleware import BodySizeLimit
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
    assert info["limits"] == {"max_body_bytes": 2048, "max_batch": 3}


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


def test_client_argument_errors_and_unreachable_service():
    with pytest.raises(ValueError, match="http://host:port"):
        TokenizerClient("127.0.0.1:8000")
    client = TokenizerClient(f"http://127.0.0.1:{free_loopback_port()}", timeout=5)
    with pytest.raises(TypeError, match="not the string"):
        client.encode("x", allowed_special="<|endoftext|>")  # a str is not a set of names (only "all" is)
    with pytest.raises(ConnectionRefusedError):
        client.health()  # nothing listens there
