"""Talking to a fine-tuned GPT: streaming generation with a KV cache, and a multi-turn chat session.

Two layers, both free of files and command lines, so that the terminal chat (pipelines/chat.py), the
SFT stage's sample answers and a web or HTTP service can share them:

- `generate_stream(model, prompt_ids, ...)` yields sampled token ids one at a time. It runs the prompt
  through the model once (prefill), then one position per new token against the KV cache, and stops after
  a stop id, after max_new_tokens, or when the context (block_size) is full. A cache from an earlier call
  that holds a prefix of the prompt is reused, so a multi-turn chat only runs each new turn's tokens.
- `ChatSession(model, tokenizer)` keeps a conversation: `for piece in session.send("hi"): print(piece)`
  streams the reply as text, `reset()` forgets it. It keeps the *ids* of the history, not its text: the
  tokens the model sampled are not always the tokens its text would encode to, and re-encoding would
  show the model a history it did not write (and throw away the cache).

The context is the model's block_size (128 tokens for the demo model). When the next turn would not fit,
the oldest user/assistant turns are dropped (the system message stays) and the cache is rebuilt once.
"""

from __future__ import annotations

import codecs
import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.gpt import GPT, KVCache
from tokenizer.chat import ChatFormat


class ContextFullError(ValueError):
    """A message that cannot fit the model's context, even with the history dropped."""


def sample_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """One id from the logits of one position (V,): greedy at temperature 0, else softmax(logits / T)
    restricted to the top_k most likely ids and then to the smallest set whose probability reaches top_p."""
    logits = logits.float()
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = F.softmax(logits, dim=-1).sort(descending=True)
        # drop an id when the ids more likely than it already reach top_p (the most likely one always stays)
        drop = probs.cumsum(0) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)  # sample where the generator lives: same seed, same ids on any device
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_stream(model: GPT, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, stop_ids: Collection[int] = (),
                    generator: torch.Generator | None = None, cache: KVCache | None = None,
                    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                    ) -> Iterator[int]:
    """Yield up to max_new_tokens sampled ids after `prompt`, one at a time.

    Stops after yielding an id in stop_ids, after max_new_tokens ids, or when the context is full: a prompt of
    block_size ids still gets its one next id (from the last position's logits), nothing after that. `cache`,
    if given, must hold the first cache.pos ids of this prompt (as left by an earlier call on a prefix of it);
    it is extended in place, and afterwards holds every id but the last one yielded. The model is in eval mode
    while the generator runs. The same generator seed gives the same ids, with or without a reused cache.
    """
    block = model.config.block_size
    if not prompt:
        raise ValueError("generate_stream needs at least one prompt id (a chat prompt starts with <|endoftext|>)")
    if len(prompt) > block:
        raise ContextFullError(f"prompt of {len(prompt)} tokens is longer than the model's context ({block})")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens <= 0:
        return
    device = next(model.parameters()).device
    cache = cache if cache is not None else KVCache(model.config)
    # Positions are overwritten in place, so a cache can be rewound: keep at least one prompt id to run,
    # whose logits give the first new token.
    cache.pos = min(cache.pos, len(prompt) - 1)
    was_training = model.training
    model.eval()
    try:
        with autocast():
            x = model.hidden_states(torch.tensor([list(prompt[cache.pos:])], dtype=torch.long, device=device), cache)
        for produced in range(1, max_new_tokens + 1):
            with autocast():
                logits = model.head(x[0, -1])
            next_id = sample_token(logits, temperature, top_k, top_p, generator)
            yield next_id
            if next_id in stop_ids or produced == max_new_tokens or cache.pos >= block:
                return
            with autocast():
                x = model.hidden_states(torch.tensor([[next_id]], dtype=torch.long, device=device), cache)
    finally:
        model.train(was_training)


