"""Python client for the tokenisation service (service/), stdlib only.

`TokenizerClient(url)` has the same `encode` / `decode` signatures as `tokenizer.Tokenizer`, so code
written against a local tokenizer can be pointed at the service instead:

    from contract.shard_format import ShardReader
    from service.client import TokenizerClient
    shards = ShardReader("artifacts/demo/shards")   # fingerprint: the shard manifest's tokenizer.fingerprint
    tok = TokenizerClient("http://127.0.0.1:8000", expect_fingerprint=shards.tokenizer_fingerprint)
    ids = tok.encode("hello world")            # the ids the shards' tokenizer gives, as a list of ints
    tok.decode(ids)                            # 'hello world'

Errors the service reports for bad input (disallowed special token, unknown id, ...) raise
`TokenizerServiceError`, a ValueError, exactly where the in-process Tokenizer raises ValueError.

Why http.client and not urllib: urllib opens a new TCP connection per request; a persistent
keep-alive connection roughly halves the latency of small requests. Connections are per thread
(http.client connections are not thread-safe), so one client can be shared by a thread pool.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

API = "/v1"
FINGERPRINT_HEADER = "X-Tokenizer-Fingerprint"


class _NoDelayHTTPConnection(http.client.HTTPConnection):
    """http.client writes the headers and the body with two send() calls. With Nagle's algorithm on,
    a small body segment waits for the ACK of the headers, which the server may delay by up to 40 ms.
    TCP_NODELAY sends it at once (the service sets the same option on its side, see service/cli.py)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TokenizerServiceError(ValueError):
    """The service refused a request (4xx) or answered unexpectedly; `.status`, `.code`, `.message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.status, self.code, self.message = status, code, message


class FingerprintMismatch(RuntimeError):
    """The service tokenises with a different tokenizer than the caller expects."""


def _dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8. Non-ASCII text stays as is (smaller than \\u escapes), except when a
    string holds a lone surrogate, which UTF-8 cannot carry: then everything is \\u-escaped, and the
    service sees the same str (and tokenises it like the in-process Tokenizer does)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _special_arg(value: Any) -> str | list[str]:
    """Python-side allowed/disallowed_special (a set, "all", or ()) -> the JSON the service takes."""
    if value == "all":
        return "all"
    if isinstance(value, str):
        raise TypeError(f'special token sets must be "all" or a collection of names, not the string {value!r}')
    return sorted(value)


class TokenizerClient:
    """A Tokenizer look-alike whose work is done by the service at `url`.

    encode / encode_ordinary / encode_batch / decode take the arguments Tokenizer's do; count,
    decode_batch, info and health are service extras. `expect_fingerprint` makes every call check
    the X-Tokenizer-Fingerprint header, so a client cannot silently talk to a different tokenizer
    (FingerprintMismatch). Safe to share between threads.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", *, timeout: float = 60.0, expect_fingerprint: str | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"TokenizerClient: url must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.expect_fingerprint = expect_fingerprint
        self._local = threading.local()
        self._info: dict[str, Any] | None = None

    # ---- transport ---------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = _NoDelayHTTPSConnection if self._scheme == "https" else _NoDelayHTTPConnection
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads' clients are collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> TokenizerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        body = None if payload is None else _dumps(payload)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        # Every endpoint is free of side effects, so one retry on a connection the server closed
        # while it sat idle in keep-alive is safe.
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()  # e.g. a timeout mid-response: this connection's state is unknown now
                raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            data = json.loads(raw)
        except ValueError:
            raise TokenizerServiceError(resp.status, "bad_response", raw[:200].decode("utf-8", "replace")) from None
        if resp.status >= 400:
            if isinstance(data, dict) and "error" in data:
                raise TokenizerServiceError(resp.status, str(data["error"]), str(data.get("message", "")))
            raise TokenizerServiceError(resp.status, "http_error", json.dumps(data)[:200])
        fp = resp.getheader(FINGERPRINT_HEADER)
        if self.expect_fingerprint is not None and fp != self.expect_fingerprint:
            raise FingerprintMismatch(f"{self.url} serves tokenizer {fp}, expected {self.expect_fingerprint}")
        return data

    # ---- service metadata ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def info(self, refresh: bool = False) -> dict[str, Any]:
        if self._info is None or refresh:
            self._info = self._request("GET", API + "/info")
        return self._info

    @property
    def fingerprint(self) -> str:
        return self.info()["fingerprint"]

    @property
    def n_vocab(self) -> int:
        return self.info()["n_vocab"]

    @property
    def eot_id(self) -> int | None:
        return self.info()["eot_id"]

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.info()["special_tokens"])

    @property
    def name(self) -> str:
        return self.info()["name"]

    # ---- Tokenizer-compatible API --------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
    ) -> list[int]:
        payload = {
            "text": text,
            "allowed_special": _special_arg(allowed_special),
            "disallowed_special": _special_arg(disallowed_special),
        }
        return self._request("POST", API + "/encode", payload)["ids"]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode with special-token text treated as ordinary text (nothing allowed, nothing disallowed)."""
        return self.encode(text, allowed_special=(), disallowed_special=())

    def encode_batch(
        self,
        texts: Sequence[str],
        workers: int | None = None,
        *,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
    ) -> list[list[int]]:
        """Encode many texts, split into requests that respect the service's limits (GET /v1/info).

        `workers` plays the role it has in Tokenizer.encode_batch, the degree of parallelism: up to
        that many requests are in flight at once (each on its own keep-alive connection), so that
        that many service worker processes encode at the same time. None or 1: one at a time.
        Results come back in input order either way."""
        allowed, disallowed = _special_arg(allowed_special), _special_arg(disallowed_special)

        def send(texts: list[str]) -> list[list[int]]:
            payload = {"texts": texts, "allowed_special": allowed, "disallowed_special": disallowed}
            return self._request("POST", API + "/encode", payload)["batch"]

        def encode_chunk(chunk: list[str]) -> list[list[int]]:
            return self._split_on_refusal(chunk, send)

        chunks = list(self._chunks(texts))
        if workers is None or workers <= 1 or len(chunks) <= 1:
            results = [encode_chunk(chunk) for chunk in chunks]
        else:
            with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
                results = list(pool.map(encode_chunk, chunks))
        return [ids for batch in results for ids in batch]

    def count(
        self,
        text: str,
        *,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
    ) -> int:
        payload = {
            "text": text,
            "allowed_special": _special_arg(allowed_special),
            "disallowed_special": _special_arg(disallowed_special),
        }
        return self._request("POST", API + "/count", payload)["count"]

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        return self._request("POST", API + "/decode", {"ids": list(ids), "errors": errors})["text"]

    def decode_batch(self, batch: Sequence[Sequence[int]], errors: str = "replace") -> list[str]:
        out: list[str] = []
        def send(id_lists: list[list[int]]) -> list[str]:
            return self._request("POST", API + "/decode", {"batch": id_lists, "errors": errors})["texts"]

        for chunk in self._chunks([list(ids) for ids in batch]):
            out.extend(self._split_on_refusal(chunk, send))
        return out

    # What the service refuses a batch for although each half might pass: its output or its CPU time
    # (limits a client cannot work out in advance, unlike the body size and the token count).
    _SPLITTABLE = frozenset({"decoded_too_large", "too_expensive"})

    def _split_on_refusal(self, chunk: list[Any], send: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """send(chunk), and if the service refuses it for a _SPLITTABLE reason, each half on its own
        (recursively; a single item the service refuses raises its error)."""
        try:
            return send(chunk)
        except TokenizerServiceError as e:
            if e.code not in self._SPLITTABLE or len(chunk) < 2:
                raise
        half = len(chunk) // 2
        return self._split_on_refusal(chunk[:half], send) + self._split_on_refusal(chunk[half:], send)

    def _chunks(self, items: Sequence[Any]) -> Iterable[list[Any]]:
        """Greedy batches of at most max_batch items whose JSON fits the body limit (sizes measured
        with the same serialisation the request uses; 4 KiB left for the envelope) and max_tokens: a
        text has at most as many tokens as UTF-8 bytes, and its JSON has at least as many bytes, so the
        JSON size bounds the tokens of a text as well as the number of ids of an id list. An item too
        large on its own still goes alone, and gets the service's 413."""
        limits = self.info()["limits"]
        max_items = limits["max_batch"]
        budget = min(limits["max_body_bytes"] - 4096, limits.get("max_tokens", limits["max_body_bytes"]))
        chunk: list[Any] = []
        size = 0
        for item in items:
            n = len(_dumps(item)) + 1  # + the comma between items
            if chunk and (len(chunk) >= max_items or size + n > budget):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            yield chunk
