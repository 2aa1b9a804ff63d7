"""The playground's JSON endpoints (under /pages/api/, left out of the OpenAPI schema: they serve the
page, the versioned API is /v1/).

    GET  /pages/api/tokenizers   the choices, and which two the page starts with
    POST /pages/api/tokenize     {"tokenizer", "text", "special"}: ids, count, characters per token
    POST /pages/api/ids          {"tokenizer", "ids"}: the tokens of those ids, and their text
    POST /pages/api/merges       {"tokenizer", "text"}: BPE step by step, for a word

Every answer carries the facts of each token it shows (`tokens`: id -> text, bytes, kind, rank, merge),
once per distinct id. Refusals are the API's: the same limits (body size, runs, tokens, CPU time,
through the same BoundedEncoder), the same codes and messages (a validation error is worded by
errors.describe_validation_error, as for /v1/decode), so the page shows what a client of the API sees.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures, and `Budget` is local.
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from .budget import TextRefused, WorkBudget, decode_all
from .errors import ServiceError, describe_validation_error
from .pages_tokenizers import LoadedTokenizer, TokenizerCatalog
from .settings import ServeLimits

# Tokens a page shows as spans (all of them are counted): a browser lays out ten thousand spans at once,
# not the four million a request may produce.
MAX_SHOWN_TOKENS = 10_000

# How the special-token choice of the page maps onto encode()'s arguments (tiktoken's semantics).
SPECIAL_MODES: dict[str, tuple[Any, Any]] = {
    "disallowed": (frozenset(), "all"),   # encode()'s default: the text of a special token is an error
    "allowed": ("all", ()),               # it becomes the special token's id
    "text": (frozenset(), ()),            # it is encoded as the ordinary text it is
}


def _integral_float_to_int(value: Any) -> Any:
    """As /v1/decode: JSON has one number type, so 5.0 is the id 5 (5.5, "5" and true stay errors)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@lru_cache(maxsize=16)
def _ids_model(n_vocab: int) -> type[BaseModel]:
    """{"ids": [...]} for a vocabulary of n_vocab ids, with /v1/decode's rules: so its refusals read the same."""
    token_id = Annotated[int, Field(ge=0, lt=n_vocab), BeforeValidator(_integral_float_to_int)]
    return create_model("Ids", __config__=ConfigDict(strict=True), ids=(list[token_id], ...))


def _validated_ids(loaded: LoadedTokenizer, ids: list[Any]) -> list[int]:
    try:
        return _ids_model(loaded.tok.n_vocab).model_validate({"ids": ids}).ids
    except ValidationError as exc:
        status, code, message = describe_validation_error(RequestValidationError(exc.errors()))
        raise ServiceError(status, code, message) from None


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TokenizeRequest(_Strict):
    tokenizer: str = "served"
    text: str
    special: Literal["disallowed", "allowed", "text"] = "disallowed"


class IdsRequest(_Strict):
    tokenizer: str = "served"
    ids: list[Any] = Field(description="validated against the chosen tokenizer's vocabulary")


class MergesRequest(_Strict):
    tokenizer: str = "served"
    text: str


def _shown(loaded: LoadedTokenizer, ids) -> dict[str, Any]:
    """The first MAX_SHOWN_TOKENS ids and the facts of each distinct one."""
    shown = [int(i) for i in ids[:MAX_SHOWN_TOKENS]]
    return {"ids": shown, "shown": len(shown), "tokens": loaded.infos(shown)}


def playground_router(catalog: TokenizerCatalog, limits: ServeLimits, budget_dependency) -> APIRouter:
    """The routes above, over `catalog`; `budget_dependency` gives each request its WorkBudget (app.py)."""
    router = APIRouter(prefix="/pages/api", include_in_schema=False)
    Budget = Annotated[WorkBudget, budget_dependency]

    @router.get("/tokenizers")
    def tokenizers():
        choices = catalog.describe()
        usable = {c["key"] for c in choices if c["note"] is None}
        # Start by comparing the served tokenizer with GPT-2's, the comparison the README talks about.
        right = "gpt2" if "gpt2" in usable and not catalog.served_is_gpt2 else None
        return {"tokenizers": choices, "left": "served", "right": right, "max_shown_tokens": MAX_SHOWN_TOKENS,
                "limits": limits.limits()}

    @router.post("/tokenize")
    def tokenize(req: TokenizeRequest, budget: Budget):
        loaded = catalog.get(req.tokenizer)
        allowed, disallowed = SPECIAL_MODES[req.special]
        try:
            ids = loaded.encoder.encode_all([req.text], ["text"], budget, allowed, disallowed)[0]
        except TextRefused as refused:
            code = "disallowed_special" if "disallowed special token" in str(refused.error) else "invalid_text"
            hint = " Choose 'allowed' to encode it as the special token, or 'plain text'." \
                if code == "disallowed_special" else ""
            raise ServiceError(422, code, f"{refused.where}: {refused.error}{hint}") from None
        count = len(ids)
        return {"tokenizer": loaded.identity, "count": count, "characters": len(req.text),
                "chars_per_token": round(len(req.text) / count, 3) if count else None, **_shown(loaded, ids)}

    @router.post("/ids")
    def ids(req: IdsRequest, budget: Budget):
        loaded = catalog.get(req.tokenizer)
        ids = _validated_ids(loaded, req.ids)
        try:   # the text, within the limits /v1/decode has (max_tokens, max_decoded_bytes, CPU time)
            text = decode_all(loaded.tok, [ids], ["ids"], budget, "replace", limits.max_tokens,
                              limits.max_decoded_bytes)[0]
        except TextRefused as refused:   # unreachable after validation; kept so that no id can make a 500
            raise ServiceError(422, "unknown_id", f"{refused.where}: {refused.error}") from None
        return {"tokenizer": loaded.identity, "count": len(ids), "text": text, **_shown(loaded, ids)}

    @router.post("/merges")
    def merges(req: MergesRequest, budget: Budget):
        loaded = catalog.get(req.tokenizer)
        budget.check("text")
        loaded.encoder.check_runs(req.text, "text")   # 413 run_too_long, as everywhere
        pieces = loaded.merge_steps(req.text)
        ids = loaded.tok.encode_ordinary(req.text)   # what encoding gives: the steps must end there
        seen = [i for piece in pieces for step in piece["steps"] for i in step["ids"]]
        return {"tokenizer": loaded.identity, "pieces": pieces, "ids": ids, "tokens": loaded.infos(seen + ids)}

    return router
