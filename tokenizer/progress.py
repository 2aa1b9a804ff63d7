"""Progress of a long stage: a tqdm bar on a terminal, a plain line now and then in a log, or nothing.

Every stage that reports progress (make data, make tokenizer, make shards) goes through `Progress`, so
they all follow the same three rules, decided once when a bar opens:

- **Off when asked.** `--no-progress` (what `make PROGRESS=0` passes) or tqdm's own switch, the
  environment variable TQDM_DISABLE=1: no bar and no progress lines. The stage's result lines stay.
- **A terminal gets a tqdm bar.** tqdm redraws one line in place with carriage returns.
- **Anything else gets a plain line every LLM_JOURNEY_PROGRESS_EVERY seconds (default 30).** In a
  log file, a pipe or CI, those carriage-return frames pile up into one unreadable line, so the bar
  is left to tqdm's own auto-detection (`disable=None`: off when the stream is not a TTY) and replaced
  by lines such as `shards train: 1,234/4,278 doc (29%), 412 doc/s, ETA 0m07s`: a long stage that
  writes to a log still shows that it moves, and how fast.

Why not simply pass `disable=not progress_bar` to tqdm: an explicit `disable=False` overrides both
TQDM_DISABLE and the TTY detection, which is how `TQDM_DISABLE=1 make shards` still printed frames.

Part of the tokenizer package (floor 0) because BPE training reports through it too; it imports
nothing else of the project, and tqdm only when a terminal will show the bar.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

EVERY_ENV = "LLM_JOURNEY_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def progress_disabled() -> bool:
    """TQDM_DISABLE set to a true value: the user's way of switching every tqdm bar off."""
    return _env_flag("TQDM_DISABLE")


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_mode(enabled: bool = True, stream: TextIO | None = None) -> str:
    """How progress shows on `stream` (default stderr): "bar" on a terminal, "lines" elsewhere, "off" when
    `enabled` is false or TQDM_DISABLE is set."""
    if not enabled or progress_disabled():
        return "off"
    return "bar" if _is_tty(stream if stream is not None else sys.stderr) else "lines"


def _every_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """A progress report over `total` units (None: unknown), shown as the rules above say.

    The same calls as tqdm's (`update`, `set_postfix`, `close`, and `with`), so a stage reads the same
    whichever way the progress ends up shown.
    """

    def __init__(self, total: int | None = None, *, desc: str, unit: str = "it", enabled: bool = True,
                 initial: int = 0, stream: TextIO | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self.bar: Any = None
        self.lines = False  # plain progress lines instead of a bar
        mode = progress_mode(enabled, self.stream)
        if mode == "bar":
            from tqdm import tqdm

            # disable=None: tqdm's own TTY check agrees with ours, and TQDM_* variables keep working
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, disable=None,
                            dynamic_ncols=True)
        elif mode == "lines":
            self.lines = True
            self.every = _every_seconds()
            self._t0 = self._last = time.monotonic()

    @property
    def mode(self) -> str:
        """"bar", "lines" or "off": what the user sees."""
        return "bar" if self.bar is not None else "lines" if self.lines else "off"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines:
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(values)

    def _line(self, now: float) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        done = f"{self.n:,}"
        eta = ""
        if self.total:
            done += f"/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if rate > 0:
                eta = f", ETA {_duration((self.total - self.n) / rate)}"
        else:
            done += f" {self.unit}"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}, {rate:,.0f} {self.unit}/s{eta}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.lines = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
