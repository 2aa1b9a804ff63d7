"""The JSON endpoints behind the tokenizer playground and the shard browser, in-process (no sockets, no
browser): tokens equal encode(), honest bytes, merge steps that end where encoding ends, the same refusals
as the API, shard statistics equal to make inspect's, documents found by id and position equal to
iter_documents (across shard boundaries, npy and arrow), damaged shards refused, and a big shard read a
page at a time. The pages themselves, in a real browser: tests/test_pages_browser.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pages_helpers import NAME, copy_recipe, demo_project, flip_last_byte
from pipeline_helpers import write_recipe

from contract.shard_documents import locate_id, locate_position, read_page
from contract.shard_format import ShardFormatError, ShardReader
from contract.shard_stats import document_lengths, length_histogram
from harness.synthetic_shards import random_documents, write_shards
from pipelines.inspect import collect
from service import ServeSettings, create_app, parse_args
from service.pages_playground import MAX_SHOWN_TOKENS
from service.pages_tokenizers import shown_text
from tokenizer import Tokenizer

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return demo_project(tmp_path_factory)


@pytest.fixture(scope="module")
def artifacts(project, tmp_path_factory) -> Path:
    """demo (intact, the original), damaged (a flipped byte in train shard 1), truncated (a shard cut short)."""
    root = tmp_path_factory.mktemp("pages-api") / "artifacts"
    root.mkdir()
    (root / NAME).symlink_to(project / "artifacts" / NAME)
    flip_last_byte(copy_recipe(project, root, "damaged") / "shards" / "train_000001.npy")
    victim = copy_recipe(project, root, "truncated") / "shards" / "train_000002.npy"
    victim.write_bytes(victim.read_bytes()[:-10])
    return root


@pytest.fixture(scope="module")
def tok_path(project) -> Path:
    return project / "artifacts" / NAME / "tokenizer" / "tokenizer.ljt.json"


@pytest.fixture(scope="module")
def tok(tok_path) -> Tokenizer:
    return Tokenizer.load(tok_path)


@pytest.fixture(scope="module")
def gpt2(gpt2_files) -> Tokenizer:
    return Tokenizer.from_gpt2_files(*gpt2_files)


@pytest.fixture(scope="module")
def client(tok, tok_path, artifacts) -> TestClient:
    settings = ServeSettings(tokenizer_path=str(tok_path), artifacts_dir=str(artifacts), max_body_bytes=MAX_BODY,
                             max_run_chars=5000)
    return TestClient(create_app(tok, settings))


def tokenize(client, text: str, tokenizer: str = "served", special: str = "disallowed"):
    return client.post("/pages/api/tokenize", json={"tokenizer": tokenizer, "text": text, "special": special})


TEXTS = ["hello world", "Hello world, it's 2026!  000000000\n\n\tdef f(x):\n        return x",
         " tokenization 🤗 日本語 naïve café", "", "   ", "\u05c9'x"]


# ------------------------------------------------------------------------------------------ playground
@pytest.mark.parametrize("which", ["served", "gpt2"])
def test_tokens_are_the_ids_encode_gives(client, tok, gpt2, which):
    reference = tok if which == "served" else gpt2
    for text in TEXTS:
        answer = tokenize(client, text, which).json()
        ids = reference.encode(text)
        assert answer["ids"] == ids and answer["count"] == len(ids) and answer["characters"] == len(text)
        assert answer["chars_per_token"] == (round(len(text) / len(ids), 3) if ids else None)
        assert answer["tokenizer"]["fingerprint"] == reference.fingerprint
        # the facts of every token shown: its bytes are exactly the token's, and they add up to the text
        assert b"".join(bytes.fromhex(answer["tokens"][str(i)]["hex"]) for i in ids) == text.encode()


def test_special_tokens_allowed_disallowed_or_plain_text(client, tok):
    text = "end <|endoftext|> here"
    assert tokenize(client, text, special="allowed").json()["ids"] == tok.encode(text, allowed_special="all")
    assert tokenize(client, text, special="text").json()["ids"] == tok.encode(text, disallowed_special=())
    refused = tokenize(client, text)
    api = client.post("/v1/encode", json={"text": text})
    assert refused.status_code == api.status_code == 422
    assert refused.json()["error"] == api.json()["error"] == "disallowed_special"
    # the tokenizer's own words, as the API says them; only the hint differs (the page's choices, not fields)
    assert refused.json()["message"].startswith(api.json()["message"].split(" Over HTTP")[0])
    assert tokenize(client, text, special="allowed").json()["tokens"][str(tok.eot_id)]["kind"] == "special"


def test_bytes_that_are_not_whole_characters_are_shown_as_such(client, gpt2):
    answer = tokenize(client, " 🤗 日本", "gpt2").json()
    shown = [answer["tokens"][str(i)] for i in answer["ids"]]
    # GPT-2 cuts the emoji's four bytes over three tokens: each shows its bytes, none shows U+FFFD
    assert [t["text"] for t in shown[:3]] == [" <0xF0><0x9F>", "<0xA4>", "<0x97>"]
    assert all(t["partial"] for t in shown[:3]) and not any("\ufffd" in t["text"] for t in shown)
    assert shown_text("é".encode()) == ("é", False) and shown_text(b"\xc3") == ("<0xC3>", True)
    assert shown_text(b"a\xe2\x82") == ("a<0xE2><0x82>", True)


def test_hover_facts_name_the_merge_that_made_each_token(client, tok):
    answer = tokenize(client, "The tokenizer merges bytes into tokens, by rank.").json()
    for ident in answer["ids"]:
        info = answer["tokens"][str(ident)]
        token = tok.decode_single_token_bytes(ident)
        assert info["rank"] == ident
        if len(token) == 1:
            assert info["kind"] == "byte" and info["merge"] is None
        else:   # the two parts were learnt before it, and they make it
            a, b = info["merge"]
            assert a < ident and b < ident
            assert token == tok.decode_single_token_bytes(a) + tok.decode_single_token_bytes(b)


@pytest.mark.parametrize("which", ["served", "gpt2"])
def test_merge_steps_end_where_encoding_ends(client, tok, gpt2, which):
    reference = tok if which == "served" else gpt2
    for word in [" tokenization", "000000000", "Hello world, it's 2026!", " 🤗", "naïve", "a"]:
        answer = client.post("/pages/api/merges", json={"tokenizer": which, "text": word}).json()
        finals = []
        for piece in answer["pieces"]:
            steps = piece["steps"]
            assert steps[0]["ids"] == [reference.encode_single_piece(bytes([b]))[0] for b in piece["piece"].encode()]
            for before, after in zip(steps, steps[1:]):   # one merge per step, lowest rank first
                assert len(after["ids"]) == len(before["ids"]) - 1 and after["rank"] >= (before["rank"] or 0)
                i = after["merged"]
                assert after["ids"][i] == after["rank"]
            finals += steps[-1]["ids"]
        assert finals == answer["ids"] == reference.encode_ordinary(word)
        if which == "gpt2" and word == " tokenization":
            assert answer["ids"] == [11241, 1634]   # the README's example


def test_the_choices_and_unknown_or_unreadable_tokenizers(client, artifacts):
    choices = {c["key"]: c for c in client.get("/pages/api/tokenizers").json()["tokenizers"]}
    assert {"served", "gpt2", f"file:{NAME}/tokenizer/tokenizer.ljt.json", f"file:{NAME}/tokenizer/tokenizer.tiktoken",
            f"file:{NAME}/tokenizer/hf/tokenizer.json"} <= set(choices)
    assert "(the recipe's)" in choices[f"file:{NAME}/tokenizer/tokenizer.ljt.json"]["label"]
    for key in ("file:demo/tokenizer/tokenizer.ljt.json", "file:demo/tokenizer/hf/tokenizer.json",
                "file:demo/tokenizer/tokenizer.tiktoken"):
        assert tokenize(client, "hello world", key).json()["ids"] == tokenize(client, "hello world").json()["ids"]
    for key in ("nope", "file:../../../etc/passwd", f"file:{NAME}/shards/manifest.json"):
        r = tokenize(client, "x", key)
        assert r.status_code == 404 and r.json()["error"] == "unknown_tokenizer", r.json()
    bad = artifacts / "damaged" / "tokenizer" / "cut.ljt.json"   # a file cut short: listed, refused when chosen
    bad.write_bytes((artifacts / NAME / "tokenizer" / "tokenizer.ljt.json").read_bytes()[:200])
    r = tokenize(client, "x", "file:damaged/tokenizer/cut.ljt.json")
    assert r.status_code == 422 and r.json()["error"] == "tokenizer_unreadable"
    assert str(bad) in r.json()["message"]


def test_refusals_are_the_apis(client, tok):
    # a body over max_body_bytes: refused before it is read, by the same middleware as /v1/
    huge = "word " * (MAX_BODY // 5 + 10)
    for url, body in (("/pages/api/tokenize", {"text": huge}), ("/v1/encode", {"text": huge})):
        r = client.post(url, json=body)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
        assert f"the limit is {MAX_BODY} bytes" in r.json()["message"]
    run = "x" * 6000   # one piece longer than max_run_chars: the API's own message, word for word
    page, api = tokenize(client, run), client.post("/v1/encode", json={"text": run})
    assert page.status_code == api.status_code == 413 and page.json() == api.json()
    # ids: validated as /v1/decode validates them
    ids = [1, 2, 99999, "x", -1]
    page, api = client.post("/pages/api/ids", json={"ids": ids}), client.post("/v1/decode", json={"ids": ids})
    assert page.status_code == api.status_code == 422 and page.json() == api.json()
    good = client.post("/pages/api/ids", json={"ids": [int(i) for i in tok.encode("hello")]}).json()
    assert good["text"] == "hello" and good["ids"] == tok.encode("hello")
    # malformed JSON, not JSON, a wrong type, an unknown field
    r = client.post("/pages/api/tokenize", content=b'{"text": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = client.post("/pages/api/tokenize", content=b"text", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    for body in ({"text": 5}, {"text": "a", "bogus": 1}, {"text": "a", "special": "sometimes"}):
        r = client.post("/pages/api/tokenize", json=body)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.json()
    r = client.post("/pages/api/merges", json={"text": "a" * 201})
    assert r.status_code == 413 and "at most 200" in r.json()["message"]


def test_a_long_text_is_counted_whole_and_shown_in_part(client, tok):
    text = "The quick brown fox jumps over the lazy dog. " * 1300   # ~58 KB, within the body limit
    answer = tokenize(client, text).json()
    ids = tok.encode(text)
    assert answer["count"] == len(ids) > MAX_SHOWN_TOKENS
    assert answer["shown"] == MAX_SHOWN_TOKENS and answer["ids"] == ids[:MAX_SHOWN_TOKENS]


def test_the_pages_and_their_files_are_served(client):
    for path, marker in (("/", "Tokenizer playground"), ("/shards", "Shard browser")):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and marker in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
    for name in ("pages.css", "common.js", "playground.js", "shards.js"):
        assert client.get(f"/pages/static/{name}").status_code == 200
    for name in ("nope.js", "..%2Fapp.py", "../app.py"):
        assert client.get(f"/pages/static/{name}").status_code == 404
    assert not any(p.startswith("/pages") or p in ("/", "/shards") for p in client.get("/openapi.json").json()["paths"])


def test_every_page_file_is_installed_with_the_package():
    """pyproject's package-data must cover service/static/pages/, or `pip install .` serves pages without files."""
    import fnmatch

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    repo = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    static = repo / "service" / "static"
    files = [p.relative_to(repo / "service").as_posix() for p in static.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_the_artifacts_directory_comes_from_the_flag_the_recipe_or_the_default(tmp_path, tok_path):
    recipe = write_recipe(tmp_path, name="x")
    assert parse_args(["--config", str(recipe)]).artifacts == str(tmp_path / "artifacts")
    assert parse_args(["--config", str(recipe), "--artifacts", "elsewhere"]).artifacts == "elsewhere"
    assert parse_args(["--tokenizer", str(tok_path)]).artifacts == "artifacts"


# ------------------------------------------------------------------------------------------ shards
def test_the_overview_lists_stages_and_shards(client, project):
    answer = client.get(f"/pages/api/shards/{NAME}").json()
    assert [s["stage"] for s in answer["stages"]] == ["raw", "tokenizer", "shards"]
    assert all(s["ok"] for s in answer["stages"]) and answer["shards_error"] is None
    reader = ShardReader(project / "artifacts" / NAME / "shards")
    shards = answer["shards"]
    assert shards["vocab_size"] == reader.vocab_size == 1024 and shards["tokenizer"]["available"]
    for split in reader.splits:
        rows = shards["splits"][split]["shards"]
        assert [r["path"] for r in rows] == [e["path"] for e in reader.shards(split)]
        assert [r["tokens"] for r in rows] == [e["tokens"] for e in reader.shards(split)]
        assert all(r["auto"] and r["status"] in ("unchecked", "ok") for r in rows)
    verdict = client.post(f"/pages/api/shards/{NAME}/verify", json={"split": "val", "shard": 0}).json()
    assert verdict["status"] == "ok" and verdict["message"] is None
    row = client.get(f"/pages/api/shards/{NAME}").json()["shards"]["splits"]["val"]["shards"][0]
    assert row["status"] == "ok"   # remembered while the files are unchanged
    assert client.get("/pages/api/shards").json()["recipes"] == ["damaged", NAME, "truncated"]


def test_statistics_are_make_inspects(client, project):
    reader = ShardReader(project / "artifacts" / NAME / "shards")
    facts = collect(reader, None, False, None, 0, 0, 25, None)
    stats = client.get(f"/pages/api/shards/{NAME}/stats?top=25").json()
    assert [(t["id"], t["count"]) for t in stats["top_tokens"]] == [(t["id"], t["count"]) for t in facts["top_tokens"]]
    assert all(s["all"] for s in stats["sample"].values())   # the demo is small enough to count whole
    tok = reader.load_tokenizer()
    assert [t["info"]["text"] for t in stats["top_tokens"]] == [
        shown_text(tok.decode_single_token_bytes(t["id"]))[0] for t in facts["top_tokens"]]
    lengths = {split: document_lengths(reader, reader.shards(split)) for split in reader.splits}
    assert stats["histogram"] == length_histogram(lengths)
    for split, info in stats["histogram"]["splits"].items():
        assert sum(info["counts"]) == info["documents"] == reader.num_documents(split)
        assert sum(info["shares"]) == pytest.approx(1.0)
        assert info["max"] == facts["splits"][split]["max_doc_tokens"]
        assert info["mean"] == facts["splits"][split]["mean_doc_tokens"]


def test_every_document_by_position_and_by_id(project):
    reader = ShardReader(project / "artifacts" / NAME / "shards")
    crossing = 0
    for split in reader.splits:
        for position, (doc_id, tokens) in enumerate(reader.iter_documents(split)):
            span = locate_position(reader, split, position)
            assert span.doc_id == doc_id and span.length == len(tokens)
            assert np.array_equal(read_page(reader, span, 0, span.length), tokens)
            assert locate_id(reader, doc_id) == span
            crossing += len(span.segments) > 1
    assert crossing >= 3   # the interesting case is there: documents cut by shard boundaries


@pytest.mark.parametrize("fmt", ["npy", "arrow"])
def test_documents_that_span_several_shards(tmp_path, fmt):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 99, size=n) for n in (5, 50, 7, 130, 3, 41, 1, 80)]   # 130 spans four 40-token shards
    reader = ShardReader(write_shards(tmp_path / "s", {"train": docs, "val": docs[:2]}, vocab_size=100, eot_id=99,
                                      tokenizer_fingerprint="0" * 64, shard_tokens=40, fmt=fmt))
    for split in reader.splits:
        for position, (doc_id, tokens) in enumerate(reader.iter_documents(split)):
            span = locate_position(reader, split, position)
            assert (span.doc_id, span.length) == (doc_id, len(tokens)) and locate_id(reader, doc_id) == span
            pages = [read_page(reader, span, offset, 17) for offset in range(0, span.length, 17)]
            assert np.array_equal(np.concatenate(pages), tokens)
    assert max(len(locate_position(reader, "train", p).segments) for p in range(len(docs))) == 4
    with pytest.raises(IndexError, match=r"split 'train' has 8 documents: positions 0\.\.7, got 8"):
        locate_position(reader, "train", 8)
    assert locate_id(reader, "no-such-id") is None


