"""What the service answers to requests only a raw socket sends: stalled bodies, lying Content-Lengths.

A real `python -m service` process (one worker, body_timeout=1 s). Each case states exactly what the
client gets, as the README does: a JSON error where the application sees the request, and h11's own
plain-text 400 where the HTTP parser refuses it first (the service pins h11, service/cli.py).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from harness.service_process import ServiceProcess, raw_connection, read_raw_response

BODY_TIMEOUT = 1.0
HEAD = b"POST /v1/count HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
BODY = b'{"text": "ab"}'  # 14 bytes


@pytest.fixture(scope="module")
def service(gpt2_files):
    args = ["--gpt2", *map(str, gpt2_files), "--workers", "1", "--log-level", "warning",
            "--body-timeout", str(BODY_TIMEOUT)]
    with ServiceProcess(args) as svc:
        yield svc


def exchange(svc, data: bytes, timeout: float = 10.0):
    with raw_connection(svc) as sock:
        t0 = time.monotonic()
        sock.sendall(data)
        response = read_raw_response(sock, timeout=timeout)
        return response, time.monotonic() - t0


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error", "message"} and response.json()["error"] == code
    assert "x-tokenizer-fingerprint" in response.headers


def test_stalled_body_gets_408_and_is_closed(service):
    """Headers and half the body, then nothing: answered 408 body_timeout about body_timeout seconds
    after the request arrived, and the connection is closed (it was held for as long as the client
    liked: a slow client could pin connections and buffered bodies)."""
    response, seconds = exchange(service, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"text": "half a bo')
    assert_json_error(response, 408, "body_timeout")
    assert "19 bytes" in response.json()["message"]
    assert response.headers["connection"] == "close" and response.closed
    assert BODY_TIMEOUT - 0.1 < seconds < BODY_TIMEOUT + 3


def test_slow_but_complete_body_is_served(service):
    with raw_connection(service) as sock:
        sock.sendall(HEAD + b"Content-Length: 14\r\n\r\n")
        for i in range(0, len(BODY), 5):
            time.sleep(0.1)
            sock.sendall(BODY[i : i + 5])
        response = read_raw_response(sock)
    assert response.status == 200 and response.json()["count"] == 1 and not response.closed


def test_body_cut_short_by_the_client_gets_no_answer(service):
    """Content-Length larger than what is sent, then the client shuts its side: there is nobody to
    finish the request, so the connection is closed without an answer."""
    with raw_connection(service) as sock:
        sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + BODY)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        assert sock.recv(1000) == b""


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: abc",
        b"Content-Length: -14",
        b"Content-Length: +14",
        b"Content-Length: 14, 15",
        b"Content-Length: 14\r\nContent-Length: 15",
        b"Content-Length: 100000000000000000000",  # 21 digits
    ],
    ids=["non-numeric", "negative", "plus-sign", "list", "two-conflicting", "21-digits"],
)
def test_content_length_the_parser_refuses(service, header):
    """h11 refuses these before the application sees the request: its plain-text 400, exactly this,
    then the connection is closed (no JSON, no fingerprint header)."""
    response, _ = exchange(service, HEAD + header + b"\r\n\r\n" + BODY)
    assert response.status == 400 and response.body == b"Invalid HTTP request received."
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["connection"] == "close" and response.closed
    assert "x-tokenizer-fingerprint" not in response.headers


def test_content_length_the_application_refuses(service):
    # 20 digits is the most h11 takes: a declared length over the limit is refused before any body is read.
    response, _ = exchange(service, HEAD + b"Content-Length: 99999999999999999999\r\n\r\n" + BODY)
    assert_json_error(response, 413, "body_too_large")
    assert response.closed
    # Transfer-Encoding wins over Content-Length in h11; both at once is a classic smuggling pattern.
    chunked = b"e\r\n" + BODY + b"\r\n0\r\n\r\n"
    response, _ = exchange(service, HEAD + b"Content-Length: 14\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert_json_error(response, 400, "bad_content_length")
    assert "Transfer-Encoding" in response.json()["message"] and response.closed


def test_repeated_equal_content_length_is_one(service):
    response, _ = exchange(service, HEAD + b"Content-Length: 14\r\nContent-Length: 14\r\n\r\n" + BODY)
    assert response.status == 200 and response.json()["count"] == 1


def test_content_length_shorter_than_the_body(service):
    """The body is what Content-Length says (here a cut JSON string: 400 malformed_json); the bytes after
    it are read as the start of the next request on the connection."""
    with raw_connection(service) as sock:
        sock.sendall(HEAD + b"Content-Length: 10\r\n\r\n" + BODY)
        response = read_raw_response(sock, close_wait=0.2)
        assert_json_error(response, 400, "malformed_json")
        sock.sendall(b"\r\n\r\n")  # 'ab"}\r\n\r\n' is not a request line
        response = read_raw_response(sock)
        assert response.status == 400 and response.body == b"Invalid HTTP request received." and response.closed


def test_service_still_serves(service):
    response, _ = exchange(service, HEAD + b"Content-Length: 14\r\n\r\n" + BODY)
    assert response.status == 200 and json.loads(response.body)["count"] == 1
