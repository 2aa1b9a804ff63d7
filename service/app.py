"""The FastAPI application: endpoints, request/response models, and error mapping.

`create_app(tokenizer, settings)` builds an app around one loaded Tokenizer; `app_from_env` is the
factory each uvicorn worker process calls (it loads the tokenizer named by the settings the parent
put into the environment, once per process).

Endpoints are plain `def` functions: Starlette runs them in a thread pool, so one long encode does
not stall the event loop (health checks and new connections are still accepted meanwhile).
"""

# No `from __future__ import annotations` here: FastAPI must resolve the request models that
# create_app defines locally, which it cannot do from postponed (string) annotations.
import os
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ERROR_RESPONSES, ServiceError, describe_validation_error, error_response
from .middleware import BodySizeLimit, ResponseHeader
from .settings import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, ServeSettings

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
                if str(e).startswith(DISALLOWED_SPECIAL_PREFIX):
                    hint = (
                        ' Over HTTP: "allowed_special": [names] or "all" encodes it as the special token, '
                        '"disallowed_special": [] as plain text.'
                    )
                    raise ServiceError(422, "disallowed_special", f"{where}: {e}{hint}") from e
                raise ServiceError(422, "invalid_text", f"{where}: {e}") from e
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
    """uvicorn factory (`service:app_from_env`): each worker process loads the tokenizer once."""
    settings = ServeSettings.from_env()
    return create_app(settings.load_tokenizer(), settings)
