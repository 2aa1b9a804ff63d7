"""The OpenAI-compatible API on a real `python -m service` process, driven by the official `openai` SDK.

The served project (tests/openai_helpers.py) is a tiny chat model that learned one answer (so what comes
back can be checked token for token) and a random base model (so every seed gives another text). Served
with `--config RECIPE --models`, as `make chat-web` does. In-process tests at the end cover the scheduler
(streams take turns token by token), the CPU limit and cancellation, and the prompt rendering.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from fastapi.testclient import TestClient
from openai_helpers import (
    ANSWER,
    BLOCK,
    CHAT_STEPS,
    QUESTION,
    make_served_project,
    make_slow_base_model,
    random_model,
    save_model,
)

from harness.service_process import ServiceProcess
from service import ServeSettings, create_app
from service.budget import WorkBudget, WorkCancelled
from service.errors import ServiceError
from service.generation import Generation, ModelThread, Sampling, StopStrings
from service.models import load_served_model
from service.openai_api import chat_prompt
from tokenizer.chat import ChatFormat

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # the server runs this small model on 1 thread too

MAX_BODY = 65536
MAX_RUN = 2000


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_served_project(tmp_path_factory.mktemp("openai"))


@pytest.fixture(scope="module")
def server(project):
    args = ["--config", str(project["recipe"]), "--models", "--workers", "1", "--log-level", "warning",
            "--max-body-bytes", str(MAX_BODY), "--max-run-chars", str(MAX_RUN)]
    svc = ServiceProcess(args).start()
    try:
        yield svc
        svc.stop()
        log = svc.log()
    finally:
        svc.__exit__(None, None, None)
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.fixture(scope="module")
def client(server):
    # max_retries=0: the SDK retries 408/5xx on its own, which would hide what the server answered
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def ask(question: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def raw_post(svc, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def run_async(make_coroutine):
    """asyncio.run on a thread of its own: the browser tests' Playwright keeps an event loop on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def expected_text(served_tok, ids) -> str:
    """What the API returns for generated ids: their bytes without special tokens, as UTF-8 (U+FFFD for bad)."""
    silent = set(served_tok.special_tokens.values())
    return b"".join(served_tok.decode_single_token_bytes(i) for i in ids if i not in silent).decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------ models
def test_models_are_named_after_recipe_and_checkpoint_with_the_tokenizer_fingerprint(client, project):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny/sft", "tiny/pretrain"]
    chat, base = (m.model_dump() for m in models)
    fingerprint = project["tokenizer"].fingerprint
    assert chat["tokenizer_fingerprint"] == base["tokenizer_fingerprint"] == fingerprint
    assert (chat["kind"], chat["step"], chat["context_length"]) == ("chat", CHAT_STEPS, BLOCK)
    assert (base["kind"], base["step"], base["checkpoint"]) == ("base", 0, str(project["pretrain"]))
    assert chat["object"] == "model" and chat["owned_by"] == "llm-journey"
    assert client.models.retrieve("tiny/sft").id == "tiny/sft"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("tiny/nope")
    assert e.value.code == "model_not_found" and "tiny/sft" in e.value.message


