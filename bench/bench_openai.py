"""Benchmark the OpenAI-compatible API: time to first token and tokens/s for 1 and 8 streaming clients.
`make bench-openai`

The demo recipe's models (artifacts/demo/sft and artifacts/demo/pretrain: 4 layers, 128 wide, context 128,
4,096 ids) behind `python -m service --models`. Where they are absent, a demo-sized model with random weights
stands in (and the section says so): speed does not depend on what the weights know, only answer lengths do.

Each client is a closed loop of streaming requests over loopback HTTP (stream: true, include_usage), read
with a minimal server-sent-events reader so that the client costs little next to the server: the clients
and the server share this machine's cores.

- *first token*: from sending the request to the first piece of text: HTTP, the prompt encoded under the
  request's limits, the prefill, one sampling step, one event.
- *tokens/s per stream*: generated tokens after the first one, over the time after the first piece: what one
  reader sees once the answer flows.
- *tokens/s, all streams*: every generated token of every client over the wall time of the run: what the
  server delivers. With one worker, concurrent streams take turns token by token on one model thread
  (service/generation.py), so this stays about where one stream is while each stream slows down; a second
  worker process adds a second model thread.

Two workloads: chat (the demo's questions, temperature 0.8, max_tokens 64: the fine-tuned model ends its
answers, so they are short and the first token weighs more) and completions (the base model continuing a
fixed prompt, mostly for all 64 tokens: a steadier decode). Each server is first warmed up with every request
of the workload at once (the first burst pays for one-time work: thread-pool threads, tokenizer caches).
Reference: the same requests in this process through `make chat`'s engine (model/chat_session.generate_stream,
one thread as the server uses), without HTTP.
Results go to BENCHMARKS.md, section "openai".
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import markdown_table, stamp, update_section
from harness.service_process import ServiceProcess

DEMO_ART = Path("artifacts/demo")
DEMO = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
QUESTIONS = ["What does json.dumps do?", "What is the csv module for?", "Explain re.compile.",
             "What does os.path.join do?", "Tell me about assignment statements.", "What is the heapq module for?",
             "What does str.split do?", "Explain itertools.chain."]
COMPLETION_PROMPT = "The json module"
MAX_TOKENS = 64
TEMPERATURE = 0.8


@dataclass
class Served:
    chat: Path
    base: Path
    tokenizer: Path
    note: str


def demo_models(tmp: Path) -> Served:
    """The demo recipe's checkpoints, or demo-sized random ones (and a 4,096-id tokenizer learned on the
    embedded corpus, with the chat tokens) where they are missing."""
    chat, base = DEMO_ART / "sft" / "ckpt.pt", DEMO_ART / "pretrain" / "ckpt.pt"
    tokenizer = DEMO_ART / "sft" / "tokenizer.ljt.json"
    if chat.is_file() and base.is_file() and tokenizer.is_file():
        return Served(chat, base, tokenizer, f"the demo recipe's models: {chat} (chat) and {base} (completions)")
    import torch

    from model import GPT, GPTConfig
    from pipelines.sources import python_docs
    from tokenizer import Tokenizer
    from tokenizer.chat import special_tokens_with_chat
    from train.checkpoint import save_checkpoint

    tok = Tokenizer.train(python_docs.texts(), vocab_size=4096, progress=False, max_chars_per_doc=10_000,
                          special_tokens=special_tokens_with_chat(["<|endoftext|>"]), name="bench")
    paths = {}
    for stage in ("sft", "pretrain"):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tok.n_vocab, **DEMO))
        paths[stage] = save_checkpoint(tmp / "demo" / stage / "ckpt.pt", {
            "step": 0, "model": model.state_dict(), "model_config": model.config.to_dict(),
            "tokenizer_fingerprint": tok.fingerprint})
    tok_file = tok.save(tmp / "demo" / "sft" / "tokenizer.ljt.json")
    return Served(paths["sft"], paths["pretrain"], tok_file,
                  f"**{chat} or {base} is absent: a demo-sized model with random weights** (4 x 128, context 128, "
                  "4,096 ids); its answers rarely end early, so chat answers run to max_tokens")


# ------------------------------------------------------------------------------------------ client side
def stream(host: str, port: int, path: str, body: dict) -> tuple[float, float, int]:
    """One streaming request: (seconds to the first piece of text, seconds in all, generated tokens)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("POST", path, json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
        first, tokens = None, 0
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            choice = event["choices"][0] if event.get("choices") else {}
            if first is None and (choice.get("text") or (choice.get("delta") or {}).get("content")):
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        return (first if first is not None else total), total, tokens
    finally:
        conn.close()


def run_clients(svc: ServiceProcess, path: str, bodies: list[dict], clients: int, per_client: int) -> dict:
    """`clients` closed loops of `per_client` requests each (bodies taken in turn), started together."""
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def loop(k: int) -> None:
        mine = [bodies[(k * per_client + j) % len(bodies)] for j in range(per_client)]
        barrier.wait()
        for body in mine:
            result = stream(svc.host, svc.port, path, body)
            with lock:
                samples.append(result)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    cpu0, t0 = server_cpu_seconds(svc), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarise(samples, time.perf_counter() - t0, server_cpu_seconds(svc) - cpu0)


def server_cpu_seconds(svc: ServiceProcess) -> float:
    """CPU time (user + system) of the server and its worker processes so far: unlike the wall clock, hardly
    changed by other work on the machine."""
    import psutil

    proc = psutil.Process(svc.process.pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def summarise(samples: list[tuple[float, float, int]], wall: float, cpu: float) -> dict:
    firsts = sorted(s[0] for s in samples)
    rates = [(n - 1) / (total - first) for first, total, n in samples if n > 1 and total > first]
    tokens = sum(s[2] for s in samples)
    return {"requests": len(samples), "tokens": tokens / len(samples),
            "ttft_p50": statistics.median(firsts) * 1e3, "ttft_p90": firsts[int(0.9 * (len(firsts) - 1))] * 1e3,
            "rate": statistics.median(rates) if rates else 0.0, "total_rate": tokens / wall,
            "cpu_ms": 1e3 * cpu / max(1, tokens)}


# ------------------------------------------------------------------------------------------ reference
class InProcess:
    """The same requests through generate_stream in this process (no HTTP): the engine's own speed."""

    def __init__(self, served: Served, kind: str) -> None:
        from tokenizer import Tokenizer
        from tokenizer.chat import ChatFormat
        from train.checkpoint import load_checkpoint, model_from_checkpoint

        self.kind, self.tok = kind, Tokenizer.load(served.tokenizer)
        self.model = model_from_checkpoint(load_checkpoint(served.chat if kind == "chat" else served.base))
        self.chat = ChatFormat(self.tok)
        self.runs: list[dict] = []

    def run(self, bodies: list[dict], repeats: int) -> None:
        self.runs.append(in_process(self, bodies, repeats))

    @property
    def best(self) -> dict:
        return max(self.runs, key=lambda r: r["total_rate"])


def in_process(engine: InProcess, bodies: list[dict], repeats: int) -> dict:
    import torch

    from model.chat_session import generate_stream

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what the server uses for a model this small (service/models.py auto_threads)
    try:
        tok, chat, model = engine.tok, engine.chat, engine.model
        samples = []
        cpu0, t_all = time.process_time(), time.perf_counter()
        for i in range(repeats):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            if engine.kind == "chat":
                prompt, stops = chat.render_prompt(body["messages"]), chat.stop_ids
            else:
                prompt, stops = [tok.eot_id, *tok.encode_ordinary(body["prompt"])], {tok.eot_id}
            first, n = None, 0
            for _ in generate_stream(model, prompt, max_new_tokens=MAX_TOKENS, temperature=body["temperature"],
                                     stop_ids=stops, generator=torch.Generator().manual_seed(body["seed"])):
                n += 1
                first = first if first is not None else time.perf_counter() - t0
            samples.append((first, time.perf_counter() - t0, n))
        return summarise(samples, time.perf_counter() - t_all, time.process_time() - cpu0)
    finally:
        torch.set_num_threads(threads)


def workload(kind: str) -> tuple[str, list[dict]]:
    if kind == "chat":
        bodies = [{"model": "demo/sft", "messages": [{"role": "user", "content": q}], "max_tokens": MAX_TOKENS,
                   "temperature": TEMPERATURE, "seed": i} for i, q in enumerate(QUESTIONS)]
        return "/v1/chat/completions", bodies
    # the base model seldom samples <|endoftext|> this early: mostly a steady decode of max_tokens
    bodies = [{"model": "demo/pretrain", "prompt": COMPLETION_PROMPT, "max_tokens": MAX_TOKENS,
               "temperature": TEMPERATURE, "seed": i} for i in range(8)]
    return "/v1/completions", bodies


def row(name: str, clients: int, r: dict, reference: dict) -> list[object]:
    return [name, clients, r["requests"], f"{r['tokens']:.1f}", f"{r['ttft_p50']:.1f} / {r['ttft_p90']:.1f}",
            f"{r['rate']:,.0f}", f"{r['total_rate']:,.0f}", f"{r['total_rate'] / reference['total_rate']:.2f}x",
            f"{r['cpu_ms']:.2f}", f"{r['cpu_ms'] / reference['cpu_ms']:.2f}x"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=8, help="streaming requests per client")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients")
    p.add_argument("--best-of", type=int, default=2, help="runs per row; the fastest is reported")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        served = demo_models(Path(tmp))
        print(f"models: {served.note}")
        for kind in ("chat", "completions"):
            path, bodies = workload(kind)
            # Best of a few runs, for the reference and the service alike: on a shared machine the fastest run is
            # the one least disturbed by other work. The reference runs between the service's rows, so that a
            # busy spell of the machine does not fall on one side only.
            reference = InProcess(served, kind)
            reference.run(bodies, repeats=len(bodies))  # warm-up (the first forward passes of a process are slow)
            reference.runs.clear()
            results = []
            for workers in (1, 2):
                server = ["--checkpoint", str(served.chat), "--base-checkpoint", str(served.base), "--tokenizer",
                          str(served.tokenizer), "--workers", str(workers), "--log-level", "warning"]
                with ServiceProcess(server) as svc:
                    svc.worker_pids(workers)
                    # Warm up with every request, all at once: the first burst pays for one-time work (the
                    # worker threads of the thread pool, the tokenizer's cache of the questions' words).
                    run_clients(svc, path, bodies, clients=max(args.clients), per_client=1)
                    for clients in args.clients:
                        if workers == 2 and clients < 2:
                            continue
                        runs = []
                        for _ in range(args.best_of):
                            reference.run(bodies, repeats=2 * len(bodies))
                            runs.append(run_clients(svc, path, bodies, clients, args.requests))
                        r = max(runs, key=lambda r: r["total_rate"])
                        results.append((f"service, {workers} worker(s)", clients, r))
                        print(f"{kind}: {workers} worker(s), {clients} client(s): first token p50 "
                              f"{r['ttft_p50']:.1f} ms, {r['rate']:,.0f} tokens/s per stream, "
                              f"{r['total_rate']:,.0f} tokens/s in all")
            ref = reference.best
            print(f"{kind}: in-process {ref['total_rate']:,.0f} tokens/s")
            tables[kind] = [row("in-process `generate_stream` (reference)", 1, ref, ref)]
            tables[kind] += [row(name, clients, r, ref) for name, clients, r in results]
    load_after = os.getloadavg()[0]

    headers = ["server", "clients", "requests", "tokens per answer", "first token p50 / p90 ms",
               "tokens/s per stream (p50)", "tokens/s, all streams", "all streams vs reference",
               "CPU ms per token", "CPU per token vs reference"]
    md = "\n\n".join([
        "## OpenAI-compatible API (`make bench-openai`)",
        stamp(),
        f"Served: {served.note}. Streaming requests (`stream: true`) over loopback HTTP, closed-loop clients "
        f"({args.requests} requests each), temperature {TEMPERATURE}, max_tokens {MAX_TOKENS}, a fixed seed per "
        "request, after a warm-up burst of the same requests. *First token*: request sent to first text received. "
        "*Tokens/s per stream*: after the first token. *All streams*: every generated token over the run's wall "
        "time. *CPU ms per token*: CPU time of the server's processes (of this process for the reference) per "
        "generated token, which other work on the machine hardly changes. Reference: the same requests through "
        "`generate_stream` in one process, one after another (no HTTP). Best of "
        f"{args.best_of} runs per row; the reference runs between the service's rows and is the best of all its "
        "runs. Clients and server share the machine's cores (1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after: the wall-clock figures move with it).",
        "**Chat** (`POST /v1/chat/completions`, model demo/sft, the demo's questions):",
        markdown_table(headers, tables["chat"]),
        f"**Completions** (`POST /v1/completions`, model demo/pretrain, \"{COMPLETION_PROMPT}\" continued):",
        markdown_table(headers, tables["completions"]),
        "One worker runs every forward pass on one model thread; concurrent streams take turns a token at a time "
        "(service/generation.py), so 8 clients share one stream's throughput and each first token waits for at "
        "most one step of every stream ahead of it. A second worker process is a second model thread (the "
        "kernel spreads connections over the workers); what it adds depends on free cores, and here the clients "
        "use the same ones. Serving costs CPU per token over the engine alone: the hop to the model thread and "
        "back, one JSON event, the middleware and uvicorn's write. No batching across requests: each request computes "
        "exactly what it computes alone, so a seeded request gives the same text in a crowd.",
    ])
    print(md)
    if not args.no_write:
        update_section("openai", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
