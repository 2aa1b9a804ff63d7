"""The service's per-request limits over real HTTP: pathological bodies are refused fast and cheaply.

A `python -m service` child process with one worker (so its pid is the worker's, and its peak RSS is the
worker's peak RSS) serving GPT-2. Each limit is checked on the body that used to cost the most: one huge
run of a repeated character class (a single pre-token: BPE held ~300 bytes per byte and took tens of
seconds), ids that decode to 20x their size, and many distinct long runs that stay under every size
limit but need minutes of CPU. Windowed encoding must not change any id: checked against
`Tokenizer.encode` in-process, with windows small enough that every test text is cut many times.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import time

import pytest

from harness.service_process import ServiceProcess, peak_rss_kib
from service.budget import BoundedEncoder, RunCheck, TextRefused, WorkBudget
from service.client import TokenizerClient, TokenizerServiceError
from service.settings import ServeLimits
from tokenizer import Tokenizer
from tokenizer.pattern import REGEX_WHITESPACE

BODY = int(7.5 * 2**20)  # under the default 8 MiB body limit
LONGEST_GPT2_TOKEN = 35496  # 128 bytes


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_files) -> Tokenizer:
    return Tokenizer.from_gpt2_files(*gpt2_files)


@pytest.fixture(scope="module")
def service(gpt2_files):
    """Default limits except a CPU budget small enough to reach in a test."""
    args = ["--gpt2", *map(str, gpt2_files), "--workers", "1", "--log-level", "warning", "--max-cpu-seconds", "0.5"]
    with ServiceProcess(args) as svc:
        yield svc


def post(svc, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict, float]:
    """POST on a fresh connection: (status, JSON answer, seconds it took)."""
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=timeout)
    try:
        t0 = time.monotonic()
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), time.monotonic() - t0
    finally:
        conn.close()


def digit_runs(n_chars: int, run: int = 65536, seed: int = 0) -> str:
    """Random digit runs of `run` characters separated by spaces: every run a distinct pre-token (no cache
    hit), each within max_run_chars; BPE's slowest input, ~2.5 us of CPU per character (~1 us for runs of
    1000, ~9 us for one run of millions)."""
    rnd = random.Random(seed)
    return " ".join("".join(rnd.choices("0123456789", k=run)) for _ in range(n_chars // (run + 1)))


# ---- runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", " ", "7", "\u4e00"])
def test_huge_run_is_refused_at_once_without_memory(service, char):
    """7.5 MiB of one repeated character is a single pre-token: BPE on it took 40-90 s and 2.2 GB of
    worker memory. Now the run check refuses it before any BPE: fast, and the worker hardly grows."""
    text = char * ((BODY - 20) // len(char.encode()))
    body = json.dumps({"text": text}, ensure_ascii=False).encode()
    before = peak_rss_kib(service.process.pid)
    status, answer, seconds = post(service, "/v1/encode", body)
    assert status == 413 and answer["error"] == "run_too_long", answer
    assert f"{len(text)} consecutive" in answer["message"] and "65536 (max_run_chars)" in answer["message"]
    assert seconds < 5
    grown_mib = (peak_rss_kib(service.process.pid) - before) / 1024
    assert grown_mib < 150, f"worker peak RSS grew by {grown_mib:.0f} MiB"


def test_run_limit_is_exact(service, gpt2_tok):
    limit = ServeLimits().max_run_chars
    ok = "x" * limit
    status, answer, _ = post(service, "/v1/count", json.dumps({"texts": ["a b", ok]}).encode())
    assert status == 200 and answer["counts"][1] == len(gpt2_tok.encode(ok))
    status, answer, _ = post(service, "/v1/count", json.dumps({"texts": ["a b", "y " + ok + "x"]}).encode())
    assert status == 413 and answer["message"].startswith(f"texts[1]: {limit + 1} consecutive non-whitespace")


# ---- CPU time -------------------------------------------------------------------------------------------


def test_cpu_budget_stops_an_expensive_body(service):
    """1 MB of distinct digit runs stays under every size limit but needs ~2.5 s of CPU (7.5 MiB of them:
    ~20 s, and the worker answered nothing else meanwhile); with max_cpu_seconds=0.5 it is refused after
    about half a second of CPU (plus at most one window of work). Wall time depends on the machine's load:
    only the answer is checked, and that the worker is free again."""
    body = json.dumps({"texts": [digit_runs(250_000, seed=seed) for seed in range(4)]}).encode()
    status, answer, _ = post(service, "/v1/encode", body)
    assert status == 413 and answer["error"] == "too_expensive", answer
    assert "0.5 s of CPU time (max_cpu_seconds)" in answer["message"]
    # The worker is free again: a small request is answered at once.
    status, answer, _ = post(service, "/v1/count", b'{"text": "hello world"}')
    assert status == 200 and answer["count"] == 2


# ---- tokens and decoded bytes ----------------------------------------------------------------------------


def test_decode_cannot_amplify_a_body(service):
    """Each id of GPT-2's longest token is 6 bytes of JSON and 128 bytes of text: 7.5 MiB of them
    decoded to a 160 MiB answer and 880 MB of worker memory. Refused at max_decoded_bytes (32 MiB)."""
    n = (BODY - 20) // 6
    body = json.dumps({"ids": [LONGEST_GPT2_TOKEN] * n}, separators=(",", ":")).encode()
    before = peak_rss_kib(service.process.pid)
    status, answer, seconds = post(service, "/v1/decode", body)
    assert status == 413 and answer["error"] == "decoded_too_large", answer
    assert str(ServeLimits().max_decoded_bytes) in answer["message"]
    grown_mib = (peak_rss_kib(service.process.pid) - before) / 1024
    assert grown_mib < 400, f"worker peak RSS grew by {grown_mib:.0f} MiB"


@pytest.fixture(scope="module")
def small_limits_service(gpt2_files):
    args = ["--gpt2", *map(str, gpt2_files), "--workers", "1", "--log-level", "warning",
            "--max-tokens", "1000", "--max-decoded-bytes", "5000", "--max-run-chars", "100"]
    with ServiceProcess(args) as svc:
        yield svc


def test_token_and_decoded_size_limits(small_limits_service, gpt2_tok):
    svc = small_limits_service
    info = TokenizerClient(svc.url).info()["limits"]
    assert (info["max_tokens"], info["max_decoded_bytes"], info["max_run_chars"]) == (1000, 5000, 100)
    words = " ".join(["hello"] * 600)  # 600 tokens per text
    for path in ("/v1/encode", "/v1/count"):
        status, answer, _ = post(svc, path, json.dumps({"texts": [words]}).encode())
        assert status == 200
        status, answer, _ = post(svc, path, json.dumps({"texts": [words, words]}).encode())
        assert status == 413 and answer["error"] == "too_many_tokens" and "1000 tokens" in answer["message"]
    status, answer, _ = post(svc, "/v1/decode", json.dumps({"batch": [[31373] * 600, [31373] * 401]}).encode())
    assert status == 413 and answer["error"] == "too_many_tokens" and "1001 ids" in answer["message"]
    status, answer, _ = post(svc, "/v1/decode", json.dumps({"ids": [LONGEST_GPT2_TOKEN] * 39}).encode())
    assert status == 200 and len(answer["text"].encode()) == 39 * 128
    status, answer, _ = post(svc, "/v1/decode", json.dumps({"ids": [LONGEST_GPT2_TOKEN] * 40}).encode())
    assert status == 413 and answer["error"] == "decoded_too_large"
    status, answer, _ = post(svc, "/v1/encode", json.dumps({"text": "=" * 101}).encode())
    assert status == 413 and answer["error"] == "run_too_long"


def test_client_sizes_its_batches_to_the_limits(small_limits_service, gpt2_tok):
    """encode_batch splits by max_tokens too (a text never has more tokens than UTF-8 bytes)."""
    texts = [f"text {i}: " + " ".join(["hello"] * 300) for i in range(8)]  # ~2400 tokens together
    with TokenizerClient(small_limits_service.url) as client:
        assert client.encode_batch(texts) == [gpt2_tok.encode(t) for t in texts]
        with pytest.raises(TokenizerServiceError) as err:
            client.encode(" ".join(["hello"] * 1001))
        assert err.value.status == 413 and err.value.code == "too_many_tokens"


# ---- windowed encoding is exact ----------------------------------------------------------------------


def test_windowed_encoding_gives_the_tokenizers_ids(gpt2_tok, corpus_texts):
    """Windows of 64 characters cut every text many times, at whitespace after non-whitespace; the ids
    must be those of encoding each text whole, with and without special tokens, whatever the text."""
    encoder = BoundedEncoder(gpt2_tok, max_run_chars=10_000, max_tokens=10**9, window_chars=64)
    assert encoder.windowed
    eot = "<|endoftext|>"
    texts = [
        *corpus_texts[:300],
        "\n\n".join(corpus_texts[300:340]),
        f"a{eot}b {eot} c\n{eot}\n  {eot}x",
        "trailing spaces   " + "x" * 70 + "   \n\n\t ",
        "  leading\u3000ideographic\u00a0nbsp\u2028line separator " * 20,
        "surrogates \ud83d\ude00 lone \ud800 " * 10,
        "".join(random.Random(1).choice("ab \n\t.1é😀") for _ in range(5000)),
    ]
    for text in texts:
        for allowed, disallowed in [((), ()), ("all", "all")]:
            expected = gpt2_tok.encode(text, allowed_special=allowed, disallowed_special=disallowed)
            [got] = encoder.encode_all([text], ["text"], WorkBudget(60), allowed, disallowed)
            assert got.tolist() == expected
        assert "".join(encoder.windows(text)) == text


def test_windowed_encoding_refuses_disallowed_specials_like_the_tokenizer(gpt2_tok):
    encoder = BoundedEncoder(gpt2_tok, max_run_chars=10_000, max_tokens=10**9, window_chars=16)
    text = "fine text " * 10 + "then <|endoftext|> late"
    with pytest.raises(ValueError) as expected:
        gpt2_tok.encode(text)
    with pytest.raises(TextRefused) as got:
        encoder.encode_all(["ok", text], ["texts[0]", "texts[1]"], WorkBudget(60), set(), "all")
    assert got.value.where == "texts[1]" and str(got.value.error) == str(expected.value)


def test_other_patterns_are_encoded_whole(gpt2_tok):
    """The window cut is proven for GPT-2's pattern only; another pattern gets whole texts."""
    other = Tokenizer(dict(gpt2_tok.mergeable_ranks), {"<|endoftext|>": 50256}, pattern=r"\S+|\s+", name="other")
    encoder = BoundedEncoder(other, max_run_chars=10_000, max_tokens=10**9, window_chars=4)
    assert not encoder.windowed and list(encoder.windows("a b c d e f")) == ["a b c d e f"]
    [got] = encoder.encode_all(["a b c d e f"], ["text"], WorkBudget(60), set(), "all")
    assert got.tolist() == other.encode("a b c d e f")


