"""The tokenizer playground and the shard browser in a real headless browser (Debian's chromium through
Playwright, tests/browser.py), against the real service (`python -m service` as a child process) over a
demo-like project made by the real stages: what the page shows is read back from the page itself.

Screenshots of both pages are saved on every run: into the test's temporary directory, or into the
directory LLM_JOURNEY_SCREENSHOTS names (`LLM_JOURNEY_SCREENSHOTS=docs/img make test PYTEST_ARGS=tests/
test_pages_browser.py` refreshes the README's)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pages_helpers import NAME, copy_recipe, demo_project, flip_last_byte, screenshot_dir

from contract.shard_documents import locate_position, read_page
from contract.shard_format import ShardReader
from harness.service_process import ServiceProcess
from service.pages_playground import MAX_SHOWN_TOKENS
from tokenizer import Tokenizer

MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return demo_project(tmp_path_factory)


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
def server(project, tok_path, tmp_path_factory):
    """The service as `make serve` runs it (one worker), browsing: demo, damaged (a flipped byte in train
    shard 1), truncated (a shard cut short)."""
    artifacts = tmp_path_factory.mktemp("pages-browser") / "artifacts"
    artifacts.mkdir()
    (artifacts / NAME).symlink_to(project / "artifacts" / NAME)
    flip_last_byte(copy_recipe(project, artifacts, "damaged") / "shards" / "train_000001.npy")
    victim = copy_recipe(project, artifacts, "truncated") / "shards" / "train_000002.npy"
    victim.write_bytes(victim.read_bytes()[:-10])
    args = ["--tokenizer", str(tok_path), "--artifacts", str(artifacts), "--workers", "1",
            "--max-body-bytes", str(MAX_BODY)]
    with ServiceProcess(args) as svc:
        yield svc


@pytest.fixture
def page(page, server):
    """tests/browser.py's page, watched: no uncaught script error, and no request to anywhere but the service
    (the pages work offline). A 4xx is not an error here: showing it is what the pages must do."""
    script_errors, elsewhere = [], []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("request", lambda request: None if request.url.startswith(server.url) else elsewhere.append(request.url))
    yield page
    assert script_errors == [] and elsewhere == []


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


def call(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    """What the API answers, straight over HTTP: the page must show the same."""
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def page_json(value) -> bytes:
    """A body as the page's JSON.stringify writes it (no spaces), so its size, named in a 413, is the same."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def shown_ids(page, selector: str) -> list[int]:
    return page.locator(selector).evaluate_all("spans => spans.map(s => Number(s.dataset.id))")


def wait_for_text(page, text: str) -> None:
    """Until both panes show the tokens of exactly this text (the answer names how many characters it had)."""
    for pane in ("left", "right"):
        page.wait_for_selector(f'#{pane}[data-chars="{len(text)}"][data-state="ready"]')


# ------------------------------------------------------------------------------------------ playground
def test_typing_text_shows_the_ids_encode_gives(page, server, tok, gpt2):
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    box = page.locator("#text")
    box.fill("")
    typed = "Hello wörld, it's 2026! 🤗 tokenization"
    box.press_sequentially(typed)
    wait_for_text(page, typed)
    for pane, reference in (("left", tok), ("right", gpt2)):
        ids = reference.encode(typed)
        assert shown_ids(page, f"#{pane} .tokens .tok") == ids
        assert page.locator(f"#{pane} .count").text_content() == str(len(ids))
        assert page.locator(f"#{pane} .cpt").text_content() == f"{len(typed) / len(ids):.2f}"
    first = page.locator("#left .tokens .tok").first
    assert first.get_attribute("title").startswith(f"id {tok.encode(typed)[0]}\nrank ")
    # GPT-2 cuts the emoji inside its UTF-8 bytes: those tokens show the bytes, not a replacement character
    gpt2_texts = page.locator("#right .tokens .tok").all_text_contents()
    assert " <0xF0><0x9F>" in gpt2_texts and "\ufffd" not in "".join(gpt2_texts)
    assert page.locator("#right .tok.partial").count() == 3

    # special tokens: an error by default (as encode), the special id when allowed
    with_special = "end <|endoftext|> here"
    box.fill(with_special)
    page.wait_for_selector('#left[data-state="error"]')
    status, api = call(server, "POST", "/v1/encode", page_json({"text": with_special}))
    assert status == 422 and page.locator("#left .error .code").text_content() == "422 disallowed_special"
    assert page.locator("#left .error .message").text_content().startswith(api["message"].split(" Over HTTP")[0])
    page.select_option("#special", "allowed")
    wait_for_text(page, with_special)
    assert shown_ids(page, "#left .tokens .tok") == tok.encode(with_special, allowed_special="all")
    assert page.locator("#left .tok.special").text_content() == "<|endoftext|>"


