"""How concurrent requests share one model: the model thread, turns of one token, a generator per request.

The sampling itself is `make chat`'s engine (model/chat_session.py `generate_stream`: KV cache, temperature,
top-k, top-p, stop ids); this module only decides *when* each request's next token is computed.

**One model thread.** Every forward pass of a worker process runs on one thread (a single-thread executor),
never on the event loop (which must keep accepting connections and streaming bytes) and never on two
threads at once (which would only split the same cores). A request does not hand its whole generation to
that thread: it submits one step (sample a token, run it through the model) and awaits it. The steps of
concurrent requests therefore queue up in arrival order and the streams take turns token by token: with
N streams each gets every N-th step, a new request's first token waits for at most one step of each stream
ahead of it, and no request holds the model for a whole answer.

**Same answer alone or in a crowd.** Each step runs one sequence, with the request's own KV cache and its
own `torch.Generator`, seeded with the request's `seed` (or at random without one). Nothing a request
computes depends on what else is running, so a seeded request gives the same text alone and among others.
Batching the requests' steps into one forward pass would serve more tokens/s (on a GPU especially), but a
row of a batch goes through other matmul shapes than a lone row, the last bits of its logits change with
the company it keeps, and a seeded sample could change with them; we keep the exact answer.

**Limits.** Each step is timed on the model thread's CPU clock and charged to its request: past
`max_cpu_seconds` (prompt encoding included) the request stops with 413 too_expensive. Before each step
the request's WorkBudget is looked at, so a request that the shutdown drain cancels stops at its next step.

Text comes out as complete UTF-8 characters; special tokens have no text; `stop` strings end the text
before them (see StopStrings).
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .budget import WorkBudget, WorkCancelled
from .errors import ServiceError

if TYPE_CHECKING:
    from .models import ServedModel

T = TypeVar("T")


@dataclass(frozen=True)
class Sampling:
    """What a request asks of the sampler (OpenAI's names; top_k is an extension)."""

    max_tokens: int                     # most new tokens (the context may end the answer sooner)
    temperature: float = 1.0            # 0 = greedy
    top_p: float | None = None          # nucleus sampling; None = off
    top_k: int | None = None
    stop: tuple[str, ...] = ()          # strings that end the text (not included in it)
    seed: int | None = None             # None = a fresh random seed


class ModelThread:
    """The one thread of a worker process that runs forward passes, in the order they were asked for."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run `fn` after everything queued so far, without waiting for it."""
        self._executor.submit(fn)


class StopStrings:
    """Cut a stream of text before the first occurrence of any stop string, even one split across pieces.

    Text is held back while it could still be the start of a stop string, so nothing is ever sent that a
    later piece would turn into part of one: `feed` returns what is safe to send now, `flush` the rest."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text safe to send, whether a stop string was found: then the text ends before it)."""
        text = self.held + piece
        self.held = ""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            return text[: min(hits)], True
        keep = max((self._open_prefix(text, s) for s in self.stops), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    @staticmethod
    def _open_prefix(text: str, stop: str) -> int:
        """Length of the longest end of `text` that begins `stop` (and so may grow into it)."""
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                return k
        return 0

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


class Generation:
    """One request's answer: text pieces as its tokens come out of the model thread (see the module doc).

        gen = Generation(served, prompt_ids, sampling, stop_ids=..., budget=..., thread=..., cpu_limit=10)
        async for piece in gen.pieces(): ...
        gen.finish_reason, gen.completion_tokens       # "stop" | "length"; ids generated (a stop id included)
    """

    def __init__(self, served: ServedModel, prompt: Sequence[int], sampling: Sampling, *, stop_ids: Collection[int],
                 budget: WorkBudget, thread: ModelThread, cpu_limit: float, cpu_spent: float = 0.0) -> None:
        import torch

        from model.chat_session import generate_stream

        self.generator = torch.Generator()  # the request's own randomness (on the CPU: same ids on any device)
        if sampling.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(sampling.seed)
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.cpu_seconds, self.cpu_limit = cpu_spent, cpu_limit
        self._budget, self._thread = budget, thread
        self._stop_ids, self._silent = frozenset(stop_ids), served.special_ids
        self._decode = served.tokenizer.decode_single_token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopStrings(sampling.stop)
        self._ids = generate_stream(
            served.model, list(prompt), max_new_tokens=sampling.max_tokens, temperature=sampling.temperature,
            top_k=sampling.top_k, top_p=sampling.top_p, stop_ids=self._stop_ids, generator=self.generator,
            autocast=served.autocast)

    def _step(self) -> int | None:
        """On the model thread: the next id (None when the stream has ended), its CPU time charged."""
        started = time.thread_time()
        try:
            return next(self._ids, None)
        finally:
            self.cpu_seconds += time.thread_time() - started
            if self.cpu_seconds > self.cpu_limit:
                raise ServiceError(
                    413, "too_expensive",
                    f"this request needs more than {self.cpu_limit:g} s of CPU time (max_cpu_seconds): ask for "
                    "fewer tokens (max_tokens), or start the service with a larger --max-cpu-seconds")

    def _text(self, next_id: int) -> str:
        return "" if next_id in self._silent else self._utf8.decode(self._decode(next_id))

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text, piece by piece (no empty pieces); sets finish_reason and completion_tokens."""
        try:
            while self.finish_reason is None:
                if self._budget.cancelled:
                    raise WorkCancelled()
                next_id = await self._thread.run(self._step)
                if next_id is None or next_id in self._stop_ids:
                    # the model ended its answer (a stop id), or max_tokens / the context ended it
                    self.completion_tokens += next_id is not None
                    self.finish_reason = "length" if next_id is None else "stop"
                    text, _ = self._stops.feed(self._utf8.decode(b"", final=True))
                    text += self._stops.flush()
                else:
                    self.completion_tokens += 1
                    text, hit = self._stops.feed(self._text(next_id))
                    if hit:
                        self.finish_reason = "stop"
                if text:
                    yield text
        finally:
            # Close the token generator on the model thread, after any step of it still running there
            # (a request cancelled while awaiting a step leaves that step to finish on its own).
            self._thread.submit(self._ids.close)

    async def text(self) -> str:
        return "".join([piece async for piece in self.pieces()])
