"""Tokenisation service: one tokenizer file served over HTTP/JSON by several worker processes.

Other programs (notebooks, data tools in other languages, an inference server) must tokenise with
*exactly* the tokenizer the shards were made with. So every answer carries the tokenizer's
fingerprint (in the body and in the `X-Tokenizer-Fingerprint` header) for the caller to compare
with a shard manifest's `tokenizer_fingerprint`.

    python -m tokenizer.serve --tokenizer artifacts/demo/tokenizer/tokenizer.ljt.json --workers 2
    python -m tokenizer.serve --gpt2 encoder.json vocab.bpe            # GPT-2's r50k_base

Endpoints (JSON, versioned under /v1; schema at /openapi.json, docs at /docs):
    POST /v1/encode   {"text": str} | {"texts": [str]}, "allowed_special", "disallowed_special"
                      -> {"ids": [int]} | {"batch": [[int]]}
    POST /v1/decode   {"ids": [int]} | {"batch": [[int]]}, "errors" -> {"text": str} | {"texts": [str]}
    POST /v1/count    same body as /v1/encode -> {"count": int} | {"counts": [int], "total": int}
    GET  /v1/info     name, n_vocab, fingerprint, special tokens, pattern, limits
    GET  /healthz     liveness (and which worker process answered)

Design notes
- Encoding is CPU-bound pure Python, so throughput comes from *processes*: uvicorn's supervisor
  forks `--workers` processes sharing one listening socket. Each worker builds the app through the
  factory `app_from_env`, which loads the tokenizer once per process from settings the parent put
  into an environment variable (a worker is a fresh interpreter; env vars are how it learns its job).
- Endpoints are plain `def` functions: Starlette runs them in a thread pool, so one long encode does
  not stall the event loop (health checks and new connections are still accepted meanwhile).
- Bad input is the caller's fault and answered 4xx with {"error": code, "message": ...}; nothing the
  client sends may produce a 500 or kill a worker. The request-size limit is an ASGI middleware that
  buffers at most `max_body_bytes` (it checks Content-Length *and* counts streamed bytes, since a
  chunked upload has no Content-Length).
- Binds to 127.0.0.1 unless --host says otherwise: a tokenizer service has no authentication.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the request models that
# create_app defines locally, which it cannot do from postponed (string) annotations.
import argparse
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

API_VERSION = "v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
DEFAULT_MAX_BATCH = 1024
FINGERPRINT_HEADER = "X-Tokenizer-Fingerprint"
SETTINGS_ENV = "LJT_SERVE_SETTINGS"  # JSON-encoded ServeSettings handed from the parent to each worker
DISALLOWED_SPECIAL_PREFIX = "Encountered text corresponding to disallowed special token"
# Error handlers the `errors=` argument of decode may use: all of them keep the result valid UTF-8,
# which a JSON response needs ("surrogateescape" would produce lone surrogates JSON cannot carry).
DecodeErrors = Literal["replace", "strict", "ignore", "backslashreplace"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------------------------------
# Settings: what to serve and the limits. One frozen record, serialisable into an env var.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    tokenizer_path: str | None = None  # our own tokenizer.ljt.json
    gpt2_encoder_json: str | None = None  # or GPT-2's encoder.json + vocab.bpe
    gpt2_vocab_bpe: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        gpt2 = (self.gpt2_encoder_json, self.gpt2_vocab_bpe)
        if (self.tokenizer_path is None) == (gpt2 == (None, None)):
            raise ValueError("serve settings: give exactly one of tokenizer_path or the GPT-2 file pair")
        if (None in gpt2) and gpt2 != (None, None):
            raise ValueError("serve settings: the GPT-2 tokenizer needs both encoder.json and vocab.bpe")
        if self.max_body_bytes < 1024:
            raise ValueError(f"serve settings: max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_batch < 1:
            raise ValueError(f"serve settings: max_batch must be >= 1, got {self.max_batch}")

    def load_tokenizer(self):
        """Load the tokenizer these settings name; a missing file is a clear error naming it."""
        from tokenizer import Tokenizer

        paths = [self.tokenizer_path] if self.tokenizer_path else [self.gpt2_encoder_json, self.gpt2_vocab_bpe]
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"tokenizer file not found: {p}")
        if self.tokenizer_path:
            return Tokenizer.load(self.tokenizer_path)
        return Tokenizer.from_gpt2_files(self.gpt2_encoder_json, self.gpt2_vocab_bpe)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> "ServeSettings":
        raw = (os.environ if environ is None else environ).get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `python -m tokenizer.serve`")
        return cls(**json.loads(raw))


# --------------------------------------------------------------------------------------------------
# Errors: one JSON shape for every 4xx, so clients in any language parse one thing.
# --------------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. malformed_json, disallowed_special, unknown_id")
    message: str = Field(description="what was wrong, naming the field / item / id")


class ServiceError(Exception):
    """A request the service refuses; becomes {"error": code, "message": message} with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON or Content-Length"},
    413: {"model": ErrorBody, "description": "request body larger than the configured limit"},
    415: {"model": ErrorBody, "description": "body is not application/json"},
    422: {"model": ErrorBody, "description": "well-formed JSON the tokenizer cannot accept"},
}


