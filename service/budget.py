"""What one request may cost, enforced while the work runs: CPU time, tokens, decoded bytes, runs.

The endpoints are plain `def` functions that Starlette runs in a worker thread, and a thread cannot be
stopped from outside. So the work stops itself: it is cut into steps of bounded cost, and before every
step it asks its WorkBudget whether it may go on (`budget.check()`), which raises when the request has
used up its CPU time or was cancelled (by the shutdown, see service/shutdown.py).

Cutting an encode into steps must not change a single id. BPE never looks across a pre-token, so a
cut is safe where pre-tokenising the two parts separately gives exactly the pieces of the whole text;
tokenizer/pattern.py proves that for GPT-2's pattern at a whitespace character right after a
non-whitespace one (its "chunk" boundary). So a text is encoded in windows of about WINDOW_CHARS
characters that end at such a point, each with the tokenizer's own `encode_to_array`, and the
concatenation is exactly `tok.encode(text)`.
Special tokens do not break this as long as none contains whitespace (a cut always falls *on* a
whitespace character, so no special token's text can straddle it); a tokenizer with another pattern,
or with such a special token, is encoded one whole text per step (checked between texts only).

A window is only bounded if the text has cut points. A run of characters without one (all non-
whitespace, or all whitespace) is a single pre-token or a few huge ones, and BPE on an n-byte pre-token
is one uninterruptible call that holds ~300 bytes per input byte (tokenizer/bpe.py's heap). So a text
may hold no run longer than `max_run_chars`: that bounds both the memory of one BPE call and the
longest step between two budget checks (see RunCheck for how that is checked without a pass over
every character).
"""

from __future__ import annotations

import re
import threading
import time
from array import array
from collections.abc import Collection, Iterator, Sequence
from typing import Literal

import regex

from tokenizer.pattern import GPT2_PATTERN, REGEX_WHITESPACE

from .errors import ServiceError

# Characters per encode step. Small enough that one step of ordinary text takes a few ms (the budget is
# checked often), large enough that the per-step overhead is lost in the noise.
WINDOW_CHARS = 16 * 1024
# Ids per decode step.
DECODE_STEP_IDS = 64 * 1024
# The tokenizer's caches are exact but keep every chunk they have seen, up to a number of *entries*
# (tokenizer/bpe.py), and long chunks make large entries: requests of distinct 64 Ki-character runs
# would grow a worker without bound. Emptying the caches after this many encoded characters bounds what
# they hold: each character is stored at most twice (in its chunk and in its piece), so at most 32 Mi
# characters, 32-128 MB depending on the script, plus their ids. Ordinary text re-warms the caches
# within its first megabytes, so the cost is small.
CACHE_CLEAR_CHARS = 16 * 2**20

# The tokenizer's whitespace (REGEX_WHITESPACE: what \\s means to its pattern) as a character class that
# the stdlib `re` and the `regex` module read the same way.
_WS = "[" + "".join(f"\\U{ord(c):08x}" for c in REGEX_WHITESPACE) + "]"
_NOT_WS = "[^" + _WS[1:]
# A proven piece boundary of GPT2_PATTERN (tokenizer/pattern.py): the position of a whitespace
# character that follows a non-whitespace one.
_CUT = re.compile(f"(?<={_NOT_WS}){_WS}")


class WorkCancelled(Exception):
    """The request was cancelled (the server is shutting down); nobody waits for its result any more."""


class TextRefused(ValueError):
    """The tokenizer refused one text of a request (a disallowed special token, ...): which, and why."""

    def __init__(self, where: str, error: ValueError) -> None:
        super().__init__(f"{where}: {error}")
        self.where, self.error = where, error


