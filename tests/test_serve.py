"""The tokenisation service over real HTTP: a `python -m service` child process with two
workers on a free loopback port, serving GPT-2 saved in our own format (tokenizer.ljt.json).

What is checked: encode/decode/count agree with the in-process Tokenizer on the embedded corpus;
16 concurrent clients get their own answers; every kind of bad input is a 4xx JSON error (never a
500, never a dead worker); the body limit holds with and without Content-Length; SIGTERM shuts the
service down with exit code 0. Schema-driven fuzzing lives in test_serve_schema.py.
"""

from __future__ import annotations

import http.client
import inspect
import json
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from harness.service_process import ServiceProcess
from service import ServeSettings, main, parse_args
from service.client import FingerprintMismatch, TokenizerClient, TokenizerServiceError
from service.settings import ServeLimits
from tokenizer import Tokenizer
from tokenizer.byte_order import BYTE_TO_ID

MAX_BODY = 256 * 1024  # small limits keep the oversize tests cheap; the defaults are checked separately
MAX_BATCH = 64
WORKERS = 2


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_files) -> Tokenizer:
    return Tokenizer.from_gpt2_files(*gpt2_files)


@pytest.fixture(scope="module")
def tokenizer_file(gpt2_tok, tmp_path_factory):
    return gpt2_tok.save(tmp_path_factory.mktemp("serve") / "tokenizer.ljt.json")


@pytest.fixture(scope="module")
def service(tokenizer_file):
    args = [
        "--tokenizer",
        str(tokenizer_file),
        "--workers",
        str(WORKERS),
        "--log-level",
        "warning",
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-batch",
        str(MAX_BATCH),
    ]
    with ServiceProcess(args) as svc:
        svc.worker_pids(WORKERS)  # wait (bounded) until both workers answer
        svc.initial_workers = worker_processes(svc)
        assert len(svc.initial_workers) == WORKERS
        yield svc


def worker_processes(svc) -> set[int]:
    """pids of uvicorn's worker processes: the supervisor's multiprocessing-spawned children."""
    children = psutil.Process(svc.process.pid).children()
    return {p.pid for p in children if "spawn_main" in " ".join(p.cmdline())}


@pytest.fixture(scope="module")
def client(service, gpt2_tok) -> TokenizerClient:
    with TokenizerClient(service.url, expect_fingerprint=gpt2_tok.fingerprint) as c:
        yield c


@pytest.fixture(scope="module")
def corpus_sample(corpus_texts) -> list[str]:
    """The whole embedded corpus (~2 MB, 4k documents of all kinds of text)."""
    return corpus_texts