def _location(loc: tuple | list) -> str:
    """('body', 'texts', 3) -> 'texts[3]' : the field path a client would write."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _describe_validation_error(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "invalid JSON")
            return 400, "malformed_json", f"request body is not valid JSON: {detail} at character {e['loc'][-1]}"
    parts = []
    for e in errors[:5]:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{_location(e.get('loc', ()))}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid_request", "; ".join(parts) + more


# --------------------------------------------------------------------------------------------------
# Body-size limit as plain ASGI middleware (framework-independent, runs before any parsing).
# --------------------------------------------------------------------------------------------------


class BodySizeLimit:
    """Refuse request bodies over `max_body_bytes` with 413 before the app parses anything.

    A declared Content-Length over the limit is refused without reading the body; a body without one
    (chunked transfer) is counted as it streams in. Accepted bodies are buffered (at most the limit,
    which the app would hold anyway to parse the JSON) and replayed to the app as one message.
    Before answering 413 we read and discard what the client is still sending (up to `drain_bytes`):
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
                    await error_response(400, "bad_content_length", f"invalid Content-Length {value!r}")(
                        scope, receive, send
                    )
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


# --------------------------------------------------------------------------------------------------
# The application.
# --------------------------------------------------------------------------------------------------

SpecialSet = list[str] | Literal["all"]