def test_run_check_finds_exactly_the_runs_over_the_limit():
    """RunCheck looks only around every limit-th character; compare it with a scan of every run."""
    runs = re.compile(f"[{REGEX_WHITESPACE}]+|[^{REGEX_WHITESPACE}]+")

    def every_run(text: str, limit: int):
        for m in runs.finditer(text):
            if len(m.group()) > limit:
                return m.start(), len(m.group()), m.group()[0] in REGEX_WHITESPACE
        return None

    rnd = random.Random(0)
    for _ in range(5000):
        limit = rnd.randint(1, 12)
        # \x1c is whitespace to the stdlib `re`, not to the pattern's `regex` \s; \x85 and \u3000 are to both.
        alphabet = rnd.choice(["a ", "a  \n", "ab\u3000", "aaaaa ", "\x1c\x85a"])
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        assert RunCheck(limit).find(text) == every_run(text, limit), (text, limit)


def test_tokenizer_caches_are_emptied_after_a_bounded_amount_of_text(gpt2_tok, monkeypatch):
    """The tokenizer's caches would keep every distinct long chunk; the encoder empties them every
    CACHE_CLEAR_CHARS encoded characters, so what they hold between requests is bounded."""
    import service.budget

    monkeypatch.setattr(service.budget, "CACHE_CLEAR_CHARS", 10_000)
    cleared = []
    monkeypatch.setattr(gpt2_tok, "clear_cache", lambda: cleared.append(True))
    encoder = BoundedEncoder(gpt2_tok, max_run_chars=10_000, max_tokens=10**9)
    text = digit_runs(3_000, run=100)  # 2928 characters: the 4th request passes 10_000, and so on
    for request in range(1, 11):
        encoder.encode_all([text], ["text"], WorkBudget(60), set(), "all")
        assert len(cleared) == request // 4