class WorkBudget:
    """One request's allowance of CPU time, and its cancellation flag.

    The clock is the CPU time of the thread doing the work (time.thread_time), not the wall clock:
    a thread waiting for the GIL while other requests run does not spend its budget, so a busy server
    never makes a request "too expensive"; only its own work does. The clock starts at the first
    `check()`, which must therefore come before the work, in the thread that does it. Work done on the
    event loop thread (an `async def` route) would share that thread's clock with every other request:
    run it in a worker thread (a plain `def` route, or run_in_threadpool) to give it a budget of its own.
    """

    def __init__(self, max_cpu_seconds: float) -> None:
        self.max_cpu_seconds = max_cpu_seconds
        self._started: float | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Make the next check() raise WorkCancelled (safe from any thread)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def spent(self) -> float:
        return 0.0 if self._started is None else time.thread_time() - self._started

    def check(self, where: str = "request") -> None:
        """Raise if the work must stop: WorkCancelled, or ServiceError 413 too_expensive."""
        if self._cancelled.is_set():
            raise WorkCancelled()
        if self._started is None:
            self._started = time.thread_time()
        elif time.thread_time() - self._started > self.max_cpu_seconds:
            raise ServiceError(
                413,
                "too_expensive",
                f"{where}: this request needs more than {self.max_cpu_seconds:g} s of CPU time (max_cpu_seconds); "
                "send less text per request",
            )