def _integral_float_to_int(value: Any) -> Any:
    """JSON has one number type and JSON Schema counts 5.0 as an integer (some encoders write ints of
    a double that way), so an integral float is an id; 5.5, "5" and true stay errors (strict int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def create_app(tok, settings: ServeSettings | None = None) -> FastAPI:
    """Build the FastAPI app serving `tok` (a tokenizer.Tokenizer). Limits come from `settings`."""
    max_body_bytes = settings.max_body_bytes if settings else DEFAULT_MAX_BODY_BYTES
    max_batch = settings.max_batch if settings else DEFAULT_MAX_BATCH
    fingerprint: str = tok.fingerprint
    special_names = set(tok.special_tokens)
    # strict: no "1" -> 1 or 1.0 -> 1 coercion; extra=forbid: a misspelt field name is an error, not ignored.

    # Request/response models live inside the factory so that the schema states this tokenizer's
    # facts (batch limit as maxItems, the special-token names, the id range), where schema-driven
    # clients and test generators can see them. "Exactly one of text/texts" is validated in Python
    # (for a clear message) and also stated as a JSON-Schema oneOf.
    special_name_schema: dict[str, Any] = (
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string", "enum": sorted(special_names)}},
                {"type": "string", "enum": ["all"]},
            ]
        }
        if special_names
        else {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "string", "enum": ["all"]}]}
    )
    TokenId = Annotated[int, Field(ge=0, lt=tok.n_vocab), BeforeValidator(_integral_float_to_int)]

    class EncodeRequest(BaseModel):
        model_config = ConfigDict(
            strict=True, extra="forbid", json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
        )
        # Typed without `| None`: leaving a field out means "not given", an explicit null is an error
        # (so the schema and the validation agree on what is valid).
        text: str = Field(None, description="one text; give either `text` or `texts`")
        texts: list[str] = Field(None, min_length=1, max_length=max_batch, description="a batch of texts")
        allowed_special: SpecialSet = Field(
            default_factory=list,
            json_schema_extra=special_name_schema,
            description='special tokens to encode as such: a list of names or "all"',
        )
        disallowed_special: SpecialSet = Field(
            "all",
            json_schema_extra=special_name_schema,
            description="specials whose text is an error (tiktoken semantics); [] encodes them as plain text",
        )

        @model_validator(mode="after")
        def one_of_text_or_texts(self):
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of `text` (a string) or `texts` (a list of strings)")
            return self

    class DecodeRequest(BaseModel):
        model_config = ConfigDict(
            strict=True, extra="forbid", json_schema_extra={"oneOf": [{"required": ["ids"]}, {"required": ["batch"]}]}
        )
        ids: list[TokenId] = Field(None, description="one token id list; give either `ids` or `batch`")
        batch: list[list[TokenId]] = Field(None, min_length=1, max_length=max_batch, description="id lists")
        errors: DecodeErrors = Field("replace", description="how invalid UTF-8 is handled (bytes.decode)")

        @model_validator(mode="after")
        def one_of_ids_or_batch(self):
            if (self.ids is None) == (self.batch is None):
                raise ValueError("give exactly one of `ids` (a list of ints) or `batch` (a list of id lists)")
            return self

    class EncodeResponse(BaseModel):
        fingerprint: str
        ids: list[int] | None = Field(None, description="present when the request had `text`")
        batch: list[list[int]] | None = Field(None, description="present when the request had `texts`")

    class DecodeResponse(BaseModel):
        fingerprint: str
        text: str | None = Field(None, description="present when the request had `ids`")
        texts: list[str] | None = Field(None, description="present when the request had `batch`")

    class CountResponse(BaseModel):
        fingerprint: str
        count: int | None = Field(None, description="present when the request had `text`")
        counts: list[int] | None = Field(None, description="present when the request had `texts`")
        total: int

    class Limits(BaseModel):
        max_body_bytes: int
        max_batch: int

    class InfoResponse(BaseModel):
        name: str
        fingerprint: str
        n_vocab: int
        eot_id: int | None
        special_tokens: dict[str, int]
        pattern: str
        limits: Limits
        api_version: str

    class HealthResponse(BaseModel):
        status: Literal["ok"]
        fingerprint: str
        worker_pid: int

    app = FastAPI(
        title="LLM Journey tokenisation service",
        version=API_VERSION,
        description=f"Tokenizer `{tok.name}` (fingerprint {fingerprint}). Errors are JSON: "
        '{"error": code, "message": text}.',
    )
    # add_middleware wraps outermost last: the header is added even to the middleware's own 413s.
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(ResponseHeader, name=FINGERPRINT_HEADER, value=fingerprint)

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and ctype.split(";")[0].strip().lower() != "application/json":
            return error_response(
                415,
                "unsupported_media_type",
                f"send JSON with Content-Type: application/json, not {ctype or 'no Content-Type'}",
            )
        status, code, message = _describe_validation_error(exc)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        # 404/405 and FastAPI's own "error parsing the body" 400 in the same JSON shape as ours.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    def check_special_names(field: str, value: SpecialSet) -> None:
        if value == "all":
            return
        unknown = sorted(set(value) - special_names)
        if unknown:
            raise ServiceError(
                422,
                "unknown_special",
                f"{field}: {unknown} are not special tokens of this tokenizer (it has {sorted(special_names)})",
            )

    def encode_all(req: EncodeRequest) -> list[list[int]]:
        check_special_names("allowed_special", req.allowed_special)
        check_special_names("disallowed_special", req.disallowed_special)
        allowed = req.allowed_special if req.allowed_special == "all" else set(req.allowed_special)
        disallowed = req.disallowed_special if req.disallowed_special == "all" else set(req.disallowed_special)
        texts = [req.text] if req.text is not None else req.texts
        out = []
        for i, text in enumerate(texts):
            where = "text" if req.text is not None else f"texts[{i}]"
            try:
                out.append(tok.encode(text, allowed_special=allowed, disallowed_special=disallowed))
            except ValueError as e:  # includes UnicodeEncodeError (lone surrogates from JSON "\ud800")
                code = "disallowed_special" if str(e).startswith(DISALLOWED_SPECIAL_PREFIX) else "invalid_text"
                raise ServiceError(422, code, f"{where}: {e}") from e
        return out

    @app.post(
        f"/{API_VERSION}/encode",
        response_model=EncodeResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Encode one text or a batch into token ids",
    )
    def encode(req: EncodeRequest):
        ids = encode_all(req)
        if req.text is not None:
            return {"fingerprint": fingerprint, "ids": ids[0]}
        return {"fingerprint": fingerprint, "batch": ids}

    @app.post(
        f"/{API_VERSION}/count",
        response_model=CountResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Count tokens of one text or a batch",
    )
    def count(req: EncodeRequest):
        counts = [len(ids) for ids in encode_all(req)]
        if req.text is not None:
            return {"fingerprint": fingerprint, "count": counts[0], "total": counts[0]}
        return {"fingerprint": fingerprint, "counts": counts, "total": sum(counts)}

    @app.post(
        f"/{API_VERSION}/decode",
        response_model=DecodeResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Decode one id list or a batch into text",
    )
    def decode(req: DecodeRequest):
        batch = [req.ids] if req.ids is not None else req.batch
        texts = []
        for i, ids in enumerate(batch):
            where = "ids" if req.ids is not None else f"batch[{i}]"
            try:
                texts.append(tok.decode(ids, errors=req.errors))
            except UnicodeDecodeError as e:
                raise ServiceError(
                    422,
                    "invalid_utf8",
                    f"{where}: decoded bytes are not UTF-8 ({e}); use errors='replace' to substitute U+FFFD",
                ) from e
            except (ValueError, KeyError, IndexError, OverflowError) as e:
                raise ServiceError(422, "unknown_id", f"{where}: {e}") from e
        if req.ids is not None:
            return {"fingerprint": fingerprint, "text": texts[0]}
        return {"fingerprint": fingerprint, "texts": texts}

    info_body = {
        "name": tok.name,
        "fingerprint": fingerprint,
        "n_vocab": tok.n_vocab,
        "eot_id": tok.eot_id,
        "special_tokens": dict(tok.special_tokens),
        "pattern": tok.pattern,
        "limits": {"max_body_bytes": max_body_bytes, "max_batch": max_batch},
        "api_version": API_VERSION,
    }

    @app.get(f"/{API_VERSION}/info", response_model=InfoResponse, summary="What this service tokenises with")
    def info():
        return info_body

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness; names the worker process")
    def healthz():
        return {"status": "ok", "fingerprint": fingerprint, "worker_pid": os.getpid()}

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (`tokenizer.serve:app_from_env`): each worker process loads the tokenizer once."""
    settings = ServeSettings.from_env()
    return create_app(settings.load_tokenizer(), settings)


