"""Command line: `python -m service` (what `make serve` runs).

Settings resolve as: flags > the recipe's [serve] section (with --config) > built-in defaults.
With --checkpoint / --base-checkpoint (or --models: the recipe's sft/ and pretrain/ checkpoints) the models
are loaded too, before any worker starts (a bad checkpoint fails fast) and, with several workers, again in
each one, for the OpenAI-compatible API and the web chat (service/models.py, openai_api.py, chat_page.py).
With several workers we drive uvicorn's multiprocess supervisor ourselves (see main) to set one
socket option uvicorn.run would not.

The HTTP parser is pinned to h11 (uvicorn would switch to httptools if that happened to be installed):
what a client gets for a request the parser itself refuses (a malformed Content-Length, say) is
documented and tested, so it must not depend on what else is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys

from .app import create_app
from .models import auto_threads, load_served_models, set_torch_threads
from .settings import (
    DEFAULT_ARTIFACTS_DIR,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LIMIT_KEYS,
    SETTINGS_ENV,
    ServeLimits,
    ServeSection,
    ServeSettings,
    recipe_serve_options,
)

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
# uvicorn's own graceful-shutdown wait, which starts once our drain is over (service/shutdown.py): by
# then every request has finished or been answered 503; this is only how long a cancelled request's
# worker thread may take to reach its next budget check before uvicorn stops waiting for it.
UVICORN_SHUTDOWN_WAIT = 3

_LIMIT_HELP = {
    "max_body_bytes": "413 body_too_large above this many bytes",
    "max_batch": "most texts / id lists per request",
    "max_tokens": "most ids an encode/count produces or a decode takes, per request (413 too_many_tokens)",
    "max_decoded_bytes": "most UTF-8 bytes a decode produces, per request (413 decoded_too_large)",
    "max_run_chars": "longest run of whitespace or of non-whitespace characters in a text (413 run_too_long)",
    "max_cpu_seconds": "CPU seconds one request may spend encoding/decoding (413 too_expensive)",
    "body_timeout": "seconds for a request's whole body to arrive (408 body_timeout)",
    "shutdown_timeout": "seconds requests in progress get to finish after SIGTERM; then 503 shutting_down",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags > the recipe's [serve] section (with --config) > built-in defaults."""
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve one tokenizer over HTTP/JSON; with a checkpoint, also the model through the "
        "OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) and a web chat at /chat.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--tokenizer", metavar="PATH", help="tokenizer.ljt.json written by the tokenizer stage")
    src.add_argument("--gpt2", nargs=2, metavar=("ENCODER_JSON", "VOCAB_BPE"), help="GPT-2 r50k_base files")
    p.add_argument("--config", metavar="RECIPE", help="recipe TOML: its [serve] section and its tokenizer")
    p.add_argument("--artifacts", metavar="DIR",
                   help="what the web pages browse: the tokenizer playground (/) offers its tokenizer files, the "
                   "shard browser (/shards) its recipes (default: the recipe's artifacts_root with --config, "
                   "else ./artifacts)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="a fine-tuned checkpoint (ckpt.pt or its directory) to chat with: /v1/chat/completions")
    p.add_argument("--base-checkpoint", metavar="PATH",
                   help="a pretrained checkpoint (ckpt.pt or its directory) for /v1/completions")
    p.add_argument("--models", action="store_true",
                   help="with --config: serve the recipe's models, its sft/ checkpoint for chat and its pretrain/ "
                   "checkpoint for completions (those that exist)")
    p.add_argument("--device", default="auto", help="where the models run: auto (CUDA when available), cpu, cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per worker (default: 1 for models under 10M parameters, else the cores "
                   "divided among the workers)")
    p.add_argument("--host", help=f"bind address (default {DEFAULT_HOST}: the service has no authentication)")
    p.add_argument("--port", type=int, help=f"default {DEFAULT_PORT}")
    p.add_argument("--workers", type=int, help="worker processes, default 2 (encoding is CPU-bound)")
    defaults = ServeLimits()
    for key in LIMIT_KEYS:
        default = getattr(defaults, key)
        p.add_argument(
            "--" + key.replace("_", "-"), type=type(default), help=f"{_LIMIT_HELP[key]} (default {default})"
        )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   metavar="LEVEL", help="uvicorn log level: %(choices)s (default: %(default)s)")
    args = p.parse_args(argv)
    if args.config:
        try:
            base = recipe_serve_options(args.config)
        except ValueError as e:  # RecipeError is a ValueError
            p.error(str(e))
    else:
        base = dataclasses.asdict(ServeSection())
        if not (args.tokenizer or args.gpt2 or args.checkpoint or args.base_checkpoint or args.models):
            p.error("say what to serve: --tokenizer PATH, --gpt2 ENCODER_JSON VOCAB_BPE, --config RECIPE, "
                    "or --checkpoint PATH")
    for key in ("host", "port", "workers", *LIMIT_KEYS):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if args.artifacts is None:
        args.artifacts = base.get("artifacts_dir") or DEFAULT_ARTIFACTS_DIR
    args.recipe_name = None
    if args.models:
        _recipe_models(p, args, base)
    if not (args.tokenizer or args.gpt2):
        args.tokenizer = base["tokenizer"] or _tokenizer_beside(p, args.checkpoint, args.base_checkpoint)
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in 0..65535, got {args.port}")
    return args


