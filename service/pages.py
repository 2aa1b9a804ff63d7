"""Two web pages served by the tokenisation service: a tokenizer playground (`/`) and a shard browser (`/shards`).

    make serve                       then open http://127.0.0.1:8000/ and http://127.0.0.1:8000/shards

The pages are static files (service/static/pages/: HTML, one stylesheet, plain JavaScript, no framework,
nothing fetched from elsewhere, so they work offline) that call the service's own JSON endpoints:
pages_playground.py for the playground, pages_shards.py for the shard browser. Those endpoints run
inside the same app as /v1/, behind the same middleware, so every limit of the service holds for them
too (body size, body timeout, CPU time per request, shutdown drain) and every refusal is the same JSON
{"error": code, "message": ...} that the pages show as it is.

Where things are found: the artifacts directory (`--artifacts DIR`; with `--config`, the recipe's
`artifacts_root`; else ./artifacts) for recipes and tokenizer files, and GPT-2's files for the
comparison (pages_tokenizers.py). The service binds to loopback unless told otherwise, and so do the pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from starlette.responses import Response

from .budget import BoundedEncoder
from .errors import ServiceError
from .pages_artifacts import Artifacts
from .pages_playground import playground_router
from .pages_shards import ShardBrowser, shards_router
from .pages_tokenizers import TokenizerCatalog
from .settings import DEFAULT_ARTIFACTS_DIR, ServeLimits

STATIC_DIR = Path(__file__).resolve().parent / "static" / "pages"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# The pages load nothing from anywhere but this service, and run no inline script: whatever text a
# document or a tokenizer file holds is only ever put into the page as text, and this says so twice.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
PAGES = {"/": "playground.html", "/shards": "shards.html"}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of service/static/pages/, read once: {name: (content, media type)}. Files are looked up
    by name in this dict, so a request can never name a path outside it."""
    return {p.name: (p.read_bytes(), MEDIA_TYPES.get(p.suffix, "application/octet-stream"))
            for p in sorted(STATIC_DIR.iterdir()) if p.is_file()}


def add_pages(app: FastAPI, tok, limits: ServeLimits, encoder: BoundedEncoder, work_budget) -> None:
    """Mount the pages and their endpoints on `app` (create_app calls this). `limits` may be ServeSettings,
    which also says where the artifacts are and which files the served tokenizer came from; `encoder` is
    the app's own BoundedEncoder for the served tokenizer; `work_budget` the app's budget dependency."""
    artifacts = Artifacts(getattr(limits, "artifacts_dir", None) or DEFAULT_ARTIFACTS_DIR)
    gpt2 = (getattr(limits, "gpt2_encoder_json", None), getattr(limits, "gpt2_vocab_bpe", None))
    catalog = TokenizerCatalog(tok, encoder, limits, artifacts, served_path=getattr(limits, "tokenizer_path", None),
                               gpt2_files=gpt2 if None not in gpt2 else None)
    budget = Depends(work_budget)
    app.include_router(playground_router(catalog, limits, budget))
    app.include_router(shards_router(ShardBrowser(artifacts, limits), budget))
    files = static_files()

    def serve(name: str) -> Response:
        if name not in files:
            raise ServiceError(404, "not_found", f"/pages/static/{name}: no such file")
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers={"Content-Security-Policy": CSP})

    def page(name: str):
        def endpoint() -> Response:   # no parameters: FastAPI would read any as query parameters
            return serve(name)
        return endpoint

    for path, name in PAGES.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)
    app.add_api_route("/pages/static/{name}", serve, methods=["GET"], include_in_schema=False)
