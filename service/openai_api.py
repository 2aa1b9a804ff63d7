"""The OpenAI-compatible HTTP API: the chat model and the base model for every client that speaks it.

    POST /v1/chat/completions   messages -> the chat model's answer (stream: server-sent events)
    POST /v1/completions        prompt -> its continuation (a base or a chat model)
    GET  /v1/models             what is served: `<recipe>/<stage>`, checkpoint, step, tokenizer fingerprint
    GET  /v1/models/{id}

Requests and answers follow OpenAI's API reference, so the official `openai` SDKs, `curl` examples and the
many tools built on them work unchanged (base_url = http://127.0.0.1:8000/v1, any api_key):

- Sampling: `temperature` (0 = greedy), `top_p`, `max_tokens` (or `max_completion_tokens`), `stop` (up to 4
  strings), `seed` (the same seed and request give the same answer, alone or among concurrent requests, see
  service/generation.py), `n` = 1, `stream` with `stream_options.include_usage`; `top_k` as an extension.
- `usage` counts tokens of our tokenizer: the prompt as the model sees it (the chat format's control
  tokens included), and every generated id (the end-of-answer token included).
- Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a request that is
  wrong or asks for what is not supported (tools, images, audio, logprobs, n > 1, penalties: each refused
  with a message naming the parameter), 404 for an unknown model, and the tokenisation service's limits
  with its status codes (413 body_too_large / run_too_long / too_many_tokens / too_expensive, 408, 415,
  503 shutting_down). The limits are the service's middleware (service/middleware.py), which answers
  before any route runs; OpenAIErrorShape gives those answers this shape on these paths.
- A stream is `data: {chunk}` events ending with `data: [DONE]`; an error after the stream has started
  (the CPU limit) comes as `data: {"error": {...}}` then `data: [DONE]`, which the SDK raises as APIError.

The sampling is `make chat`'s engine (model/chat_session.py); prompts are rendered in the chat format of
tokenizer/chat.py, with the message texts encoded under the request's limits (service/budget.py).
"""

# No `from __future__ import annotations`: FastAPI reads the request models from the route signatures.
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .app import _integral_float_to_int
from .budget import TextRefused, WorkBudget
from .errors import ServiceError, _location, describe_validation_error
from .generation import Generation, ModelThread, Sampling
from .middleware import WORK_BUDGET_KEY
from .settings import ServeLimits

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold events back
DONE = b"data: [DONE]\n\n"
MAX_STOP = 4
# Below this temperature sampling is greedy: the distribution is one token already, and logits divided by a
# temperature near the smallest float would overflow to inf and poison the softmax.
GREEDY_BELOW = 1e-4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (chat: until the answer ends)