@dataclass
class TurnStats:
    prompt_tokens: int = 0       # ids of the whole prompt (history + this message)
    prefilled_tokens: int = 0    # of those, the ones the model had to run (the rest came from the cache)
    new_tokens: int = 0          # ids generated (the stop id included)
    first_token_s: float = 0.0   # from send() to the first id: tokenising, prefill and one sampling step
    seconds: float = 0.0         # the whole reply
    finish_reason: str = ""      # "stop" (the model ended its reply) or "length" (max_new_tokens or context full)
    dropped_turns: int = 0       # oldest turns forgotten to make room

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token (the prefill is in first_token_s)."""
        rest = self.seconds - self.first_token_s
        return (self.new_tokens - 1) / rest if self.new_tokens > 1 and rest > 0 else 0.0


class ChatSession:
    """A multi-turn conversation with a model; see the module docstring.

        session = ChatSession(model, tokenizer, temperature=0.8, top_k=50, seed=0)
        for piece in session.send("What does json.dumps do?"):
            print(piece, end="", flush=True)
        session.messages      # [{"role": "user", ...}, {"role": "assistant", ...}]
        session.reset()
    """

    def __init__(self, model: GPT, tokenizer, *, system: str | None = None, temperature: float = 0.8,
                 top_k: int | None = 50, top_p: float | None = None, max_new_tokens: int = 256,
                 seed: int | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.model, self.chat, self.autocast = model, ChatFormat(tokenizer), autocast
        if tokenizer.n_vocab > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.n_vocab} ids, the model only {model.config.vocab_size}: "
                             "they do not belong together")
        self.system = system
        self.temperature, self.top_k, self.top_p, self.max_new_tokens = temperature, top_k, top_p, max_new_tokens
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.last = TurnStats()
        self.reset()

    def warm_up(self) -> None:
        """Run the model once on a throwaway prompt: the first call of a process pays for lazy setup (kernels,
        thread pools; ~0.2 s on a CPU), which should not land on the first reply's time to first token."""
        for _ in generate_stream(self.model, [self.chat.bos], max_new_tokens=2, temperature=0, autocast=self.autocast):
            pass

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        c = self.chat
        self.prefix = [c.bos]
        self.messages: list[dict[str, str]] = []
        if self.system:
            self.prefix += [c.start["system"], *c.encode_text(self.system), c.end["system"]]
            self.messages.append({"role": "system", "content": self.system})
        self.turns: list[list[int]] = []   # the ids of each finished user + assistant turn
        self.cache: KVCache | None = None
        self.cached: list[int] = []        # the ids whose keys and values the cache holds

    def _prompt(self, user_ids: list[int]) -> list[int]:
        c = self.chat
        history = [i for turn in self.turns for i in turn]
        return self.prefix + history + [c.start["user"], *user_ids, c.end["user"], c.start["assistant"]]

    def send(self, text: str) -> Iterator[str]:
        """Add a user message and stream the assistant's reply as text pieces (complete UTF-8 characters)."""
        t0 = time.perf_counter()
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a message must be non-empty text")
        c = self.chat
        block = self.model.config.block_size
        user_ids = c.encode_text(text)
        room = min(self.max_new_tokens, max(1, block // 4))  # at least this much space for the reply
        stats = TurnStats()
        prompt = self._prompt(user_ids)
        while len(prompt) + room > block + 1 and self.turns:
            self.turns.pop(0)  # forget the oldest turn (its messages too)
            del self.messages[1 if self.system else 0: 3 if self.system else 2]
            stats.dropped_turns += 1
            prompt = self._prompt(user_ids)
        if len(prompt) > block:
            raise ContextFullError(f"the message is {len(user_ids)} tokens; with the chat format it does not fit the "
                                   f"model's context of {block} tokens")
        common = 0  # how much of the cache is still this prompt (all of it, unless turns were dropped)
        for a, b in zip(self.cached, prompt):
            if a != b:
                break
            common += 1
        if self.cache is None or common == 0:
            self.cache = KVCache(self.model.config)
            common = 0
        self.cache.pos = common
        self.cached = self.cached[:common]  # positions after it are about to be overwritten
        stats.prompt_tokens = len(prompt)
        stats.prefilled_tokens = len(prompt) - min(common, len(prompt) - 1)

        reply: list[int] = []
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stats.finish_reason = "length"
        for next_id in generate_stream(self.model, prompt, max_new_tokens=self.max_new_tokens,
                                       temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                       stop_ids=c.stop_ids, generator=self.generator, cache=self.cache,
                                       autocast=self.autocast):
            if not stats.new_tokens:
                stats.first_token_s = time.perf_counter() - t0
            stats.new_tokens += 1
            if next_id in c.stop_ids:
                stats.finish_reason = "stop"
                break
            reply.append(next_id)
            piece = "" if next_id in c.control_ids else decoder.decode(c.tok.decode_single_token_bytes(next_id))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
        # Only a finished reply joins the history (a caller that stops reading mid-reply loses the turn), as
        # sampled, and closed with <|assistant_end|> even when it was cut off.
        self.turns.append(prompt[len(self.prefix) + sum(map(len, self.turns)):] + reply + [c.assistant_end])
        self.cached = (prompt + reply)[:self.cache.pos]
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": c.decode_reply(reply)}]
        stats.seconds = time.perf_counter() - t0
        self.last = stats

    def ask(self, text: str) -> str:
        """send() collected into one string."""
        return "".join(self.send(text))