def test_a_document_page_through_the_api(client, project):
    reader = ShardReader(project / "artifacts" / NAME / "shards")
    spans = [locate_position(reader, "train", p) for p in range(reader.num_documents("train"))]
    span = max((s for s in spans if len(s.segments) > 1), key=lambda s: s.length)   # cut by a shard boundary
    doc_id, tokens = span.doc_id, read_page(reader, span, 0, span.length)
    assert len(tokens) > 1000
    first = client.get(f"/pages/api/shards/{NAME}/document", params={"id": doc_id, "limit": 1000}).json()
    assert first["ids"] == tokens[:1000].tolist() and first["length"] == len(tokens) and len(first["shards"]) >= 2
    position = first["position"]
    rest = client.get(f"/pages/api/shards/{NAME}/document",
                      params={"split": "train", "position": position, "offset": 1000, "limit": 5000}).json()
    assert rest["id"] == doc_id and rest["ids"] == tokens[1000:6000].tolist()
    assert first["tokens"][str(reader.eot_id)]["kind"] == "special" and first["unverified"] == []


def test_bad_requests_for_shards(client):
    cases = [
        ("/pages/api/shards/nope", 404, "unknown_recipe", "no recipe 'nope' under "),
        ("/pages/api/shards/nope/stats", 404, "unknown_recipe", "(recipes: damaged, demo, truncated)"),
        (f"/pages/api/shards/{NAME}/document?split=test", 404, "unknown_split", "no split 'test' (splits: "),
        (f"/pages/api/shards/{NAME}/document?id=no-such-doc", 404, "unknown_document", "no document 'no-such-doc'"),
        (f"/pages/api/shards/{NAME}/document?split=val&position=10", 404, "unknown_document",
         "split 'val' has 10 documents: positions 0..9, got 10"),
        (f"/pages/api/shards/{NAME}/document?position=-1", 422, "invalid_request", "greater than or equal to 0"),
        (f"/pages/api/shards/{NAME}/document?position=x", 422, "invalid_request", "valid integer"),
        (f"/pages/api/shards/{NAME}/document?limit=100000", 422, "invalid_request", "less than or equal to 5000"),
        (f"/pages/api/shards/{NAME}/document?split=val&offset=100000", 422, "invalid_request", "got offset 100000"),
    ]
    for url, status, code, words in cases:
        r = client.get(url)
        assert (r.status_code, r.json()["error"]) == (status, code) and words in r.json()["message"], (url, r.json())
    r = client.post(f"/pages/api/shards/{NAME}/verify", json={"split": "train", "shard": 999})
    assert r.status_code == 404 and r.json()["error"] == "unknown_shard"