def raw_request(
    service,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    encode_chunked: bool = False,
) -> tuple[int, dict, dict]:
    """One request on a fresh connection; returns (status, JSON body, headers)."""
    conn = http.client.HTTPConnection(service.host, service.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def post_json(service, path: str, payload) -> tuple[int, dict]:
    status, body, _ = raw_request(
        service, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    return status, body


# ---- correctness ------------------------------------------------------------------------------------


def test_known_gpt2_ids_and_info(client, gpt2_tok):
    assert client.encode("hello world") == [31373, 995]
    assert client.encode("hello <|endoftext|>", allowed_special={"<|endoftext|>"}) == [31373, 220, 50256]
    assert client.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    assert client.encode_ordinary("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]
    assert client.decode([31373, 995]) == "hello world"
    assert client.count("hello world") == 2
    info = client.info()
    assert info["fingerprint"] == gpt2_tok.fingerprint
    assert info["n_vocab"] == gpt2_tok.n_vocab == 50257
    assert info["special_tokens"] == {"<|endoftext|>": 50256} and info["eot_id"] == 50256
    assert info["pattern"] == gpt2_tok.pattern
    assert info["limits"] == {**ServeLimits().limits(), "max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH}


def test_batch_encode_equals_in_process_on_corpus(client, gpt2_tok, corpus_sample):
    # encode_batch splits the corpus into many requests under the batch and body limits, with
    # `workers` of them in flight at once; results must come back in input order.
    served = client.encode_batch(corpus_sample, workers=WORKERS)
    expected = [gpt2_tok.encode(text) for text in corpus_sample]
    assert len(served) == len(expected)
    for i, (got, want) in enumerate(zip(served, expected)):
        assert got == want, f"document {i} differs"
    # ... and decoding the served ids gives the documents back (batch decode, chunked the same way).
    assert client.decode_batch(served) == corpus_sample


def test_single_requests_and_counts_equal_in_process(service, client, gpt2_tok, corpus_sample):
    for text in corpus_sample[:40]:
        ids = gpt2_tok.encode(text)
        assert client.encode(text) == ids
        assert client.count(text) == len(ids)
        assert client.decode(ids) == text
    status, body = post_json(service, "/v1/count", {"texts": corpus_sample[:10]})
    assert status == 200
    assert body["counts"] == [len(gpt2_tok.encode(t)) for t in corpus_sample[:10]]
    assert body["total"] == sum(body["counts"])
    assert body["fingerprint"] == gpt2_tok.fingerprint


def test_decode_errors_modes(client):
    lone = [BYTE_TO_ID[0x80]]  # a lone UTF-8 continuation byte: not text on its own
    assert client.decode(lone) == "\ufffd"
    assert client.decode(lone, errors="ignore") == ""
    assert client.decode(lone, errors="backslashreplace") == "\\x80"
    with pytest.raises(TokenizerServiceError) as err:
        client.decode(lone, errors="strict")
    assert err.value.status == 422 and err.value.code == "invalid_utf8"
    assert client.decode_batch([[31373], lone]) == ["hello", "\ufffd"]


def _normalised_default(value):
    return value if value is None or isinstance(value, str) or value is inspect.Parameter.empty else frozenset(value)


@pytest.mark.parametrize("method", ["encode", "decode", "encode_batch"])
def test_client_mirrors_tokenizer_signatures(method):
    """Same parameter names, order and defaults as Tokenizer, so the client is a drop-in."""
    ours = list(inspect.signature(getattr(TokenizerClient, method)).parameters.values())
    theirs = list(inspect.signature(getattr(Tokenizer, method)).parameters.values())
    assert [(p.name, p.kind) for p in ours] == [(p.name, p.kind) for p in theirs]
    for a, b in zip(ours, theirs):
        assert _normalised_default(a.default) == _normalised_default(b.default), (method, a.name)


def test_fingerprint_in_every_response_and_client_check(service, gpt2_tok):
    for method, path, body in [
        ("GET", "/healthz", None),
        ("GET", "/v1/info", None),
        ("POST", "/v1/encode", b'{"text": "a"}'),
        ("POST", "/v1/encode", b"{"),
    ]:
        _, _, headers = raw_request(service, method, path, body, {"Content-Type": "application/json"})
        assert headers["x-tokenizer-fingerprint"] == gpt2_tok.fingerprint
    with pytest.raises(FingerprintMismatch):
        TokenizerClient(service.url, expect_fingerprint="0" * 64).encode("hello")


# ---- concurrency ------------------------------------------------------------------------------------


def test_16_concurrent_clients_get_their_own_results(service, client, gpt2_tok, corpus_sample):
    n_clients = 16
    start = threading.Barrier(n_clients)

    def one_client(k: int) -> list[tuple[str, list[int]]]:
        # Each client has distinct texts (its own slice plus a tag), so a crossed answer cannot match.
        texts = [f"client {k} request {j}: " + corpus_sample[(k * 7 + j) % len(corpus_sample)][:2000] for j in range(6)]
        start.wait()
        results = []
        for text in texts:
            ids = client.encode(text)  # shared client: one keep-alive connection per thread
            results.append((text, ids))
            assert client.decode(ids) == text
        results.append(("batch", client.encode_batch(texts[:3])))
        return results

    with ThreadPoolExecutor(n_clients) as pool:
        outcomes = list(pool.map(one_client, range(n_clients)))
    for k, results in enumerate(outcomes):
        for text, ids in results[:-1]:
            assert ids == gpt2_tok.encode(text), f"client {k} got someone else's ids"
        batch_texts = [t for t, _ in results[:3]]
        assert results[-1][1] == [gpt2_tok.encode(t) for t in batch_texts]


# ---- bad input and limits ---------------------------------------------------------------------------


BAD_REQUESTS = [
    # (name, path, raw body, content type, expected status, expected error code)
    ("malformed json", "/v1/encode", b'{"text": "unterminated', "application/json", 400, "malformed_json"),
    ("deeply nested json", "/v1/encode", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, None),
    ("not an object", "/v1/encode", b'["hello"]', "application/json", 422, "invalid_request"),
    ("wrong type text", "/v1/encode", b'{"text": 5}', "application/json", 422, "invalid_request"),
    ("null text", "/v1/encode", b'{"text": null}', "application/json", 422, "invalid_request"),
    ("both text and texts", "/v1/encode", b'{"text": "a", "texts": ["b"]}', "application/json", 422, "invalid_request"),
    ("neither", "/v1/encode", b"{}", "application/json", 422, "invalid_request"),
    ("misspelt field", "/v1/encode", b'{"txt": "a"}', "application/json", 422, "invalid_request"),
    ("empty batch", "/v1/encode", b'{"texts": []}', "application/json", 422, "invalid_request"),
    (
        "batch too large",
        "/v1/encode",
        json.dumps({"texts": ["a"] * (MAX_BATCH + 1)}).encode(),
        "application/json",
        422,
        "invalid_request",
    ),
    ("disallowed special", "/v1/encode", b'{"text": "x<|endoftext|>"}', "application/json", 422, "disallowed_special"),
    (
        "disallowed special in batch",
        "/v1/count",
        b'{"texts": ["ok", "x<|endoftext|>"]}',
        "application/json",
        422,
        "disallowed_special",
    ),
    (
        "unknown special",
        "/v1/encode",
        b'{"text": "x", "allowed_special": ["<|fim|>"]}',
        "application/json",
        422,
        "unknown_special",
    ),
    ("string id", "/v1/decode", b'{"ids": ["1"]}', "application/json", 422, "invalid_request"),
    ("float id", "/v1/decode", b'{"ids": [1.5]}', "application/json", 422, "invalid_request"),
    ("bool id", "/v1/decode", b'{"ids": [true]}', "application/json", 422, "invalid_request"),
    ("unknown id", "/v1/decode", b'{"ids": [31373, 50257]}', "application/json", 422, "invalid_request"),
    ("huge id", "/v1/decode", b'{"ids": [123456789012345678901234567890]}', "application/json", 422, "invalid_request"),
    ("negative id", "/v1/decode", b'{"batch": [[1], [-1]]}', "application/json", 422, "invalid_request"),
    ("empty decode batch", "/v1/decode", b'{"batch": []}', "application/json", 422, "invalid_request"),
    (
        "bad errors mode",
        "/v1/decode",
        b'{"ids": [1], "errors": "surrogateescape"}',
        "application/json",
        422,
        "invalid_request",
    ),
    ("invalid utf-8", "/v1/encode", b'{"text": "\xff"}', "application/json", 400, None),
    ("text/plain body", "/v1/encode", b'{"text": "a"}', "text/plain", 415, "unsupported_media_type"),
    ("unknown path", "/v2/encode", b'{"text": "a"}', "application/json", 404, "not_found"),
]


@pytest.mark.parametrize("name,path,body,ctype,status,code", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_a_4xx_json_error(service, name, path, body, ctype, status, code):
    got_status, got, _ = raw_request(service, "POST", path, body, {"Content-Type": ctype})
    assert got_status == status, got
    assert set(got) == {"error", "message"} and got["message"]
    if code:
        assert got["error"] == code


def test_errors_name_what_was_wrong(service):
    _, body = post_json(service, "/v1/count", {"texts": ["ok", "x<|endoftext|>"]})
    assert body["message"].startswith("texts[1]:") and "<|endoftext|>" in body["message"]
    _, body = post_json(service, "/v1/decode", {"batch": [[1], [2, 99999]]})
    assert "batch[1][1]" in body["message"]
    _, body = post_json(service, "/v1/encode", {"txt": "a"})
    assert "txt" in body["message"]
    _, body = post_json(service, "/v1/encode", {"texts": []})
    assert "texts" in body["message"]


def test_client_raises_value_error_like_the_tokenizer(client, gpt2_tok):
    with pytest.raises(ValueError, match="disallowed special token"):
        gpt2_tok.encode("<|endoftext|>")
    with pytest.raises(ValueError, match="disallowed special token") as err:
        client.encode("<|endoftext|>")
    assert err.value.status == 422 and err.value.code == "disallowed_special"
    with pytest.raises(ValueError):
        client.decode([50257])


def test_body_limit_with_content_length(service):
    big = json.dumps({"text": "a" * (MAX_BODY + 1)}).encode()
    status, body, _ = raw_request(service, "POST", "/v1/encode", big, {"Content-Type": "application/json"})
    assert status == 413 and body["error"] == "body_too_large" and str(MAX_BODY) in body["message"]
    # Just under the limit is served.
    ok = json.dumps({"text": "ab " * ((MAX_BODY - 100) // 3)}).encode()
    assert len(ok) <= MAX_BODY
    status, body, _ = raw_request(service, "POST", "/v1/count", ok, {"Content-Type": "application/json"})
    assert status == 200 and body["count"] > 0


def test_body_limit_counts_streamed_bytes(service):
    """Chunked transfer has no Content-Length: the middleware must count what actually arrives."""

    def chunks(n_chunks: int):
        yield b'{"text": "'
        for _ in range(n_chunks):
            yield b"x" * 16384
        yield b'"}'

    over = MAX_BODY // 16384 + 2
    status, body, _ = raw_request(
        service,
        "POST",
        "/v1/encode",
        chunks(over),
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 413 and body["error"] == "body_too_large"
    status, body, _ = raw_request(
        service,
        "POST",
        "/v1/count",
        chunks(2),
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert status == 200 and body["count"] > 0


def test_invalid_content_length_is_400(service):
    conn = http.client.HTTPConnection(service.host, service.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/encode")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "-5")
        conn.endheaders()
        resp = conn.getresponse()
        assert 400 <= resp.status < 500
    finally:
        conn.close()


def test_workers_survive_everything(service):
    """After all the bad input above (tests run in file order), the same worker processes still serve."""
    assert worker_processes(service) == service.initial_workers, "a worker died and was replaced"
    status, body, _ = raw_request(service, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok"


# ---- settings and process lifecycle -----------------------------------------------------------------


def test_defaults_bind_loopback_with_8mib_limit():
    args = parse_args(["--tokenizer", "x.json"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_body_bytes == 8 * 2**20
    assert ServeSettings(tokenizer_path="x").max_body_bytes == 8 * 2**20
    with pytest.raises(ValueError, match="exactly one"):
        ServeSettings()
    with pytest.raises(ValueError, match="both"):
        ServeSettings(gpt2_encoder_json="e.json")


def test_recipe_serve_section_and_flag_precedence(tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('name = "tiny"\n\n[serve]\nport = 8123\nworkers = 3\nmax_batch = 16\n')
    args = parse_args(["--config", str(recipe), "--workers", "1"])
    assert args.tokenizer == str(Path("artifacts") / "tiny" / "tokenizer" / "tokenizer.ljt.json")
    assert (args.port, args.workers, args.max_batch, args.host) == (8123, 1, 16, "127.0.0.1")
    recipe.write_text('name = "tiny"\n\n[serve]\nprot = 8123\n')
    with pytest.raises(SystemExit):
        parse_args(["--config", str(recipe)])
    assert "unknown key 'prot'" in capsys.readouterr().err
    recipe.write_text('name = "tiny"\n\n[serve]\nport = "8123"\n')
    with pytest.raises(SystemExit):
        parse_args(["--config", str(recipe)])
    assert "'port' must be int" in capsys.readouterr().err


def test_missing_or_corrupt_tokenizer_file_fails_fast(tmp_path, capsys):
    missing = tmp_path / "nope.ljt.json"
    assert main(["--tokenizer", str(missing), "--port", "1"]) == 2
    assert str(missing) in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.ljt.json"
    corrupt.write_text('{"format": "something else"}')
    assert main(["--tokenizer", str(corrupt), "--port", "1"]) == 2
    assert str(corrupt) in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_shuts_down_cleanly(gpt2_files, workers):
    """GPT-2 straight from encoder.json/vocab.bpe. SIGTERM while a request is half-sent: that request
    is still answered (graceful shutdown), then the service exits 0 and leaves no worker behind."""
    svc = ServiceProcess(
        ["--gpt2", str(gpt2_files[0]), str(gpt2_files[1]), "--workers", str(workers), "--log-level", "warning"]
    )
    with svc:
        assert TokenizerClient(svc.url).encode("hello world") == [31373, 995]
        children = psutil.Process(svc.process.pid).children(recursive=True)
        body = json.dumps({"text": " ".join(["hello world"] * 1000)}).encode()
        conn = http.client.HTTPConnection(svc.host, svc.port, timeout=30)
        conn.putrequest("POST", "/v1/count")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[:100])  # the request is in flight: the server is waiting for the rest
        time.sleep(0.3)
        t0 = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        conn.send(body[100:])
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["count"] == 2000
        conn.close()
        try:
            code = svc.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running 10 s after SIGTERM:\n{svc.log()}")
        assert code == 0, svc.log()
        assert time.monotonic() - t0 < 10
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"worker processes left behind: {alive}"


# ---- schema-driven fuzzing ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(service):
    """The service's own OpenAPI document, as schemathesis sees it (fetched over HTTP)."""
    return schemathesis.openapi.from_url(service.url + "/openapi.json")


def _fuzz_checks():
    # positive_data_acceptance is left out on purpose: schema-valid input can still be refused with
    # 422 for facts a JSON schema cannot state (decode errors="strict" on ids that are not UTF-8).
    return [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
    ]


def test_schema_fuzzing_finds_no_server_errors(api_schema, service):
    """Every operation, schema-valid and schema-violating bodies (schemathesis + hypothesis, bounded and
    derandomised): never a 5xx, only documented status codes, responses matching their schema, and
    schema-violating input refused with a 4xx."""
    checks = _fuzz_checks()
    operations = [op.ok() for op in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/encode", "/v1/decode", "/v1/count", "/v1/info", "/healthz"}
    n_cases = 0
    for operation in operations:
        # A GET without parameters has nothing that could violate the schema: positive cases only.
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
            )
            def run(case):
                nonlocal n_cases
                n_cases += 1
                case.call_and_validate(base_url=service.url, checks=checks)

            run()
    assert n_cases >= 3 * 2 * 10  # the POST operations got real examples in both modes
    assert worker_processes(service) == service.initial_workers