# --------------------------------------------------------------------------------------------------
# Running the service as a child process (tests, benchmarks, notebooks).
# --------------------------------------------------------------------------------------------------


def free_loopback_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it; tiny race until the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return s.getsockname()[1]


def _get_json(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


class ServiceProcess:
    """`python -m tokenizer.serve ARGS` on a free loopback port, as a child process.

        with ServiceProcess(["--tokenizer", path, "--workers", "2"]) as svc:
            TokenizerClient(svc.url).encode("hello")

    Exiting the block sends SIGTERM (the graceful shutdown a service manager would use).
    The server's log goes to a temporary file (a pipe nobody reads could fill up and block it).
    """

    def __init__(
        self,
        args: list[str],
        *,
        port: int | None = None,
        ready_timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host, self.port = DEFAULT_HOST, port or free_loopback_port()
        self.url = f"http://{self.host}:{self.port}"
        self.args, self.ready_timeout, self.env = list(args), ready_timeout, env
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "ServiceProcess":
        self._log = tempfile.TemporaryFile(mode="w+b")
        cmd = [sys.executable, "-m", "tokenizer.serve", *self.args, "--host", self.host, "--port", str(self.port)]
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})}
        )
        self.wait_ready()
        return self

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait_ready(self) -> dict[str, Any]:
        """Poll /healthz until it answers 200; fail early (with the server's log) if the process dies."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tokenizer.serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, body = _get_json(self.host, self.port, "/healthz")
                if status == 200:
                    return body
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tokenizer.serve not ready after {self.ready_timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def worker_pids(self, expected: int, timeout: float = 20.0) -> set[int]:
        """Worker pids seen answering /healthz on fresh connections, until `expected` are seen (or timeout).
        A worker answers only once its app (and tokenizer) is loaded, so this doubles as "all ready"."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            try:
                status, body = _get_json(self.host, self.port, "/healthz")
                if status == 200:
                    seen.add(body["worker_pid"])
            except (OSError, ValueError, http.client.HTTPException):
                time.sleep(0.05)
        return seen

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the graceful exit; SIGKILL only if it hangs. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()


# --------------------------------------------------------------------------------------------------
# Command line: python -m tokenizer.serve
# --------------------------------------------------------------------------------------------------

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


# The recipe's optional [serve] section: these keys, these types (CLI flags override them).
RECIPE_SERVE_DEFAULTS: dict[str, Any] = {
    "host": DEFAULT_HOST,
    "port": DEFAULT_PORT,
    "workers": 2,
    "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
    "max_batch": DEFAULT_MAX_BATCH,
    "tokenizer": "",  # "" = the recipe's own tokenizer stage output
}


