"""The FastAPI application: endpoints, request/response models, and error mapping.

`create_app(tokenizer, settings)` builds an app around one loaded Tokenizer; `app_from_env` is the
factory each uvicorn worker process calls (it loads the tokenizer named by the settings the parent
put into the environment, once per process).

Endpoints are plain `def` functions: Starlette runs them in a thread pool, so one long encode does
not stall the event loop (health checks and new connections are still accepted meanwhile). Each one
does its work in steps under the request's WorkBudget (service/budget.py), which the middleware
(service/middleware.py) gives every request, and answers with JSON built from the id arrays directly
(see _json_ids): FastAPI's generic response path would validate and copy a million-id list several
times over.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the request models that
# create_app defines locally, which it cannot do from postponed (string) annotations.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .budget import BoundedEncoder, TextRefused, WorkBudget, WorkCancelled, decode_all
from .errors import ERROR_RESPONSES, ServiceError, describe_validation_error, error_response
from .middleware import WORK_BUDGET_KEY, BodySizeLimit, RequestGuard, ResponseHeader
from .pages import add_pages
from .settings import ServeLimits, ServeSettings
from .shutdown import DrainGate, chain_signal_handlers

API_VERSION = "v1"
FINGERPRINT_HEADER = "X-Tokenizer-Fingerprint"
DISALLOWED_SPECIAL_PREFIX = "Encountered text corresponding to disallowed special token"
# Error handlers the `errors=` argument of decode may use: all of them keep the result valid UTF-8,
# which a JSON response needs ("surrogateescape" would produce lone surrogates JSON cannot carry).
DecodeErrors = Literal["replace", "strict", "ignore", "backslashreplace"]

SpecialSet = list[str] | Literal["all"]


def _integral_float_to_int(value: Any) -> Any:
    """JSON has one number type and JSON Schema counts 5.0 as an integer (some encoders write ints of
    a double that way), so an integral float is an id; 5.5, "5" and true stay errors (strict int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Ids per conversion in _json_ids: a list of this many Python ints at a time, never one of millions.
JSON_IDS_STEP = 64 * 1024


def _json_ids(ids) -> bytes:
    """The JSON list of an array of ids, converted a slice at a time (pydantic-core's serializer, the
    one FastAPI's own response path uses, is ~3x faster than json.dumps)."""
    if len(ids) <= JSON_IDS_STEP:
        return to_json(ids.tolist())
    parts = (to_json(ids[i : i + JSON_IDS_STEP].tolist())[1:-1] for i in range(0, len(ids), JSON_IDS_STEP))
    return b"[" + b",".join(parts) + b"]"


def _json_response(fingerprint: str, key: str, value_json: bytes) -> Response:
    """{"fingerprint": fingerprint, key: <value>} as a response, `value_json` being the value's JSON."""
    head = b'{"fingerprint":' + to_json(fingerprint) + b',"' + key.encode() + b'":'
    return Response(head + value_json + b"}", media_type="application/json")


def create_app(tok, settings: ServeLimits | None = None, models: list | None = None) -> FastAPI:
    """Build the FastAPI app serving `tok` (a tokenizer.Tokenizer). Limits come from `settings` (any
    ServeLimits, e.g. ServeSettings; the defaults without). `models` (service/models.py ServedModel) adds
    the OpenAI-compatible API and, with a chat model, the web chat page, under the same limits."""
    limits = settings if settings is not None else ServeLimits()
    max_batch = limits.max_batch
    fingerprint: str = tok.fingerprint
    encoder = BoundedEncoder(tok, max_run_chars=limits.max_run_chars, max_tokens=limits.max_tokens)
    gate = DrainGate(limits.shutdown_timeout)
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
        max_body_bytes: int = Field(description="413 body_too_large above this")
        max_batch: int = Field(description="most texts / id lists per request (422 above)")
        max_tokens: int = Field(description="most ids an encode or count produces, or a decode takes (413)")
        max_decoded_bytes: int = Field(description="most UTF-8 bytes a decode produces (413)")
        max_run_chars: int = Field(description="longest run of whitespace or of non-whitespace characters (413)")
        max_cpu_seconds: float = Field(description="CPU time one request may use (413 too_expensive)")
        body_timeout: float = Field(description="seconds for the whole request body to arrive (408)")
        shutdown_timeout: float = Field(description="seconds requests in progress get to finish after SIGTERM")

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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        restore = chain_signal_handlers(gate)  # SIGTERM drains first (service/shutdown.py)
        try:
            yield
        finally:
            restore()

    app = FastAPI(
        title="LLM Journey tokenisation service",
        version=API_VERSION,
        description=f"Tokenizer `{tok.name}` (fingerprint {fingerprint}). Errors are JSON: "
        '{"error": code, "message": text}. Limits: GET /v1/info.',
        lifespan=lifespan,
    )
    # add_middleware wraps outermost last: the header is added even to the middleware's own answers.
    app.add_middleware(BodySizeLimit, max_body_bytes=limits.max_body_bytes, body_timeout=limits.body_timeout)
    app.add_middleware(RequestGuard, gate=gate, max_cpu_seconds=limits.max_cpu_seconds)
    app.add_middleware(ResponseHeader, name=FINGERPRINT_HEADER, value=fingerprint)

    async def work_budget(request: Request) -> WorkBudget:
        """The request's WorkBudget, from RequestGuard (an async dependency: no trip to the thread pool)."""
        budget = request.scope.get("state", {}).get(WORK_BUDGET_KEY)
        return budget if budget is not None else WorkBudget(limits.max_cpu_seconds)

    Budget = Annotated[WorkBudget, Depends(work_budget)]

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(WorkCancelled)
    async def on_cancelled(request: Request, exc: WorkCancelled):
        # RequestGuard has answered already and drops this; it is here so that nothing logs a crash.
        return error_response(503, "shutting_down", "the service is shutting down", headers={"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and ctype.split(";")[0].strip().lower() != "application/json":
            return error_response(
                415,
                "unsupported_media_type",
                f"send JSON with Content-Type: application/json, not {ctype or 'no Content-Type'}",
            )
        status, code, message = describe_validation_error(exc)
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

    def encode_all(req: EncodeRequest, budget: WorkBudget) -> list:
        """The ids of the request's text(s), as arrays; every refusal a ServiceError naming the text."""
        check_special_names("allowed_special", req.allowed_special)
        check_special_names("disallowed_special", req.disallowed_special)
        allowed = req.allowed_special if req.allowed_special == "all" else set(req.allowed_special)
        disallowed = req.disallowed_special if req.disallowed_special == "all" else set(req.disallowed_special)
        texts = [req.text] if req.text is not None else req.texts
        where = ["text"] if req.text is not None else [f"texts[{i}]" for i in range(len(texts))]
        try:
            return encoder.encode_all(texts, where, budget, allowed, disallowed)
        except TextRefused as refused:
            e = refused.error  # a ValueError, also UnicodeEncodeError (lone surrogates from JSON "\ud800")
            if str(e).startswith(DISALLOWED_SPECIAL_PREFIX):
                hint = (
                    ' Over HTTP: "allowed_special": [names] or "all" encodes it as the special token, '
                    '"disallowed_special": [] as plain text.'
                )
                raise ServiceError(422, "disallowed_special", f"{refused.where}: {e}{hint}") from e
            raise ServiceError(422, "invalid_text", f"{refused.where}: {e}") from e

    @app.post(
        f"/{API_VERSION}/encode",
        response_model=EncodeResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Encode one text or a batch into token ids",
    )
    def encode(req: EncodeRequest, budget: Budget):
        ids = encode_all(req, budget)
        if req.text is not None:
            return _json_response(fingerprint, "ids", _json_ids(ids[0]))
        return _json_response(fingerprint, "batch", b"[" + b",".join(map(_json_ids, ids)) + b"]")

    @app.post(
        f"/{API_VERSION}/count",
        response_model=CountResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Count tokens of one text or a batch",
    )
    def count(req: EncodeRequest, budget: Budget):
        counts = [len(ids) for ids in encode_all(req, budget)]
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
    def decode(req: DecodeRequest, budget: Budget):
        batch = [req.ids] if req.ids is not None else req.batch
        where = ["ids"] if req.ids is not None else [f"batch[{i}]" for i in range(len(batch))]
        try:
            texts = decode_all(tok, batch, where, budget, req.errors, limits.max_tokens, limits.max_decoded_bytes)
        except TextRefused as refused:
            e = refused.error
            if isinstance(e, UnicodeDecodeError):
                raise ServiceError(
                    422,
                    "invalid_utf8",
                    f"{refused.where}: decoded bytes are not UTF-8 ({e}); use errors='replace' to substitute U+FFFD",
                ) from e
            raise ServiceError(422, "unknown_id", f"{refused.where}: {e}") from e
        if req.ids is not None:
            return _json_response(fingerprint, "text", to_json(texts[0]))
        return _json_response(fingerprint, "texts", to_json(texts))

    info_body = {
        "name": tok.name,
        "fingerprint": fingerprint,
        "n_vocab": tok.n_vocab,
        "eot_id": tok.eot_id,
        "special_tokens": dict(tok.special_tokens),
        "pattern": tok.pattern,
        "limits": limits.limits(),
        "api_version": API_VERSION,
    }

    @app.get(
        f"/{API_VERSION}/info",
        response_model=InfoResponse,
        responses={503: ERROR_RESPONSES[503]},
        summary="What this service tokenises with, and its limits",
    )
    def info():
        return info_body

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses={503: ERROR_RESPONSES[503]},
        summary="Liveness; names the worker process",
    )
    def healthz():
        return {"status": "ok", "fingerprint": fingerprint, "worker_pid": os.getpid()}

    # The tokenizer playground (/) and the shard browser (/shards): the same middleware, limits and errors.
    add_pages(app, tok, limits, encoder, work_budget)
    if models:
        from .chat_page import add_chat_page
        from .openai_api import add_openai_api

        add_openai_api(app, models, limits)
        if any(m.kind == "chat" for m in models):
            add_chat_page(app)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (`service:app_from_env`): each worker process loads the tokenizer (and models) once."""
    from .models import load_served_models, set_torch_threads

    settings = ServeSettings.from_env()
    tok = settings.load_tokenizer()
    set_torch_threads(settings.threads)
    return create_app(tok, settings, load_served_models(settings, tok))
