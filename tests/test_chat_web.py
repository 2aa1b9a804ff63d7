"""The web chat page (GET /chat) in a real headless browser (Debian's chromium driven by Playwright), against
a real `python -m service --config RECIPE --models` serving a tiny chat model that learned one answer
(tests/openai_helpers.py): a typed question produces a streamed answer, the conversation is kept in the
browser and sent whole with every question, and a full context or an error is handled on the page.
"""

from __future__ import annotations

import json

import pytest
from openai_helpers import ANSWER, QUESTION, make_served_project

from harness.service_process import ServiceProcess

DONE = '.msg.assistant[data-state="done"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    project = make_served_project(tmp_path_factory.mktemp("chat-web"))
    args = ["--config", str(project["recipe"]), "--models", "--workers", "1", "--log-level", "warning"]
    with ServiceProcess(args) as svc:
        yield svc


@pytest.fixture
def chat(page, server):
    """The chat page, loaded, greedy (temperature 0), with every body it POSTs to the API recorded."""
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.method == "POST" else None)
    page.goto(server.url + "/chat")
    page.locator("#model option").first.wait_for(state="attached")
    page.fill("#temperature", "0")
    page.sent = sent
    return page


def ask(page, text: str, answers_before: int) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")
    # Locator waits, not wait_for_function: the page's Content-Security-Policy forbids evaluating strings.
    page.locator(f"{DONE}, .note.error").nth(answers_before).wait_for()


def slow_network(page, bytes_per_s: int) -> None:
    """Chromium's network throttling: the tiny model writes its whole answer in milliseconds, and on a fast
    loopback the browser could read it in one go; at this rate the events arrive over a few tenths of a second,
    so the page must show the answer growing."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": bytes_per_s,
                                                  "uploadThroughput": -1})


def test_a_typed_question_produces_a_streamed_answer(chat):
    slow_network(chat, 20_000)  # ~220 bytes per event: ~90 events/s
    # Record every text the answer bubble shows while it grows: a streamed answer passes through many.
    chat.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const b = document.querySelector('.msg.assistant');
            if (b && b.dataset.state === 'streaming') window.seen.push(b.textContent);
        }).observe(document.querySelector('#log'), {subtree: true, childList: true, characterData: true});
    }""")
    ask(chat, QUESTION, 0)
    bubble = chat.locator(DONE)
    assert bubble.text_content() == ANSWER
    assert bubble.get_attribute("data-finish") == "stop"
    assert int(bubble.get_attribute("data-chunks")) > 5  # one piece per event, not the whole answer at once
    seen = [s for s in chat.evaluate("window.seen") if s]
    assert len(set(seen)) >= 3 and all(ANSWER.startswith(s) for s in seen)  # growing prefixes of the answer
    assert chat.locator(".msg.user").text_content() == QUESTION
    body = chat.sent[-1]
    assert body["stream"] is True and body["model"] == "tiny/sft" and body["temperature"] == 0
    assert "tiny/sft: step" in chat.text_content("#status")


def test_the_conversation_is_kept_in_the_browser_and_sent_whole(chat):
    ask(chat, QUESTION, 0)
    ask(chat, "Tell me more.", 1)
    assert [m["role"] for m in chat.sent[-1]["messages"]] == ["user", "assistant", "user"]
    assert chat.sent[-1]["messages"][1] == {"role": "assistant", "content": ANSWER}
    chat.click("#new-chat")
    assert chat.locator(".msg").count() == 0
    ask(chat, QUESTION, 0)
    assert chat.sent[-1]["messages"] == [{"role": "user", "content": QUESTION}]


def test_a_full_context_forgets_the_oldest_exchange_and_asks_again(chat):
    """The model sees 128 tokens: the third question does not fit with both earlier exchanges. The server
    refuses it (400 context_length_exceeded); the page drops the oldest exchange and asks again."""
    for i in range(3):
        ask(chat, QUESTION, i)
    assert [chat.locator(DONE).nth(i).text_content() for i in range(3)] == [ANSWER] * 3
    assert "forgot the oldest exchange" in chat.text_content("#log")
    assert [len(b["messages"]) for b in chat.sent] == [1, 3, 5, 3]


def test_an_error_is_shown_on_the_page(chat):
    ask(chat, "word " * 30, 0)  # longer than the whole context, with nothing to forget
    error = chat.locator(".note.error")
    assert "maximum context length is 128 tokens" in error.text_content()
    assert chat.locator(".msg.assistant").count() == 0
    ask(chat, QUESTION, 0)  # the failed question did not join the conversation
    assert chat.sent[-1]["messages"] == [{"role": "user", "content": QUESTION}]