def test_damaged_shards_are_refused_with_the_readers_words(client, artifacts):
    damaged = client.get("/pages/api/shards/damaged").json()["shards"]["splits"]["train"]["shards"]
    assert damaged[1]["status"] == "unchecked"
    verdict = client.post("/pages/api/shards/damaged/verify", json={"split": "train", "shard": 1}).json()
    with pytest.raises(ShardFormatError) as refused:   # what training and inspect say of this shard
        ShardReader(artifacts / "damaged" / "shards", verify=True)
    message = str(refused.value)
    assert message.startswith(f"{artifacts / 'damaged' / 'shards' / 'train_000001.npy'}: sha256 does not match")
    assert verdict == {"split": "train", "index": 1, "path": "train_000001.npy", "status": "damaged",
                       "message": message}
    r = client.get("/pages/api/shards/damaged/stats")
    assert r.status_code == 409 and r.json() == {"error": "shard_damaged", "message": message}
    reader = ShardReader(artifacts / "damaged" / "shards")
    before = int(reader.shards("train")[0]["documents"])
    assert client.get("/pages/api/shards/damaged/document?split=train&position=0").status_code == 200
    r = client.get(f"/pages/api/shards/damaged/document?split=train&position={before + 1}")
    assert r.status_code == 409 and r.json()["message"] == message
    # a shard with another size than the manifest's: the reader refuses the whole directory, and says why
    overview = client.get("/pages/api/shards/truncated").json()
    assert [s["stage"] for s in overview["stages"]] == ["raw", "tokenizer", "shards"]
    assert overview["shards"] is None and overview["shards_error"]["error"] == "shards_unusable"
    assert "train_000002.npy" in overview["shards_error"]["message"] and "(truncated or replaced)" in \
        overview["shards_error"]["message"]
    for tail in ("/stats", "/document"):
        r = client.get(f"/pages/api/shards/truncated{tail}")
        assert r.status_code == 409 and r.json() == overview["shards_error"]