def _recipe_models(p: argparse.ArgumentParser, args: argparse.Namespace, base: dict) -> None:
    """--models: the recipe's checkpoints that exist (an explicit --checkpoint / --base-checkpoint wins)."""
    if not args.config:
        p.error("--models serves the checkpoints of a recipe: give --config RECIPE (or name them: --checkpoint PATH)")
    chat, pretrained = base["chat_checkpoint"], base["base_checkpoint"]
    args.checkpoint = args.checkpoint or (chat if os.path.isfile(chat) else None)
    args.base_checkpoint = args.base_checkpoint or (pretrained if os.path.isfile(pretrained) else None)
    if not (args.checkpoint or args.base_checkpoint):
        p.error(f"--models: the recipe has no model yet: neither {chat} nor {pretrained} exists "
                "(make pretrain, then make sft)")
    args.recipe_name = base["recipe_name"]
    if not (args.tokenizer or args.gpt2) and not os.path.isfile(base["tokenizer"]):
        args.tokenizer = _tokenizer_beside(p, args.checkpoint, args.base_checkpoint)  # `make sft` saves one


def _tokenizer_beside(p: argparse.ArgumentParser, *checkpoints: str | None) -> str:
    """The tokenizer file beside the first checkpoint that has one (`make sft` leaves it there)."""
    from contract.recipe import TOKENIZER_FILE

    from .models import checkpoint_file

    for ckpt in filter(None, checkpoints):
        beside = checkpoint_file(ckpt).parent / TOKENIZER_FILE
        if beside.is_file():
            return str(beside)
    p.error(f"no {TOKENIZER_FILE} beside the checkpoint: say which tokenizer its ids belong to (--tokenizer PATH)")


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; both shut down gracefully (service/shutdown.py) and exit 0."""
    import uvicorn

    args = parse_args(argv)
    try:
        settings = ServeSettings(
            # Absolute paths: the settings travel to worker processes (same cwd today, but say what we mean).
            tokenizer_path=_absolute(args.tokenizer),
            gpt2_encoder_json=_absolute(args.gpt2[0]) if args.gpt2 else None,
            gpt2_vocab_bpe=_absolute(args.gpt2[1]) if args.gpt2 else None,
            chat_checkpoint=_absolute(args.checkpoint),
            base_checkpoint=_absolute(args.base_checkpoint),
            recipe_name=args.recipe_name,
            device=args.device,
            threads=args.threads,
            artifacts_dir=_absolute(args.artifacts),
            **{key: getattr(args, key) for key in LIMIT_KEYS},
        )
        # Load once here, before any worker starts: a bad file fails fast with its name, instead of
        # every worker dying at startup one after another.
        tok = settings.load_tokenizer()
        models = load_served_models(settings, tok)
    except (OSError, ValueError) as e:
        print(f"service: {e}", file=sys.stderr)
        return 2
    if models and not settings.threads:
        settings = dataclasses.replace(
            settings, threads=auto_threads(max(m.model.num_params() for m in models), args.workers))
    if args.host not in LOOPBACK_HOSTS:
        print(
            f"service: WARNING binding {args.host}: reachable beyond this machine, no authentication",
            file=sys.stderr,
        )
    print(
        f"service: {tok.name} n_vocab={tok.n_vocab} fingerprint={tok.fingerprint[:16]}... "
        f"on http://{args.host}:{args.port} with {args.workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    print(f"service: pages: the tokenizer playground http://{args.host}:{args.port}/ and the shard browser "
          f"http://{args.host}:{args.port}/shards (artifacts: {settings.artifacts_dir})", file=sys.stderr, flush=True)
    for m in models:
        routes = f"/v1/chat/completions, /v1/completions and the web chat http://{args.host}:{args.port}/chat" \
            if m.kind == "chat" else "/v1/completions"
        print(f"service: model {m.id} ({m.kind}, step {m.step}, {m.model.num_params():,} parameters, context "
              f"{m.context_length}, {m.device}, {settings.threads} thread(s)) on {routes}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to die "by signal";
    # a handler that exits 0 turns that into the conventional clean exit for a service manager.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, http="h11",
                  timeout_graceful_shutdown=UVICORN_SHUTDOWN_WAIT)
    if args.workers == 1:
        set_torch_threads(settings.threads)
        uvicorn.run(create_app(tok, settings, models), **common)  # reuse the tokenizer and models we just loaded
    else:
        del models  # each worker loads its own; the supervisor only hands out connections
        from uvicorn.supervisors import Multiprocess

        os.environ[SETTINGS_ENV] = settings.to_env()  # inherited by the spawned worker processes
        config = uvicorn.Config("service.app:app_from_env", factory=True, workers=args.workers, **common)
        # What uvicorn.run(workers=N) does, plus one socket option. The parent binds the socket that
        # all workers accept on; bound that way its protocol number is 0, so asyncio does not switch
        # off Nagle's algorithm on accepted connections as it does for sockets it creates itself.
        # Then a response written as headers + body waits for the client's delayed ACK: 40 ms per
        # request. TCP_NODELAY on the listening socket is inherited by every accepted connection.
        sock = config.bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Multiprocess(config, sockets=[sock]).run()
    return 0