# ------------------------------------------------------------------------------------------ errors
class OpenAIError(Exception):
    """A refusal in OpenAI's error shape (type: invalid_request_error for 4xx, server_error for 5xx)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @classmethod
    def from_service(cls, e: ServiceError) -> "OpenAIError":
        return cls(e.status, e.message, code=e.code)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def unsupported(param: str, what: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {what}", param=param, code="unsupported_parameter")


TOOLS = "function calling is not supported: the model only writes text"


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    """pydantic's complaint about a body -> 400 naming the first wrong parameter (as OpenAI does, not 422)."""
    _, code, message = describe_validation_error(exc)
    if code == "malformed_json":
        return OpenAIError(400, message, code=code)
    first = exc.errors()[0]
    param = _location(first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        return OpenAIError(400, f"{param}: unrecognized request argument (see GET /docs for the ones this server "
                                "takes)", param=param, code="unknown_parameter")
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    return OpenAIError(400, message, param=param, code=code)


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


class OpenAIRoute(APIRoute):
    """Every refusal of these routes in OpenAI's shape: a body that fails validation is a 400 naming the
    parameter (FastAPI's own handler would answer the tokenisation service's 422)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            ctype = request.headers.get("content-type", "")
            if request.method == "POST" and not _is_json(ctype):
                return OpenAIError(415, f"send JSON with Content-Type: application/json, not {ctype or 'none'}",
                                   code="unsupported_media_type").response()
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _validation_error(exc).response()
            except OpenAIError as exc:
                return exc.response()
            except ServiceError as exc:
                return OpenAIError.from_service(exc).response()

        return route


class OpenAIErrorShape:
    """ASGI middleware: on the API's paths, a JSON error in the service's shape {"error": code, "message": m}
    (the body limits, the shutdown drain, 404/405) becomes OpenAI's {"error": {"message", "type", "param",
    "code"}}. Only error responses are held and rewritten (they are small); streams pass untouched."""

    def __init__(self, app, paths: tuple[str, ...] = OPENAI_PATHS) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None
        parts: list[bytes] = []

        async def reshape(message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", ()))
                if message["status"] >= 400 and _is_json(headers.get(b"content-type", b"").decode("latin-1")):
                    held = message  # answered once the body is complete
                    return
            elif held is not None and message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _openai_shaped(b"".join(parts), held["status"])
                headers = [(k, v) for k, v in held.get("headers", ()) if k.lower() != b"content-length"]
                await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, reshape)


def _openai_shaped(body: bytes, status: int) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return to_json(error_body(status, str(data.get("message", data["error"])), None, data["error"]))
    return body


# ------------------------------------------------------------------------------------------ requests
# An integral float is an integer (JSON has one number type, and some encoders write 5 as 5.0), as in the
# tokenisation service; 5.5 and "5" stay errors.
Int = Annotated[int, BeforeValidator(_integral_float_to_int)]


class Strict(BaseModel):
    # strict: no "1" -> 1 coercion; extra=forbid: a misspelt or unknown parameter is refused, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="send one more chunk before [DONE] with the usage")


class SamplingRequest(Strict):
    """What both endpoints take. Parameters OpenAI has and we do not are declared too, so that asking for
    them gets a message saying so (see `refuse_unsupported`) rather than "unrecognized argument"."""

    model: str = Field(description="a model id of GET /v1/models, e.g. demo/sft")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default 1")
    top_p: float | None = Field(None, ge=0, le=1, description="nucleus sampling; 0 = greedy, 1 (default) = off")
    top_k: Int | None = Field(None, ge=1, description="extension: sample among the k most likely tokens only")
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP} strings that end the text (not "
                                                           "included in it)")
    seed: Int | None = Field(None, ge=-(2**63), lt=2**63, description="the same seed and request give the same "
                                                                     "answer")
    n: Int | None = Field(None, description="answers per request: only 1")
    stream: bool | None = Field(None, description="server-sent events, ending with data: [DONE]")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted and ignored")
    # not supported: refused unless at their "off" value
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None

    def refuse_unsupported(self) -> None:
        if self.n not in (None, 1):
            raise unsupported("n", f"only n=1 is supported (one answer per request), got {self.n}; send separate "
                                   "requests, each with its own seed")
        if self.logprobs not in (None, False, 0) or self.top_logprobs not in (None, 0):
            param = "logprobs" if self.logprobs not in (None, False, 0) else "top_logprobs"
            raise unsupported(param, "log probabilities are not supported")
        if self.logit_bias not in (None, {}):
            raise unsupported("logit_bias", "logit_bias is not supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0):
                raise unsupported(name, "repetition penalties are not supported (only 0)")
        if self.stop is not None:
            stops = [self.stop] if isinstance(self.stop, str) else self.stop
            if len(stops) > MAX_STOP:
                raise OpenAIError(400, f"stop: at most {MAX_STOP} stop sequences, got {len(stops)}", param="stop",
                                  code="invalid_value")

    def sampling(self, max_tokens: int) -> Sampling:
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = None if self.top_p in (None, 1) else self.top_p
        if top_p == 0 or temperature < GREEDY_BELOW:  # only the most likely token is left: say it as greedy
            temperature, top_p = 0.0, None
        stops = () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=self.top_k, stop=stops,
                        seed=self.seed)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"] = Field(
        description="system (or developer, OpenAI's newer name for it), user or assistant; tool messages are refused")
    content: str | list[dict[str, Any]] | None = Field(None, description='text, or parts [{"type": "text", ...}]')
    name: str | None = Field(None, description="accepted and ignored")
    # not supported
    tool_calls: Any = None
    tool_call_id: Any = None
    function_call: Any = None
    audio: Any = None
    refusal: Any = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation so far, ending with the user")
    max_tokens: Int | None = Field(None, ge=1, description="most tokens in the answer; default: until it ends")
    max_completion_tokens: Int | None = Field(None, ge=1, description="the newer name of max_tokens")
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None

    def refuse_unsupported(self) -> None:
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise unsupported(name, TOOLS)
        for name in ("tool_choice", "function_call", "parallel_tool_calls"):
            if getattr(self, name) not in (None, "none", False):
                raise unsupported(name, TOOLS)
        if self.response_format not in (None, {"type": "text"}):
            raise unsupported("response_format", 'structured output is not supported (only {"type": "text"})')
        if self.modalities not in (None, ["text"]) or self.audio is not None:
            raise unsupported("modalities" if self.audio is None else "audio", "the model reads and writes text only")
        if self.prediction is not None:
            raise unsupported("prediction", "predicted outputs are not supported")
        super().refuse_unsupported()


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[Int] | list[list[Int]] = Field(
        description="the text to continue (one string, or its token ids); <|endoftext|> is put before a text, "
                    "as before every document the model was trained on")
    max_tokens: Int | None = Field(None, ge=1,
                                   description=f"most new tokens (default {COMPLETIONS_DEFAULT_MAX_TOKENS})")
    echo: Any = None
    suffix: Any = None
    best_of: Any = None

    def refuse_unsupported(self) -> None:
        if self.echo not in (None, False):
            raise unsupported("echo", "echo is not supported: the answer holds the new text only")
        if self.suffix not in (None, ""):
            raise unsupported("suffix", "insertion (suffix) is not supported")
        if self.best_of not in (None, 1):
            raise unsupported("best_of", "only best_of=1 is supported")
        super().refuse_unsupported()


# ------------------------------------------------------------------------------------------ the API
class ModelRegistry:
    def __init__(self, models: list) -> None:
        self.models = {m.id: m for m in models}

    def get(self, model_id: str, *, chat: bool):
        served = self.models.get(model_id)
        if served is None:
            raise OpenAIError(404, f"The model {model_id!r} does not exist here. Served: "
                                   f"{', '.join(self.models)} (GET /v1/models)", param="model", code="model_not_found")
        if chat and served.kind != "chat":
            chat_ids = [m.id for m in self.models.values() if m.kind == "chat"]
            hint = f"chat with {', '.join(chat_ids)}, or" if chat_ids else "serve a fine-tuned one (make sft), or"
            raise OpenAIError(400, f"{model_id} is a base model: it continues text and never learned the chat "
                                   f"format; {hint} use POST /v1/completions", param="model",
                              code="model_not_supported")
        return served


def _conversation(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI messages -> the chat format's {"role", "content"} (text only; refusals say what is not supported)."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.role in ("tool", "function") or m.tool_calls or m.tool_call_id or m.function_call:
            raise unsupported(where, TOOLS)
        if m.audio is not None:
            raise unsupported(f"{where}.audio", "the model reads and writes text only")
        role = "system" if m.role == "developer" else m.role  # OpenAI's newer name for the system message
        out.append({"role": role, "content": _text(m.content, f"{where}.content")})
    return out


def _text(content: str | list[dict[str, Any]] | None, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise OpenAIError(400, f"{where}: a message needs text content", param=where, code="invalid_value")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            raise unsupported(f"{where}[{j}]", "images are not supported: the model reads text only")
        elif kind in ("input_audio", "audio", "file"):
            raise unsupported(f"{where}[{j}]", f"{kind} parts are not supported: the model reads text only")
        else:
            raise OpenAIError(400, f'{where}[{j}]: a content part is {{"type": "text", "text": str}}, got '
                                   f"{json.dumps(part)[:80]}", param=f"{where}[{j}]", code="invalid_value")
    return "".join(texts)


def _encode_texts(served, texts: list[str], where: list[str], budget: WorkBudget) -> tuple[list, float]:
    """The texts' ids under the request's limits (runs, tokens, CPU); special-token text stays text. Also the
    CPU seconds spent (run this in a worker thread: the budget's clock is the calling thread's)."""
    budget.check()
    try:
        ids = served.encoder.encode_all(texts, where, budget, allowed_special=(), disallowed_special=())
    except TextRefused as refused:
        raise OpenAIError(400, f"{refused.where}: {refused.error}", param=refused.where,
                          code="invalid_text") from refused.error
    return [list(a) for a in ids], budget.spent()


def chat_prompt(served, messages: list[dict[str, str]], budget: WorkBudget) -> tuple[list[int], float]:
    """The ids the model's answer continues, the same as ChatFormat.render_prompt gives (the texts are
    encoded under the limits here), and the CPU seconds that took."""
    from tokenizer.chat import ConversationError, check_conversation

    try:
        messages = check_conversation(messages, for_prompt=True)
    except ConversationError as e:
        raise OpenAIError(400, f"messages: {e}", param="messages", code=e.reason) from None
    contents, spent = _encode_texts(served, [m["content"] for m in messages],
                                    [f"messages[{i}].content" for i in range(len(messages))], budget)
    c = served.chat
    ids = [c.bos]
    for m, content in zip(messages, contents):
        ids += [c.start[m["role"]], *content, c.end[m["role"]]]
    return ids + [c.start["assistant"]], spent


def completion_prompt(served, prompt, budget: WorkBudget) -> tuple[list[int], float]:
    """A text -> <|endoftext|> + its ids (how every training document began); token ids are taken as they are."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):  # a batch: of strings or of id lists
        if len(prompt) != 1:
            raise unsupported("prompt", f"one prompt per request (got {len(prompt)}); send one request per prompt")
        prompt = prompt[0]
    if isinstance(prompt, list):  # token ids
        if not prompt:
            raise OpenAIError(400, "prompt: no token ids (an empty text prompt starts from <|endoftext|>)",
                              param="prompt", code="invalid_value")
        n_vocab = served.tokenizer.n_vocab
        bad = next((i for i, t in enumerate(prompt) if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise OpenAIError(400, f"prompt[{bad}]: token id {prompt[bad]} is not in 0..{n_vocab - 1}",
                              param=f"prompt[{bad}]", code="invalid_value")
        return list(prompt), 0.0
    (ids,), spent = _encode_texts(served, [prompt], ["prompt"], budget)
    eot = served.tokenizer.eot_id
    ids = ([eot] if eot is not None else []) + ids
    if not ids:
        raise OpenAIError(400, "prompt: empty, and this tokenizer has no <|endoftext|> to start from",
                          param="prompt", code="invalid_value")
    return ids, spent


def _check_context(served, prompt: list[int], param: str) -> None:
    block = served.context_length
    if len(prompt) > block:
        what = "the messages are" if param == "messages" else "the prompt is"
        raise OpenAIError(400, f"This model's maximum context length is {block} tokens; {what} {len(prompt)} tokens "
                               "(as the model sees them). Send less text (in a chat: fewer or shorter messages).",
                          param=param, code="context_length_exceeded")


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + to_json(obj) + b"\n\n"


def _usage(gen: Generation) -> dict[str, int]:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


async def _events(gen: Generation, chunk: Callable[[str | None, str | None], dict], head: dict,
                  include_usage: bool, opening: bool) -> AsyncIterator[bytes]:
    """The stream: [an opening chunk at once (chat: the role)], one per text piece, the finish, [usage], [DONE]."""
    if opening:
        yield _sse(chunk(None, None))
    try:
        async for piece in gen.pieces():
            yield _sse(chunk(piece, None))
    except ServiceError as e:  # the response has started: the error travels as an event (the SDK raises it)
        yield _sse(OpenAIError.from_service(e).body())
        yield DONE
        return
    yield _sse(chunk("", gen.finish_reason))
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(gen)})
    yield DONE