class RunCheck:
    """Find a run of more than `limit` whitespace or non-whitespace characters, looking at few of them.

    Any run of limit + 1 or more characters covers a multiple of `limit` (among any `limit` consecutive
    positions one is a multiple of it). So only the runs through positions limit, 2*limit, ... can be too
    long, and each is measured from that position outwards, at most limit + 1 characters each way (the
    `regex` module matches leftwards with (?r)). Ordinary text costs one short match per `limit`
    characters; only a text made of long runs costs about two character tests per character. (One regex
    search for "X{limit+1}" would instead try every position of the text.) Whitespace is
    REGEX_WHITESPACE, the tokenizer's own definition (what \\s means to its pattern).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        bound = limit + 1
        self._whitespace = frozenset(REGEX_WHITESPACE)
        classes = ((True, _WS), (False, _NOT_WS))
        self._right = {ws: regex.compile(f"{cls}{{0,{bound}}}") for ws, cls in classes}
        self._left = {ws: regex.compile(f"(?r){cls}{{0,{bound}}}") for ws, cls in classes}
        self._whole = {ws: (regex.compile(f"(?r){cls}*"), regex.compile(f"{cls}*")) for ws, cls in classes}

    def find(self, text: str) -> tuple[int, int, bool] | None:
        """(start, length, is_whitespace) of the first run found longer than the limit, or None."""
        for p in range(self.limit, len(text), self.limit):
            ws = text[p] in self._whitespace
            start = self._left[ws].match(text, 0, p + 1).start()
            end = self._right[ws].match(text, p).end()
            if end - start > self.limit:
                leftwards, rightwards = self._whole[ws]  # the whole run, for the error message
                start = leftwards.match(text, 0, p + 1).start()
                return start, rightwards.match(text, p).end() - start, ws
        return None


class BoundedEncoder:
    """`tok.encode` under a WorkBudget and the per-request limits; the same ids, produced in steps."""

    def __init__(self, tok, *, max_run_chars: int, max_tokens: int, window_chars: int = WINDOW_CHARS) -> None:
        self.tok = tok
        self.max_run_chars, self.max_tokens, self.window_chars = max_run_chars, max_tokens, window_chars
        self._runs = RunCheck(max_run_chars)
        whitespace = set(REGEX_WHITESPACE)
        self.windowed = tok.pattern == GPT2_PATTERN and not any(
            whitespace.intersection(name) for name in tok.special_tokens
        )
        self._typecode = tok.encode_to_array("").typecode  # 'H' or 'I': the tokenizer's own id type
        self._cache_lock = threading.Lock()
        self._chars_since_clear = 0

    def check_runs(self, text: str, where: str) -> None:
        """413 run_too_long if `text` holds a run longer than max_run_chars (before any work is done)."""
        found = self._runs.find(text)
        if found is None:
            return
        start, length, is_ws = found
        kind = "whitespace" if is_ws else "non-whitespace"
        raise ServiceError(
            413,
            "run_too_long",
            f"{where}: {length} consecutive {kind} characters at character {start}; "
            f"the limit is {self.max_run_chars} (max_run_chars): BPE works on such a run as one piece",
        )

    def windows(self, text: str) -> Iterator[str]:
        """`text` cut at proven piece boundaries into parts of about window_chars characters (or whole)."""
        if not self.windowed:
            yield text
            return
        start, n = 0, len(text)
        while n - start > self.window_chars:
            cut = _CUT.search(text, start + self.window_chars)
            if cut is None:
                break
            yield text[start : cut.start()]
            start = cut.start()
        yield text[start:]

    def encode_all(
        self,
        texts: Sequence[str],
        where: Sequence[str],
        budget: WorkBudget,
        allowed_special: Literal["all"] | Collection[str],
        disallowed_special: Literal["all"] | Collection[str],
    ) -> list[array]:
        """The ids of every text, as arrays of the tokenizer's id type. Raises ServiceError (a limit),
        WorkCancelled, or TextRefused (the tokenizer's ValueError, e.g. a disallowed special token, and
        which text it was). Every text's runs are checked first: a batch over that limit is refused
        before any encoding.
        """
        for text, name in zip(texts, where):
            self.check_runs(text, name)
        self._account_cache(sum(map(len, texts)))
        out, total = [], 0
        for text, name in zip(texts, where):
            ids = array(self._typecode)
            for window in self.windows(text):
                budget.check(name)
                try:
                    part = self.tok.encode_to_array(
                        window, allowed_special=allowed_special, disallowed_special=disallowed_special
                    )
                except ValueError as e:
                    raise TextRefused(name, e) from e
                ids.extend(part)
                if total + len(ids) > self.max_tokens:
                    raise ServiceError(
                        413,
                        "too_many_tokens",
                        f"{name}: this request encodes to more than {self.max_tokens} tokens (max_tokens); "
                        "send less text per request",
                    )
            total += len(ids)
            out.append(ids)
        return out

    def _account_cache(self, n_chars: int) -> None:
        """Empty the tokenizer's caches once CACHE_CLEAR_CHARS characters were encoded since the last time
        (see CACHE_CLEAR_CHARS). Clearing while another thread encodes is safe: the cache is a dict that
        refills itself, and every operation on it is atomic under the GIL."""
        with self._cache_lock:
            self._chars_since_clear += n_chars
            if self._chars_since_clear < CACHE_CLEAR_CHARS:
                return
            self._chars_since_clear = 0
        self.tok.clear_cache()


def decode_all(
    tok,
    batch: Sequence[Sequence[int]],
    where: Sequence[str],
    budget: WorkBudget,
    errors: str,
    max_tokens: int,
    max_decoded_bytes: int,
) -> list[str]:
    """`tok.decode` of every id list, in steps of DECODE_STEP_IDS ids under the budget and the limits.

    Bytes are joined before they are decoded, so a character split between two steps is still whole.
    The tokenizer's ValueErrors (an unknown id, UnicodeDecodeError with errors="strict") come as
    TextRefused, naming the id list.
    """
    n_ids = sum(map(len, batch))
    if n_ids > max_tokens:
        raise ServiceError(
            413, "too_many_tokens", f"this request has {n_ids} ids; the limit is {max_tokens} (max_tokens)"
        )
    texts, total = [], 0
    for ids, name in zip(batch, where):
        parts = []
        for i in range(0, len(ids), DECODE_STEP_IDS):
            budget.check(name)
            try:
                part = tok.decode_bytes(ids[i : i + DECODE_STEP_IDS])
            except ValueError as e:
                raise TextRefused(name, e) from e
            total += len(part)
            if total > max_decoded_bytes:
                raise ServiceError(
                    413,
                    "decoded_too_large",
                    f"{name}: this request decodes to more than {max_decoded_bytes} bytes (max_decoded_bytes); "
                    "send fewer ids per request",
                )
            parts.append(part)
        try:
            texts.append(b"".join(parts).decode("utf-8", errors=errors))
        except ValueError as e:  # UnicodeDecodeError
            raise TextRefused(name, e) from e
    return texts
