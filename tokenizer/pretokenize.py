"""Count pre-tokens ("words") over a stream of documents, in parallel worker processes.

Reference: tokenizer/reference_bpe.py `ReferenceTokenizer.train`'s one line,
`Counter(piece.encode() for text in texts for piece in split(text))`.

BPE training never looks across a pre-token boundary (see tokenizer/pattern.py), so the corpus can
be reduced to a multiset: {pre-token bytes: how often it occurs}. Natural text is extremely
repetitive at this level -- the ~2 MB python-docs corpus has ~460,000 pre-tokens but only ~19,000
distinct ones -- so everything after this step works on the small table, never on the text.

Why this shape:
  - Streaming. Documents are read from the iterable one at a time and grouped into chunks of about
    CHUNK_CHARS characters; at most 2 chunks per worker are in flight. Memory therefore grows with
    the number of *distinct* pre-tokens (the table), not with the corpus size.
  - Parallel. Running the regex is the only step that touches every character, so it is the one
    step spread over worker processes (`workers=None` means os.cpu_count()). Each worker returns a
    small table for its chunk; the parent adds the tables up. A corpus that fits in one chunk is
    counted in-process: starting processes would cost more than it saves.
  - Exact. Documents are split one by one (never concatenated), exactly as HF tokenizers and
    tiktoken split each input string, so no pre-token spans two documents.
  - Lone surrogates (possible in Python str, not in UTF-8) become U+FFFD before encoding to bytes,
    as tiktoken does. Both are "other symbol" to the regex, so splitting is unaffected.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Iterable, Iterator

from tokenizer.pattern import GPT2_PATTERN, Splitter, piece_splitter
from tokenizer.progress import Progress

# ~256k characters per task: large enough that inter-process traffic is negligible, small enough
# that a 2 MB corpus still keeps every core busy.
CHUNK_CHARS = 1 << 18

_splitters: dict[str, Splitter] = {}


def _splitter(pattern: str) -> Splitter:
    """Build once per process (workers receive the pattern string, not the splitter). It is the
    encoder's own splitter, so training cuts text exactly where encoding (and tiktoken) will."""
    split = _splitters.get(pattern)
    if split is None:
        split = _splitters[pattern] = piece_splitter(pattern)
    return split


def _to_bytes(piece: str) -> bytes:
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogate: replace it by U+FFFD, like tiktoken
        return piece.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def count_chunk(docs: list[str], pattern: str) -> dict[bytes, int]:
    """Split each document with the regex and count the pieces (runs inside a worker)."""
    split = _splitter(pattern)
    counts: collections.Counter[str] = collections.Counter()
    for doc in docs:
        counts.update(split(doc))  # Counter.update on a list counts in C
    return {_to_bytes(piece): n for piece, n in counts.items()}


def _chunks(texts: Iterable[str], max_chars_per_doc: int | None, chunk_chars: int) -> Iterator[list[str]]:
    """Validate and cap documents while streaming them into chunks of about chunk_chars characters."""
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(
            f"texts must be an iterable of str documents, not a single {type(texts).__name__} "
            "(wrap it in a list: [text])"
        )
    try:
        iterator = iter(texts)
    except TypeError:
        raise TypeError(f"texts must be an iterable of str documents, got {type(texts).__name__}") from None
    chunk: list[str] = []
    size = 0
    for index, doc in enumerate(iterator):
        if not isinstance(doc, str):
            raise TypeError(f"texts[{index}] is a {type(doc).__name__}, expected str (document {index})")
        if max_chars_per_doc is not None and len(doc) > max_chars_per_doc:
            doc = doc[:max_chars_per_doc]
        chunk.append(doc)
        size += len(doc)
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _add(total: dict[bytes, int], part: dict[bytes, int]) -> None:
    if not total:
        total.update(part)
        return
    get = total.get
    for piece, n in part.items():
        total[piece] = get(piece, 0) + n


def _mp_context():
    # fork starts workers in milliseconds and they inherit the imported modules; elsewhere
    # (macOS, Windows) use the platform default.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and os.name == "posix" else None)


def count_pretokens(
    texts: Iterable[str],
    *,
    pattern: str = GPT2_PATTERN,
    workers: int | None = None,
    max_chars_per_doc: int | None = None,
    chunk_chars: int = CHUNK_CHARS,
    progress: bool = False,
) -> dict[bytes, int]:
    """{pre-token as UTF-8 bytes: number of occurrences} over all documents."""
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    if max_chars_per_doc is not None and (
        isinstance(max_chars_per_doc, bool) or not isinstance(max_chars_per_doc, int) or max_chars_per_doc < 1
    ):
        raise ValueError(f"max_chars_per_doc must be a positive int or None, got {max_chars_per_doc!r}")
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    _splitter(pattern)  # fail early, in the parent, on an invalid regex (and build it before forking)

    # The project's one progress convention (tokenizer/progress.py): a bar on a terminal, plain lines
    # in a log, nothing under TQDM_DISABLE=1.
    bar = Progress(desc="pre-tokenising", unit="chars", enabled=progress)
    chunks = _chunks(texts, max_chars_per_doc, chunk_chars)
    total: dict[bytes, int] = {}
    try:
        first = next(chunks, None)
        second = next(chunks, None) if first is not None else None
        if workers == 1 or second is None:  # in-process: asked for, or the corpus is one chunk
            for chunk in (c for c in (first, second) if c is not None):
                _count_into(total, chunk, pattern, bar)
            for chunk in chunks:
                _count_into(total, chunk, pattern, bar)
            return total
        with _mp_context().Pool(workers) as pool:
            pending: collections.deque = collections.deque()
            for chunk in _prepend((first, second), chunks):
                pending.append((pool.apply_async(count_chunk, (chunk, pattern)), sum(map(len, chunk))))
                while len(pending) >= 2 * workers:  # back-pressure: never read far ahead of the workers
                    _collect(total, pending.popleft(), bar)
            while pending:
                _collect(total, pending.popleft(), bar)
        return total
    finally:
        if bar is not None:
            bar.close()


def _prepend(head: tuple, rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield from head
    yield from rest


def _count_into(total: dict[bytes, int], chunk: list[str], pattern: str, bar) -> None:
    _add(total, count_chunk(chunk, pattern))
    if bar is not None:
        bar.update(sum(map(len, chunk)))


def _collect(total: dict[bytes, int], item, bar) -> None:
    result, n_chars = item
    _add(total, result.get())
    if bar is not None:
        bar.update(n_chars)