def add_openai_api(app: FastAPI, models: list, limits: ServeLimits) -> None:
    """Add the routes above to the service's app (its middleware, limits and shutdown drain apply)."""
    registry = ModelRegistry(models)
    thread = ModelThread()
    router = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible API"])

    def budget_of(request: Request) -> WorkBudget:
        budget = request.scope.get("state", {}).get(WORK_BUDGET_KEY)
        return budget if budget is not None else WorkBudget(limits.max_cpu_seconds)

    def generation(served, prompt: list[int], sampling: Sampling, stop_ids, budget, spent: float) -> Generation:
        return Generation(served, prompt, sampling, stop_ids=stop_ids, budget=budget, thread=thread,
                          cpu_limit=limits.max_cpu_seconds, cpu_spent=spent)

    @router.get("/v1/models", summary="The models served here")
    async def list_models():
        return {"object": "list", "data": [m.describe() for m in registry.models.values()]}

    @router.get("/v1/models/{model_id:path}", summary="One served model")
    async def retrieve_model(model_id: str):
        return registry.get(model_id, chat=False).describe()

    @router.post("/v1/chat/completions", summary="Answer a conversation (stream: server-sent events)")
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        req.refuse_unsupported()
        served = registry.get(req.model, chat=True)
        budget = budget_of(request)
        # in a worker thread (as every step of work on the request's text): the event loop stays free
        prompt, spent = await run_in_threadpool(lambda: chat_prompt(served, _conversation(req.messages), budget))
        _check_context(served, prompt, "messages")
        max_tokens = req.max_completion_tokens or req.max_tokens or served.context_length
        gen = generation(served, prompt, req.sampling(max_tokens), served.chat.stop_ids, budget, spent)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": served.id, "system_fingerprint": None}
        if req.stream:
            head = {**head, "object": "chat.completion.chunk"}

            def chunk(piece: str | None, finish: str | None) -> dict:
                delta = {"role": "assistant", "content": ""} if piece is None else {"content": piece} if piece else {}
                extra = {"usage": None} if req.include_usage else {}
                return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}], **extra}

            return StreamingResponse(_events(gen, chunk, head, req.include_usage, opening=True),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        text = await gen.text()
        return {**head, "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                     "logprobs": None, "finish_reason": gen.finish_reason}], "usage": _usage(gen)}

    @router.post("/v1/completions", summary="Continue a text (stream: server-sent events)")
    async def completions(req: CompletionRequest, request: Request):
        req.refuse_unsupported()
        served = registry.get(req.model, chat=False)
        budget = budget_of(request)
        prompt, spent = await run_in_threadpool(completion_prompt, served, req.prompt, budget)
        _check_context(served, prompt, "prompt")
        eot = served.tokenizer.eot_id
        sampling = req.sampling(req.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS)
        gen = generation(served, prompt, sampling, () if eot is None else (eot,), budget, spent)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": served.id, "system_fingerprint": None}
        if req.stream:
            def chunk(piece: str | None, finish: str | None) -> dict:
                extra = {"usage": None} if req.include_usage else {}
                return {**head, "choices": [{"index": 0, "text": piece or "", "logprobs": None,
                                             "finish_reason": finish}], **extra}

            return StreamingResponse(_events(gen, chunk, head, req.include_usage, opening=False),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        text = await gen.text()
        return {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": gen.finish_reason}],
                "usage": _usage(gen)}

    app.include_router(router)
    app.add_middleware(OpenAIErrorShape)  # outermost: it also sees the answers of the limit middleware
    app.description += (" OpenAI-compatible API: POST /v1/chat/completions, POST /v1/completions, GET /v1/models "
                        f"(serving {', '.join(registry.models)}); its errors are OpenAI's shape "
                        '{"error": {"message", "type", "param", "code"}}.')