# ------------------------------------------------------------------------------------------ a big shard
def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _peak_growth_mib(call) -> float:
    """How far this process's peak resident memory rises during call() (Linux: clear_refs resets the peak).
    Pages of a memory-mapped file count once touched, so reading a whole shard shows as its size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _hwm_kib()
    call()
    return (_hwm_kib() - before) / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak resident memory from /proc/self/status")
def test_a_big_shard_is_read_a_page_at_a_time(tmp_path, tok, tok_path):
    """64 MB of tokens in one shard: finding and reading a document, the overview and the statistics each
    touch a few MB of it, while reading the shard whole (the control) touches all 64."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tok_path.parent, artifacts / "big" / "tokenizer")
    n_tokens = 32 * 2**20
    docs = random_documents(n_tokens, tok.n_vocab, tok.eot_id, doc_tokens=1000)
    shard_dir = write_shards(artifacts / "big" / "shards", {"train": docs}, vocab_size=tok.n_vocab, eot_id=tok.eot_id,
                             tokenizer_fingerprint=tok.fingerprint, tokenizer_path="../tokenizer/tokenizer.ljt.json",
                             shard_tokens=n_tokens)
    big = TestClient(create_app(tok, ServeSettings(tokenizer_path=str(tok_path), artifacts_dir=str(artifacts))))
    url = "/pages/api/shards/big"
    warm = [big.get(url), big.get(f"{url}/document?position=0&limit=1")]   # imports, the tokenizer, first-use costs
    assert all(r.status_code == 200 for r in warm), [r.json() for r in warm]
    assert warm[0].json()["shards"]["splits"]["train"]["shards"][0]["auto"] is False   # too big to hash in passing

    answers = []
    growth = {
        "overview": _peak_growth_mib(lambda: answers.append(big.get(url))),
        "by position": _peak_growth_mib(lambda: answers.append(big.get(f"{url}/document?position=30000&limit=5000"))),
        "by id": _peak_growth_mib(lambda: answers.append(big.get(f"{url}/document?id=train-20000"))),
        "stats": _peak_growth_mib(lambda: answers.append(big.get(f"{url}/stats"))),
    }
    assert all(r.status_code == 200 for r in answers), [r.json() for r in answers]
    assert answers[1].json()["unverified"] == ["train_000000.npy"]
    assert len(answers[1].json()["ids"]) == answers[1].json()["length"] == 1001
    assert answers[2].json()["position"] == 20000 and not answers[3].json()["sample"]["train"]["all"]
    reader = ShardReader(shard_dir)
    whole = _peak_growth_mib(lambda: int(reader.shard_tokens(reader.shards("train")[0]).sum()))
    assert whole > 60, whole   # the measurement sees a whole shard
    assert all(mib < 16 for mib in growth.values()), growth
