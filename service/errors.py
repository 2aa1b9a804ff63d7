"""One JSON shape for every refusal, so clients in any language parse one thing:

    {"error": "disallowed_special", "message": "texts[3]: Encountered text corresponding to ..."}

`error` is a stable machine-readable code, `message` says what was wrong and where (the field path a
client would write: `texts[3]`, `batch[1][7]`).
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


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
    408: {"model": ErrorBody, "description": "the request body did not arrive within body_timeout"},
    413: {
        "model": ErrorBody,
        "description": "over a limit of GET /v1/info `limits`: body_too_large, run_too_long, too_many_tokens, "
        "decoded_too_large, too_expensive (max_cpu_seconds)",
    },
    415: {"model": ErrorBody, "description": "body is not application/json"},
    422: {"model": ErrorBody, "description": "well-formed JSON the tokenizer cannot accept"},
    503: {"model": ErrorBody, "description": "shutting_down: the service is stopping"},
}


def _location(loc: tuple | list) -> str:
    """('body', 'texts', 3) -> 'texts[3]' : the field path a client would write."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_validation_error(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "invalid JSON")
            return 400, "malformed_json", f"request body is not valid JSON: {detail} at character {e['loc'][-1]}"
    parts = []
    for e in errors[:5]:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        got = e.get("input")
        # Show the offending value when it is a scalar ("ids[1]: ... less than 50257, got 99999");
        # for a missing field or a wrong container the input is the whole object, not worth echoing.
        if isinstance(got, (bool, int, float)) or (isinstance(got, str) and e.get("type") != "missing"):
            msg += f", got {got if not isinstance(got, str) else repr(got[:40] + ('...' if len(got) > 40 else ''))}"
        parts.append(f"{_location(e.get('loc', ()))}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid_request", "; ".join(parts) + more