def recipe_serve_options(config: str) -> dict[str, Any]:
    """Options from a recipe: its [serve] section over the defaults, and by default the tokenizer
    its tokenizer stage wrote (artifacts/<recipe>/tokenizer/tokenizer.ljt.json)."""
    from pipelines.recipe import load_recipe

    recipe = load_recipe(config)
    section = recipe.section("serve")
    for key, value in section.items():
        if key not in RECIPE_SERVE_DEFAULTS:
            raise ValueError(f"{config} [serve]: unknown key {key!r} (known keys: {', '.join(RECIPE_SERVE_DEFAULTS)})")
        expected = type(RECIPE_SERVE_DEFAULTS[key])
        if type(value) is not expected:
            raise ValueError(f"{config} [serve]: key {key!r} must be {expected.__name__}, got {value!r}")
    options = {**RECIPE_SERVE_DEFAULTS, **section}
    if not options["tokenizer"]:
        options["tokenizer"] = str(recipe.stage_dir("tokenizer") / "tokenizer.ljt.json")
    return options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags > the recipe's [serve] section (with --config) > built-in defaults."""
    p = argparse.ArgumentParser(prog="python -m tokenizer.serve", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--tokenizer", metavar="PATH", help="tokenizer.ljt.json written by the tokenizer stage")
    src.add_argument("--gpt2", nargs=2, metavar=("ENCODER_JSON", "VOCAB_BPE"), help="GPT-2 r50k_base files")
    p.add_argument("--config", metavar="RECIPE", help="recipe TOML: its [serve] section and its tokenizer")
    p.add_argument("--host", help=f"bind address (default {DEFAULT_HOST}: the service has no authentication)")
    p.add_argument("--port", type=int, help=f"default {DEFAULT_PORT}")
    p.add_argument("--workers", type=int, help="worker processes, default 2 (encoding is CPU-bound)")
    p.add_argument("--max-body-bytes", type=int, help=f"413 above this (default {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--max-batch", type=int, help=f"most texts / id lists per request (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = p.parse_args(argv)
    if args.config:
        try:
            base = recipe_serve_options(args.config)
        except ValueError as e:  # RecipeError is a ValueError
            p.error(str(e))
    else:
        base = dict(RECIPE_SERVE_DEFAULTS)
        if not (args.tokenizer or args.gpt2):
            p.error("say what to serve: --tokenizer PATH, --gpt2 ENCODER_JSON VOCAB_BPE, or --config RECIPE")
    for key in ("host", "port", "workers", "max_body_bytes", "max_batch"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if not (args.tokenizer or args.gpt2):
        args.tokenizer = base["tokenizer"]
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in 0..65535, got {args.port}")
    return args


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; both shut down gracefully (in-flight requests finish) and exit 0."""
    import uvicorn

    args = parse_args(argv)
    try:
        settings = ServeSettings(
            tokenizer_path=args.tokenizer,
            gpt2_encoder_json=args.gpt2[0] if args.gpt2 else None,
            gpt2_vocab_bpe=args.gpt2[1] if args.gpt2 else None,
            max_body_bytes=args.max_body_bytes,
            max_batch=args.max_batch,
        )
        # Load once here, before any worker starts: a bad file fails fast with its name, instead of
        # every worker dying at startup one after another.
        tok = settings.load_tokenizer()
    except (OSError, ValueError) as e:
        print(f"tokenizer.serve: {e}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK_HOSTS:
        print(
            f"tokenizer.serve: WARNING binding {args.host}: reachable beyond this machine, no authentication",
            file=sys.stderr,
        )
    print(
        f"tokenizer.serve: {tok.name} n_vocab={tok.n_vocab} fingerprint={tok.fingerprint[:16]}... "
        f"on http://{args.host}:{args.port} with {args.workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to die "by signal";
    # a handler that exits 0 turns that into the conventional clean exit for a service manager.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    if args.workers == 1:
        uvicorn.run(create_app(tok, settings), **common)  # reuse the tokenizer we just loaded
    else:
        from uvicorn.supervisors import Multiprocess

        os.environ[SETTINGS_ENV] = settings.to_env()  # inherited by the spawned worker processes
        config = uvicorn.Config("tokenizer.serve:app_from_env", factory=True, workers=args.workers, **common)
        # What uvicorn.run(workers=N) does, plus one socket option. The parent binds the socket that
        # all workers accept on; bound that way its protocol number is 0, so asyncio does not switch
        # off Nagle's algorithm on accepted connections as it does for sockets it creates itself.
        # Then a response written as headers + body waits for the client's delayed ACK: 40 ms per
        # request. TCP_NODELAY on the listening socket is inherited by every accepted connection.
        sock = config.bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Multiprocess(config, sockets=[sock]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