def test_merge_steps_and_ids_to_tokens(page, server, tok):
    page.goto(server.url + "/")
    page.wait_for_selector("#merges[data-state=ready]")
    page.fill("#word", " merges")
    page.click("#merge-form button")
    expected = tok.encode_ordinary(" merges")
    page.wait_for_function("ids => JSON.stringify([...document.querySelectorAll('#merges .final .tok')]"
                           ".map(s => Number(s.dataset.id))) === ids", arg=json.dumps(expected, separators=(",", ":")))
    steps = page.locator("#merges .piece .step")
    assert steps.count() == len(b" merges") - len(expected) + 1   # the bytes, then one row per merge
    assert page.locator("#merges .piece .step").first.locator(".tok").count() == len(" merges")

    # invalid ids: the message /v1/decode gives, word for word
    page.fill("#ids-input", "1, 2, 99999, x")
    page.click("#ids-form button")
    page.wait_for_selector("#ids[data-state=error]")
    status, api = call(server, "POST", "/v1/decode", page_json({"ids": [1, 2, 99999, "x"]}))
    assert status == 422 and page.locator("#ids .error .message").text_content() == api["message"]
    ids = tok.encode("hello world")
    page.fill("#ids-input", ", ".join(map(str, ids)))
    page.click("#ids-form button")
    page.wait_for_selector("#ids[data-state=ready]")
    assert shown_ids(page, "#ids .tokens .tok") == ids
    assert page.locator("#ids .decoded").text_content() == 'decoded: "hello world"'


