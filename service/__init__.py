"""Tokenisation service: one tokenizer file served over HTTP/JSON by several worker processes.

Other programs (notebooks, data tools in other languages, an inference server) must tokenise with
*exactly* the tokenizer the shards were made with. So every answer carries the tokenizer's
fingerprint (in the body and in the `X-Tokenizer-Fingerprint` header) for the caller to compare
with the shards' own: `ShardReader("artifacts/demo/shards").tokenizer_fingerprint` (in the shard
manifest.json: manifest["tokenizer"]["fingerprint"]).

    python -m service --tokenizer artifacts/demo/tokenizer/tokenizer.ljt.json --workers 2
    python -m service --gpt2 encoder.json vocab.bpe            # GPT-2's r50k_base

Endpoints (JSON, versioned under /v1; schema at /openapi.json, docs at /docs):
    POST /v1/encode   {"text": str} | {"texts": [str]}, "allowed_special", "disallowed_special"
                      -> {"ids": [int]} | {"batch": [[int]]}
    POST /v1/decode   {"ids": [int]} | {"batch": [[int]]}, "errors" -> {"text": str} | {"texts": [str]}
    POST /v1/count    same body as /v1/encode -> {"count": int} | {"counts": [int], "total": int}
    GET  /v1/info     name, n_vocab, fingerprint, special tokens, pattern, limits (every one below)
    GET  /healthz     liveness (and which worker process answered)

Design notes
- Encoding is CPU-bound pure Python, so throughput comes from *processes*: uvicorn's supervisor
  spawns `--workers` processes that accept on one listening socket (the kernel spreads connections
  over them). Each worker builds the app through the factory `app_from_env`, which loads the
  tokenizer once per process from settings the parent put into an environment variable (a spawned
  worker is a fresh interpreter; the environment is how it learns its job).
- SIGTERM (or Ctrl-C) drains before uvicorn stops (shutdown.py): new requests get 503 shutting_down,
  requests in progress finish within `shutdown_timeout` or get 503 then, never a 500; exit code 0.
- Endpoints are plain `def` functions: Starlette runs them in a thread pool, so one long encode does
  not stall the event loop (health checks and new connections are still accepted meanwhile).
- Bad input is the caller's fault and answered 4xx with {"error": code, "message": ...}; nothing the
  client sends may produce a 500 or kill a worker. The request-size limit is an ASGI middleware that
  buffers at most `max_body_bytes` (it checks Content-Length *and* counts streamed bytes, since a
  chunked upload has no Content-Length) and gives up on a body that has not arrived within
  `body_timeout` (408).
- What a request may cost is bounded (settings.ServeLimits, published in /v1/info): runs without a
  whitespace boundary (one BPE piece each), tokens, decoded bytes, and CPU seconds, which the
  endpoints check between steps of their work (budget.py). These are middleware and a dependency
  every route gets, so routes added later are bounded the same way.
- Binds to 127.0.0.1 unless --host says otherwise: a tokenizer service has no authentication.

Modules: settings (what to serve, limits, the recipe's [serve] section), errors (the JSON error
shape), middleware (body limits, shutdown drain and work budget per request, fingerprint header),
budget (the work budget; encoding and decoding in bounded steps), shutdown (the drain on SIGTERM),
app (FastAPI endpoints), cli (`python -m service`), client (a small stdlib HTTP client). Tests and
benchmarks start the service as a child process with harness/service_process.py.

Served on the same app when asked (`--checkpoint`, `--models`, `make chat-web`): the OpenAI-compatible
API for trained models (openai_api, with models + generation: one model thread per worker, streams
taking turns token by token, each request with its own KV cache and seeded generator) and the web chat
page that talks to it (chat_page); and the tokenizer playground and shard browser (pages*.py, static/).

The service is an application on top of the library: it imports the tokenizer, the recipe contract
(for --config), and the model and checkpoint loading for the chat API; nothing below imports it.
"""

from .app import API_VERSION, FINGERPRINT_HEADER, app_from_env, create_app
from .cli import main, parse_args
from .settings import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, ServeLimits, ServeSettings

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "FINGERPRINT_HEADER",
    "ServeLimits",
    "ServeSettings",
    "app_from_env",
    "create_app",
    "main",
    "parse_args",
]