# ------------------------------------------------------------------------------------------ chat
def test_chat_answers_what_the_model_learned_with_usage_from_our_tokenizer(client, project):
    r = client.chat.completions.create(model="tiny/sft", messages=ask(), temperature=0)
    assert r.object == "chat.completion" and r.model == "tiny/sft" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", ANSWER, "stop")
    chat = ChatFormat(project["tokenizer"])
    assert r.usage.prompt_tokens == len(chat.render_prompt(ask()))
    assert r.usage.completion_tokens == len(chat.encode_text(ANSWER)) + 1  # + <|assistant_end|>
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_is_openai_chunks_ending_with_done(client, server):
    chunks = list(client.chat.completions.create(model="tiny/sft", messages=ask(), temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == ANSWER and len(pieces) > 5  # token by token, not one block
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(ANSWER) + 1
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    # on the wire: server-sent events, each `data: {json}`, the last one `data: [DONE]`
    body = json.dumps({"model": "tiny/sft", "messages": ask(), "temperature": 0, "stream": True}).encode()
    status, headers, raw = raw_post(server, "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: {") for e in events[:-2])


def test_a_system_message_and_text_parts_render_like_the_chat_format(project, client):
    """developer = system, content parts are joined; the prompt the model sees is ChatFormat's own."""
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What does "}, {"type": "text", "text": "x?"}]}]
    r = client.chat.completions.create(model="tiny/sft", messages=messages, temperature=0, max_tokens=3)
    chat = ChatFormat(project["tokenizer"])
    rendered = chat.render_prompt([{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What does x?"}])
    assert r.usage.prompt_tokens == len(rendered)
    assert r.usage.completion_tokens <= 3


def test_stop_strings_end_the_text_before_them_also_when_streamed(client):
    r = client.chat.completions.create(model="tiny/sft", messages=ask(), temperature=0, stop=[" to", "zzz"])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("Serialize obj", "stop")
    stream = client.chat.completions.create(model="tiny/sft", messages=ask(), temperature=0, stop="JSON", stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Serialize obj to a " and chunks[-1].choices[0].finish_reason == "stop"


def test_stop_strings_split_across_pieces():
    stops = StopStrings(["JSON", "obj."])
    sent = [stops.feed(p) for p in ["Serialize o", "b", "j to a J", "S", "ON str"]]
    assert sent == [("Serialize ", False), ("", False), ("obj to a ", False), ("", False), ("", True)]
    stops = StopStrings(["ab"])
    assert stops.feed("xa") == ("x", False) and stops.flush() == "a"  # held back, then given up at the end


# ------------------------------------------------------------------------------------------ completions
def test_completions_continue_the_prompt_exactly_as_generate_stream_does(client, project):
    """Greedy and seeded: the server's text is the one `make chat`'s engine gives in this process, from
    <|endoftext|> + the prompt; max_tokens ends it with finish_reason "length"."""
    import torch

    from model.chat_session import generate_stream

    tok, base = project["tokenizer"], project["base_model"]
    prompt = [tok.eot_id, *tok.encode_ordinary("Hello")]
    for seed, temperature in ((None, 0.0), (7, 1.0), (8, 1.0)):
        kwargs = {} if seed is None else {"seed": seed}
        r = client.completions.create(model="tiny/pretrain", prompt="Hello", max_tokens=12, temperature=temperature,
                                      **kwargs)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = list(generate_stream(base, prompt, max_new_tokens=12, temperature=temperature,
                                   stop_ids={tok.eot_id}, generator=generator))
        assert r.choices[0].text == expected_text(tok, ids)
        assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == len(ids)
        assert r.choices[0].finish_reason == ("stop" if ids[-1] == tok.eot_id else "length")
    streamed = client.completions.create(model="tiny/pretrain", prompt="Hello", max_tokens=12, seed=7, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == client.completions.create(
        model="tiny/pretrain", prompt="Hello", max_tokens=12, seed=7).choices[0].text


def test_completions_default_to_16_tokens_and_take_token_ids(client, project):
    tok = project["tokenizer"]
    r = client.completions.create(model="tiny/pretrain", prompt="Hi", temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens <= 16
    by_ids = client.completions.create(model="tiny/pretrain", prompt=[tok.eot_id, *tok.encode_ordinary("Hi")],
                                       temperature=0)
    assert by_ids.choices[0].text == r.choices[0].text
    # the chat model continues text too (its answer after the chat format's prompt, here)
    ids = ChatFormat(tok).render_prompt(ask())
    r = client.completions.create(model="tiny/sft", prompt=ids, temperature=0, max_tokens=60)
    assert r.choices[0].text == ANSWER


# ------------------------------------------------------------------------------------------ concurrency
def test_concurrent_streams_equal_the_same_requests_one_at_a_time(client):
    """Six streaming clients at once (chat and completions, different seeds) get exactly the texts they get
    alone: each request samples with its own seeded generator, and its forward passes see only its tokens."""
    requests = [("completion", seed) for seed in range(4)] + [("chat", seed) for seed in (10, 11)]

    def run(kind: str, seed: int) -> str:
        if kind == "chat":
            stream = client.chat.completions.create(model="tiny/sft", messages=ask(), temperature=1.8, seed=seed,
                                                    max_tokens=40, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream)
        stream = client.completions.create(model="tiny/pretrain", prompt="The", temperature=1.0, seed=seed,
                                           max_tokens=40, stream=True)
        return "".join(c.choices[0].text for c in stream)

    alone = [run(*r) for r in requests]
    assert len(set(alone[:4])) == 4, "different seeds must give different texts"
    together: list[str | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def client_thread(i: int) -> None:
        barrier.wait()
        together[i] = run(*requests[i])

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == alone


def test_streams_take_turns_token_by_token(project):
    """In-process, the scheduler itself: three requests started together all get their first token
    before any of them gets its last (none holds the model for a whole answer), and each step of the model
    thread serves the next request in turn."""
    settings = ServeSettings(tokenizer_path="unused")
    served = load_served_model("base", project["pretrain"], settings, project["tokenizer"])
    steps: list[int] = []

    class RecordingThread(ModelThread):
        async def run(self, fn):
            steps.append(owner[id(fn.__self__)])
            return await super().run(fn)

    thread = RecordingThread()
    prompt = [project["tokenizer"].eot_id]
    gens = [Generation(served, prompt, Sampling(max_tokens=20, seed=s), stop_ids=(), budget=WorkBudget(60),
                       thread=thread, cpu_limit=60) for s in range(3)]
    owner = {id(g): k for k, g in enumerate(gens)}

    async def together() -> None:
        await asyncio.wait_for(asyncio.gather(*(g.text() for g in gens)), 30)

    run_async(together)
    assert [g.completion_tokens for g in gens] == [20, 20, 20]
    first = [steps.index(k) for k in range(3)]
    last = [len(steps) - 1 - steps[::-1].index(k) for k in range(3)]
    assert max(first) < min(last)
    assert steps[:60] == [0, 1, 2] * 20


def test_cpu_limit_and_cancellation_stop_a_generation(project):
    settings = ServeSettings(tokenizer_path="unused")
    served = load_served_model("base", project["pretrain"], settings, project["tokenizer"])
    prompt = [project["tokenizer"].eot_id]

    async def drain(gen: Generation) -> str:
        return await gen.text()

    over = Generation(served, prompt, Sampling(max_tokens=50), stop_ids=(), budget=WorkBudget(60),
                      thread=ModelThread(), cpu_limit=1e-9)
    with pytest.raises(ServiceError) as e:
        run_async(lambda: drain(over))
    assert e.value.status == 413 and e.value.code == "too_expensive"
    budget = WorkBudget(60)
    budget.cancel()  # what the shutdown drain does to a request still running at its timeout
    cancelled = Generation(served, prompt, Sampling(max_tokens=50), stop_ids=(), budget=budget, thread=ModelThread(),
                           cpu_limit=60)
    with pytest.raises(WorkCancelled):
        run_async(lambda: drain(cancelled))
    assert cancelled.completion_tokens == 0


def test_the_cpu_limit_over_http_is_413_or_an_error_event(project):
    """The same limit as the tokenisation service's (max_cpu_seconds), through the app: a plain request is
    refused 413 too_expensive; a stream that has started ends with an error event and [DONE]."""
    settings = ServeSettings(tokenizer_path="unused", max_cpu_seconds=0.002)
    served = load_served_model("chat", project["sft"], settings, project["tokenizer"])
    app = TestClient(create_app(project["tokenizer"], settings, [served]))
    body = {"model": "tiny/sft", "messages": ask(), "temperature": 2.0, "max_tokens": 60, "seed": 0}
    for _ in range(3):  # a CPU clock is coarse: a few tries until one request uses more than 2 ms
        r = app.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            break
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_expensive" and r.json()["error"]["type"] == "invalid_request_error"
    with app.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "too_expensive"


def test_chat_prompt_is_render_prompt(project):
    """The API encodes message texts under the limits and assembles the prompt itself: the same ids."""
    settings = ServeSettings(tokenizer_path="unused")
    served = load_served_model("chat", project["sft"], settings, project["tokenizer"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|user_end|> there"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": QUESTION}]
    ids, _ = chat_prompt(served, messages, WorkBudget(10))
    assert ids == ChatFormat(project["tokenizer"]).render_prompt(messages)


def test_the_command_line_refuses_what_it_cannot_serve(project, tmp_path, capsys):
    """Each one line and exit status 2 (or argparse's usage error), before anything listens."""
    from pretrain_helpers import byte_tokenizer, write_recipe

    from service import main, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--models"])
    assert "give --config RECIPE" in capsys.readouterr().err
    empty = write_recipe(tmp_path / "empty.toml", "empty", tmp_path / "artifacts", {})
    with pytest.raises(SystemExit):
        parse_args(["--config", str(empty), "--models"])
    assert "the recipe has no model yet" in capsys.readouterr().err
    served_tok = str(project["sft"].parent / "tokenizer.ljt.json")
    assert main(["--checkpoint", str(tmp_path / "nope"), "--tokenizer", served_tok, "--port", "1"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    # a checkpoint trained with another tokenizer: the same ids would mean other text
    other = byte_tokenizer(extra_special="<|other|>").save(tmp_path / "other.ljt.json")
    assert main(["--base-checkpoint", str(project["pretrain"]), "--tokenizer", str(other), "--port", "1"]) == 2
    assert "the same ids would mean other text" in capsys.readouterr().err
    # a chat model needs the chat tokens
    plain = byte_tokenizer()
    ckpt = save_model(tmp_path / "plain" / "sft" / "ckpt.pt", random_model(plain), plain, step=0)
    plain.save(ckpt.parent / "tokenizer.ljt.json")
    assert main(["--checkpoint", str(ckpt), "--port", "1"]) == 2
    assert "lacks the chat special tokens" in capsys.readouterr().err


def test_a_tokenizer_only_service_has_no_model_routes(project):
    app = TestClient(create_app(project["tokenizer"], ServeSettings(tokenizer_path="unused")))
    assert app.get("/v1/models").status_code == 404 and app.get("/chat").status_code == 404
    assert app.post("/v1/count", json={"text": "hi"}).json()["count"] == 2


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("changes, error, param, code", [
    ({"model": "tiny/nope"}, openai.NotFoundError, "model", "model_not_found"),
    ({"model": "tiny/pretrain"}, openai.BadRequestError, "model", "model_not_supported"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, openai.BadRequestError,
     "tools", "unsupported_parameter"),
    ({"n": 2}, openai.BadRequestError, "n", "unsupported_parameter"),
    ({"logprobs": True}, openai.BadRequestError, "logprobs", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
     openai.BadRequestError, "messages[0].content[0]", "unsupported_parameter"),
    ({"temperature": 3}, openai.BadRequestError, "temperature", "invalid_value"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, openai.BadRequestError, "messages", "role_order"),
    ({"messages": ask("x" * BLOCK)}, openai.BadRequestError, "messages", "context_length_exceeded"),
    ({"extra_body": {"frobnicate": 1}}, openai.BadRequestError, "frobnicate", "unknown_parameter"),
])
def test_refusals_are_openai_errors(client, changes, error, param, code):
    request = {"model": "tiny/sft", "messages": ask(), **changes}
    with pytest.raises(error) as e:
        client.chat.completions.create(**request)
    assert (e.value.param, e.value.code, e.value.type) == (param, code, "invalid_request_error"), e.value.body
    assert e.value.message


def test_edge_values_are_refused_or_well_defined(client):
    """Values at the edges of what the schema allows: a 4xx naming the parameter, or a defined behaviour."""
    for prompt in ([[]], []):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="tiny/pretrain", prompt=prompt)
        assert e.value.param == "prompt" and e.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny/pretrain", prompt=[[1], [2]])
    assert (e.value.param, e.value.code) == ("prompt", "unsupported_parameter")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny/sft", messages=ask(), seed=2**70)
    assert e.value.param == "seed"
    # an integral float is an integer (as in the tokenisation service); a fractional one is not
    assert client.completions.create(model="tiny/pretrain", prompt="Hi", max_tokens=3.0).usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny/pretrain", prompt="Hi", max_tokens=3.5)
    assert e.value.param == "max_tokens"
    # a temperature too small to divide by is greedy (not a softmax of inf), as top_p=0 is
    for changes in ({"temperature": 1e-40}, {"top_p": 0, "temperature": 2}):
        r = client.chat.completions.create(model="tiny/sft", messages=ask(), **changes)
        assert r.choices[0].message.content == ANSWER


def test_schema_fuzzing_finds_no_server_errors(server):
    """schemathesis on the API's POST routes, schema-valid and schema-violating bodies (bounded, derandomised),
    `model` mostly set to a served one: never a 5xx, whatever the body."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode, checks

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()
                  if op.ok().path in ("/v1/chat/completions", "/v1/completions")]
    assert len(operations) == 2
    served = {"/v1/chat/completions": "tiny/sft", "/v1/completions": "tiny/pretrain"}
    n_cases = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                nonlocal n_cases
                n_cases += 1
                if isinstance(case.body, dict) and n_cases % 4:
                    case.body["model"] = served[case.operation.path]
                    case.body.pop("stream", None)  # the stream's body is not what the schema describes
                case.call_and_validate(base_url=server.url, checks=[checks.not_a_server_error])

            run()
    assert n_cases >= 2 * 2 * 10


def test_the_service_limits_answer_in_openai_shape(server):
    """Body size (the middleware, before any route), runs, bad JSON, wrong Content-Type: the tokenisation
    service's limits and status codes, in OpenAI's error shape on these paths."""
    def error_of(body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
        status, _, raw = raw_post(server, "/v1/chat/completions", body, ctype)
        data = json.loads(raw)
        assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}, data
        return status, data["error"]

    status, err = error_of(json.dumps({"model": "tiny/sft", "messages": ask("a " * MAX_BODY)}).encode())
    assert (status, err["code"]) == (413, "body_too_large")
    status, err = error_of(json.dumps({"model": "tiny/sft", "messages": ask("7" * (MAX_RUN + 1))}).encode())
    assert (status, err["code"], err["param"]) == (413, "run_too_long", None)
    assert "messages[0].content" in err["message"]
    status, err = error_of(b'{"model": "tiny/sft", "messages": [')
    assert (status, err["code"]) == (400, "malformed_json")
    status, err = error_of(b"model=tiny/sft", "application/x-www-form-urlencoded")
    assert (status, err["code"]) == (415, "unsupported_media_type")
    # the tokenisation routes keep their own shape
    status, _, raw = raw_post(server, "/v1/encode", b"{")
    assert status == 400 and json.loads(raw)["error"] == "malformed_json"


def test_sigterm_lets_a_stream_finish_and_answers_new_requests_503_in_openai_shape(tmp_path):
    """SIGTERM while a completion streams: the stream goes on to its [DONE], a request arriving meanwhile gets
    503 shutting_down with Connection: close (never a 500) in OpenAI's shape, and the process exits 0 as soon
    as the stream is over, not after shutdown_timeout."""
    ckpt, tokenizer = make_slow_base_model(tmp_path)
    args = ["--base-checkpoint", str(ckpt), "--tokenizer", str(tokenizer), "--workers", "1", "--log-level", "warning",
            "--shutdown-timeout", "30"]
    with ServiceProcess(args) as svc:
        stream = http.client.HTTPConnection(svc.host, svc.port, timeout=30)
        body = {"model": "slow/pretrain", "prompt": "Once", "max_tokens": 1000, "stream": True, "seed": 0}
        stream.request("POST", "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = stream.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: {")  # it is streaming
        t0 = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        status, headers, raw = raw_post(svc, "/v1/completions", json.dumps({"model": "slow/pretrain",
                                                                            "prompt": "x"}).encode())
        assert status == 503 and headers["connection"] == "close"
        error = json.loads(raw)["error"]
        assert (error["type"], error["code"], error["param"]) == ("server_error", "shutting_down", None)
        events = [line for line in resp.read().decode().split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
        assert svc.process.wait(15) == 0 and time.monotonic() - t0 < 15
        assert "Traceback" not in svc.log(), svc.log()