def test_a_huge_paste_is_refused_or_shown_in_part(page, server, tok):
    page.goto(server.url + "/")
    page.wait_for_selector('#left[data-state="ready"]')
    # over the body limit: the service's 413, as the API words it for the same body
    huge = "word " * (MAX_BODY // 5 + 100)
    page.fill("#text", huge)
    page.wait_for_selector('#left[data-state="error"]')
    status, api = call(server, "POST", "/pages/api/tokenize",
                       page_json({"tokenizer": "served", "text": huge, "special": "disallowed"}))
    assert status == 413 and api["error"] == "body_too_large"
    assert page.locator("#left .error .code").text_content() == "413 body_too_large"
    assert page.locator("#left .error .message").text_content() == api["message"]
    # a run the BPE would take as one piece: /v1/encode's own 413 run_too_long message
    run = "x" * 70_000
    page.fill("#text", run)
    page.wait_for_function("() => document.querySelector('#left .error .code')?.textContent === '413 run_too_long'")
    status, api = call(server, "POST", "/v1/encode", page_json({"text": run}))
    assert status == 413 and page.locator("#left .error .message").text_content() == api["message"]
    # big but allowed: every token counted, the first MAX_SHOWN_TOKENS drawn, and the page says so
    big = "The quick brown fox jumps over the lazy dog. " * 2500
    page.fill("#text", big)
    wait_for_text(page, big)
    ids = tok.encode(big)
    assert page.locator("#left .count").text_content() == f"{len(ids):,}"
    assert page.locator("#left .tokens .tok").count() == MAX_SHOWN_TOKENS
    note = f"showing the first {MAX_SHOWN_TOKENS:,} of {len(ids):,} tokens"
    assert page.locator("#left .note").text_content() == note


def test_playground_screenshot(page, server, shots):
    page.goto(server.url + "/")
    wait_for_text(page, page.locator("#text").input_value())
    page.wait_for_selector("#merges[data-state=ready]")
    page.locator("#right .tokens .tok.partial").first.hover()
    page.screenshot(path=str(shots / "playground.png"), full_page=True)
    assert (shots / "playground.png").stat().st_size > 10_000


# ------------------------------------------------------------------------------------------ shard browser
def test_the_shard_browser_opens_a_document(page, server, project, shots):
    reader = ShardReader(project / "artifacts" / NAME / "shards")
    page.goto(f"{server.url}/shards?recipe={NAME}")
    page.wait_for_selector("body[data-state=ready]")
    assert page.locator("#stages details").evaluate_all("d => d.map(x => x.dataset.stage)") == [
        "raw", "tokenizer", "shards"]
    n_shards = sum(len(reader.shards(s)) for s in reader.splits)
    assert page.locator("#shards tbody tr[data-status=ok]").count() == n_shards   # every sha256 checked
    # the histogram is drawn in the page, from the numbers: each split's bars sum to 1
    for split in reader.splits:
        shares = page.locator(f"#histogram svg g[data-split={split}] rect").evaluate_all(
            "bars => bars.map(b => Number(b.dataset.share))")
        assert shares and sum(shares) == pytest.approx(1.0)
    assert page.locator("#top tbody tr").count() == 25
    # position 0 of train opened by itself; now a document that runs across a shard boundary, by its id
    assert shown_ids(page, "#document .tokens .tok") == next(reader.iter_documents("train"))[1][:1000].tolist()
    spans = [locate_position(reader, "train", p) for p in range(reader.num_documents("train"))]
    span = max((s for s in spans if len(s.segments) > 1), key=lambda s: s.length)
    tokens = read_page(reader, span, 0, span.length).tolist()
    page.fill("#doc-id", span.doc_id)
    page.click("#doc-form button")
    page.wait_for_function("id => document.querySelector('#document .docmeta').textContent.includes(id)",
                           arg=span.doc_id)
    assert shown_ids(page, "#document .tokens .tok") == tokens[:1000]
    assert page.locator("#document .tokens .tok.special").count() == 1   # the end-of-text that begins it
    page.screenshot(path=str(shots / "shards.png"), full_page=True)
    assert (shots / "shards.png").stat().st_size > 10_000
    page.click("#next")
    page.wait_for_function("() => document.querySelector('#document .range').textContent.startsWith('tokens 1,000')")
    assert shown_ids(page, "#document .tokens .tok") == tokens[1000:2000]
    # by position: the page keeps the address, so a reload (or a link) opens the same document
    page.select_option("#split", "val")
    page.fill("#position", "3")
    page.click("#doc-form button")
    val_doc = list(reader.iter_documents("val"))[3]
    page.wait_for_function("id => document.querySelector('#document .docmeta').textContent.includes(id)",
                           arg=val_doc[0])
    assert shown_ids(page, "#document .tokens .tok") == val_doc[1][:1000].tolist()
    assert "split=val&position=3" in page.url


def test_bad_input_on_the_shard_browser_shows_the_apis_message(page, server):
    page.goto(f"{server.url}/shards?recipe=nope")
    page.wait_for_selector("#error:not([hidden])")
    status, api = call(server, "GET", "/pages/api/shards/nope")
    assert status == 404 and page.locator("#error .message").text_content() == api["message"]
    assert "(recipes: damaged, demo, truncated)" in api["message"]

    # a flipped byte in train shard 1: found by its sha256, said in the shard table, refused where it would be read
    page.goto(f"{server.url}/shards?recipe=damaged")
    page.wait_for_selector("body[data-state=ready]")
    assert page.locator("#shards tbody tr[data-status=damaged]").evaluate_all("r => r.map(x => x.dataset.path)") == [
        "train_000001.npy"]
    _, verdict = call(server, "POST", "/pages/api/shards/damaged/verify", page_json({"split": "train", "shard": 1}))
    assert verdict["status"] == "damaged"
    assert page.locator("#shards .error .message").text_content() == verdict["message"]
    assert page.locator("#histogram .error .message").text_content() == verdict["message"]
    assert page.locator("#document[data-state=ready]").count() == 1   # documents of intact shards still open
    in_shard_1 = ShardReader(server_artifacts(server) / "damaged" / "shards").shards("train")[0]["documents"] + 1
    page.fill("#doc-id", "")
    page.fill("#position", str(in_shard_1))
    page.click("#doc-form button")
    page.wait_for_selector("#document[data-state=error]")
    assert page.locator("#document .error .code").text_content() == "409 shard_damaged"
    assert page.locator("#document .error .message").text_content() == verdict["message"]

    # a shard cut short: the reader refuses the directory; the manifests still show, every section says why
    page.goto(f"{server.url}/shards?recipe=truncated")
    page.wait_for_selector("body[data-state=ready]")
    _, overview = call(server, "GET", "/pages/api/shards/truncated")
    message = overview["shards_error"]["message"]
    assert "train_000002.npy" in message
    for section in ("#shards", "#histogram", "#document"):
        assert page.locator(f"{section} .error .message").text_content() == message
    assert page.locator("#stages details").count() == 3


def server_artifacts(server) -> Path:
    return Path(server.args[server.args.index("--artifacts") + 1])
