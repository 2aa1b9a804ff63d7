"""The shard browser's JSON endpoints (under /pages/api/shards, left out of the OpenAPI schema).

    GET  /pages/api/shards                        the recipes under the artifacts directory
    GET  /pages/api/shards/{recipe}               stage manifests; shard list with sizes and checksum status
    POST /pages/api/shards/{recipe}/verify        {"split", "shard"}: sha256 of one shard's files
    GET  /pages/api/shards/{recipe}/stats         document-length histogram, most frequent tokens
    GET  /pages/api/shards/{recipe}/document      ?split=&position= or ?id=, &offset=&limit=: a page of tokens

Large shards stay fast because nothing here reads a whole shard into memory:
- shards are opened through ShardReader (memory-mapped, the manifest and the file sizes checked);
- a document is found from the manifest and the document index (contract/shard_documents.py), and only
  the page of tokens asked for (at most MAX_PAGE_TOKENS) is copied out of the mapping;
- the histogram needs the document index and one token per shard, the most frequent tokens a sample of
  TOP_SAMPLE_TOKENS per split spread over its shards (contract/shard_stats.py); both are remembered
  until the shard manifest changes;
- sha256 is checked one shard per request (the page asks for them in turn), each verdict remembered
  while the shard's files keep their stat stamps. A shard of up to AUTO_VERIFY_BYTES is hashed before
  anything is read from it (a few ms); a bigger one is read unverified, and the answer says so.

A shard that fails verification is refused (409 shard_damaged) by every endpoint that would read it:
what it holds is noise. So are shards the reader cannot open at all (409 shards_unusable, the reader's
own message), e.g. a file truncated or replaced since the manifest was written.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures, and `Budget` is local.
import math
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from contract.manifest import FULL_HASH_BYTES, MANIFEST, ManifestError
from contract.shard_documents import DocumentSpan, locate_id, locate_position, read_page
from contract.shard_format import REENCODE, ShardFormatError, ShardReader, damaged_files, shard_files
from contract.shard_stats import document_lengths, length_histogram, token_counts

from .budget import BoundedEncoder, WorkBudget
from .errors import ServiceError
from .pages_artifacts import Artifacts, stage_summary
from .pages_tokenizers import LoadedTokenizer
from .settings import ServeLimits

# A shard (with its index) up to this size is hashed before it is read; the stages' own rule for which
# outputs are hashed on every up-to-date check (contract/manifest.py).
AUTO_VERIFY_BYTES = FULL_HASH_BYTES
# Tokens per split counted for "most frequent tokens": all of them in the demo, a sample of a 10B run.
TOP_SAMPLE_TOKENS = 1_000_000
MAX_TOP = 200
KEEP_STATS = 8   # recipes (manifest versions) whose statistics are remembered
DEFAULT_PAGE_TOKENS = 1_000
MAX_PAGE_TOKENS = 5_000


def _stamp(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def shard_bytes(entry: dict[str, Any]) -> int:
    """The shard file and, for npy, its index: what hashing it reads."""
    return sum(size for _, size, _ in shard_files(entry))


class ShardChecks:
    """sha256 verdicts per shard, kept while its files keep their stat stamps (size, mtime, ctime, inode:
    any write through the file system changes ctime, so an edited shard is hashed again)."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple, str | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(root: Path, entry: dict[str, Any]) -> tuple:
        return tuple((str(root / rel), *_stamp(root / rel)) for rel, _, _ in shard_files(entry))

    def known(self, root: Path, entry: dict[str, Any]) -> dict[str, Any]:
        """{"status": ok | damaged | unchecked, "message"} without hashing."""
        try:
            key = self._key(root, entry)
        except OSError as exc:
            return {"status": "damaged", "message": f"{exc.filename}: {exc.strerror}"}
        with self._lock:
            if key not in self._verdicts:
                return {"status": "unchecked", "message": None}
            message = self._verdicts[key]
        return {"status": "ok" if message is None else "damaged", "message": message}

    def verify(self, root: Path, entry: dict[str, Any]) -> dict[str, Any]:
        """Hash the shard's files now (contract/shard_format.py's one checksum check) and remember the verdict."""
        try:
            key = self._key(root, entry)
        except OSError as exc:
            return {"status": "damaged", "message": f"{exc.filename}: {exc.strerror}"}
        damaged = damaged_files(root, entry)
        # ShardReader.verify's words, so the page says what `make inspect` and training say
        message = (f"{root / damaged[0]}: sha256 does not match the manifest's (corrupt shard); {REENCODE}"
                   if damaged else None)
        with self._lock:
            self._verdicts[key] = message
        return {"status": "ok" if message is None else "damaged", "message": message}

    def ensure(self, root: Path, entry: dict[str, Any]) -> dict[str, Any]:
        """The verdict, hashing now when there is none and the shard is small enough to hash in passing."""
        verdict = self.known(root, entry)
        if verdict["status"] == "unchecked" and shard_bytes(entry) <= AUTO_VERIFY_BYTES:
            verdict = self.verify(root, entry)
        return verdict


class ShardBrowser:
    """What the endpoints answer, over the artifacts directory."""

    def __init__(self, artifacts: Artifacts, limits: ServeLimits) -> None:
        self.artifacts, self.limits = artifacts, limits
        self.checks = ShardChecks()
        self._stats: dict[tuple, dict[str, Any]] = {}
        self._tokenizers: dict[tuple, LoadedTokenizer | None] = {}
        self._lock = threading.Lock()

    # ---- opening
    def shards_dir(self, recipe: str) -> Path:
        return self.artifacts.recipe_dir(recipe) / "shards"

    def open(self, recipe: str) -> ShardReader:
        """The recipe's shards through the reader training uses; 409 shards_unusable with its message."""
        directory = self.shards_dir(recipe)
        if not (directory / MANIFEST).is_file():
            raise ServiceError(409, "shards_unusable",
                               f"{directory}: no finished shards stage here (run `make shards`)")
        try:
            return ShardReader(directory)
        except (ShardFormatError, ManifestError, OSError) as exc:
            raise ServiceError(409, "shards_unusable", str(exc)) from None

    def tokenizer(self, reader: ShardReader) -> LoadedTokenizer | None:
        """The shards' own tokenizer (fingerprint-checked by the reader), or None when its file is missing."""
        path = reader.tokenizer_path
        try:
            key = (str(path), _stamp(path), reader.tokenizer_fingerprint) if path else None
        except OSError:
            key = None
        if key is None:
            return None
        with self._lock:
            if key in self._tokenizers:
                return self._tokenizers[key]
        try:
            tok = reader.load_tokenizer(required=False)
        except ShardFormatError as exc:
            raise ServiceError(409, "shards_unusable", str(exc)) from None
        loaded = None if tok is None else LoadedTokenizer(
            "shards", tok.name, tok, BoundedEncoder(tok, max_run_chars=self.limits.max_run_chars,
                                                    max_tokens=self.limits.max_tokens))
        with self._lock:
            self._tokenizers[key] = loaded
        return loaded

    def _entry(self, reader: ShardReader, split: str, index: int) -> dict[str, Any]:
        if split not in reader.splits:
            raise ServiceError(404, "unknown_split", f"split: no split {split!r} (splits: {', '.join(reader.splits)})")
        entries = reader.shards(split)
        if not 0 <= index < len(entries):
            raise ServiceError(404, "unknown_shard", f"shard: split {split!r} has shards 0..{len(entries) - 1}, "
                                                     f"got {index}")
        return entries[index]

    def _require_intact(self, reader: ShardReader, entries: list[dict[str, Any]],
                        budget: WorkBudget) -> list[str]:
        """Refuse (409 shard_damaged) when one of `entries` is known or found damaged; hash the small ones not
        checked yet. Returns the shards read without a verdict (too big to hash in passing)."""
        unverified = []
        for entry in entries:
            budget.check("shards")
            verdict = self.checks.ensure(reader.root, entry)
            if verdict["status"] == "damaged":
                raise ServiceError(409, "shard_damaged", verdict["message"])
            if verdict["status"] == "unchecked":
                unverified.append(entry["path"])
        return unverified

    # ---- answers
    def overview(self, recipe: str) -> dict[str, Any]:
        recipe_dir = self.artifacts.recipe_dir(recipe)
        out: dict[str, Any] = {
            "recipe": recipe, "root": str(self.artifacts.root),
            "stages": [stage_summary(self.artifacts, d) for d in self.artifacts.stage_dirs(recipe_dir)],
            "shards": None, "shards_error": None,
        }
        if not (recipe_dir / "shards" / MANIFEST).is_file():
            return out
        try:
            reader = self.open(recipe)
        except ServiceError as exc:
            out["shards_error"] = {"error": exc.code, "message": exc.message}
            return out
        m = reader.manifest
        tok_path = reader.tokenizer_path
        splits = {}
        for split in reader.splits:
            rows = []
            for index, entry in enumerate(reader.shards(split)):
                rows.append({"index": index, "path": entry["path"], "index_path": entry.get("index"),
                             "bytes": shard_bytes(entry), "tokens": entry["tokens"], "documents": entry["documents"],
                             "auto": shard_bytes(entry) <= AUTO_VERIFY_BYTES,
                             **self.checks.known(reader.root, entry)})
            splits[split] = {"tokens": reader.num_tokens(split), "documents": reader.num_documents(split),
                             "shards": rows}
        out["shards"] = {
            "path": reader.root.relative_to(self.artifacts.root).as_posix(), "format": reader.format,
            "format_version": m["format_version"], "dtype": reader.dtype.name, "vocab_size": reader.vocab_size,
            "eot_id": reader.eot_id, "shard_tokens": m["shard_tokens"],
            "tokenizer": {"name": m["tokenizer"].get("name"), "fingerprint": reader.tokenizer_fingerprint,
                          "path": str(tok_path) if tok_path else None,
                          "available": bool(tok_path and tok_path.is_file())},
            "splits": splits,
        }
        return out

    def verify(self, recipe: str, split: str, index: int, budget: WorkBudget) -> dict[str, Any]:
        reader = self.open(recipe)
        entry = self._entry(reader, split, index)
        budget.check("shard")
        return {"split": split, "index": index, "path": entry["path"], **self.checks.verify(reader.root, entry)}

    def stats(self, recipe: str, top: int, budget: WorkBudget) -> dict[str, Any]:
        reader = self.open(recipe)
        every = [e for split in reader.splits for e in reader.shards(split)]
        unverified = self._require_intact(reader, every, budget)
        key = (str(reader.manifest_path), _stamp(reader.manifest_path))
        with self._lock:
            cached = self._stats.get(key)
        if cached is None:
            cached = self._compute_stats(reader, budget)
            with self._lock:
                if len(self._stats) >= KEEP_STATS:
                    self._stats.pop(next(iter(self._stats)))   # the oldest
                self._stats[key] = cached
        loaded = self.tokenizer(reader)
        top_tokens = [{**t, "info": loaded.token_info(t["id"]) if loaded else None} for t in cached["top"][:top]]
        return {"recipe": recipe, "histogram": cached["histogram"], "sample": cached["sample"],
                "top_tokens": top_tokens, "unverified": unverified}

    def _compute_stats(self, reader: ShardReader, budget: WorkBudget) -> dict[str, Any]:
        def check() -> None:
            budget.check("stats")

        lengths, counts = {}, np.zeros(reader.vocab_size, dtype=np.int64)
        sample: dict[str, Any] = {}
        for split in reader.splits:
            entries = reader.shards(split)
            lengths[split] = document_lengths(reader, entries, check)
            per_shard = math.ceil(TOP_SAMPLE_TOKENS / max(1, len(entries)))
            try:
                split_counts, counted = token_counts(reader, entries, per_shard, check)
            except ShardFormatError as exc:   # an id outside the vocabulary: a shard too big to hash in passing
                raise ServiceError(409, "shard_damaged", str(exc)) from None
            counts += split_counts
            sample[split] = {"counted": counted, "tokens": reader.num_tokens(split),
                             "all": counted == reader.num_tokens(split)}
        total = max(1, int(counts.sum()))
        order = np.argsort(-counts, kind="stable")[:MAX_TOP]
        top = [{"id": int(i), "count": int(counts[i]), "share": float(counts[i]) / total}
               for i in order if counts[i] > 0]
        return {"histogram": length_histogram(lengths), "sample": sample, "top": top}

    def find(self, reader: ShardReader, split: str | None, position: int | None, doc_id: str | None,
             budget: WorkBudget) -> DocumentSpan:
        if split is not None and split not in reader.splits:
            raise ServiceError(404, "unknown_split", f"split: no split {split!r} (splits: {', '.join(reader.splits)})")
        try:
            if doc_id:
                span = locate_id(reader, doc_id, [split] if split else None, lambda: budget.check("id"))
                if span is None:
                    where = f"split {split!r}" if split else "any split"
                    raise ServiceError(404, "unknown_document",
                                       f"id: no document {doc_id!r} in {where} of {reader.root}")
                return span
            split = split or ("train" if "train" in reader.splits else reader.splits[0])
            return locate_position(reader, split, position or 0)
        except IndexError as exc:
            raise ServiceError(404, "unknown_document", f"position: {exc}") from None
        except ShardFormatError as exc:
            raise ServiceError(409, "shards_unusable", str(exc)) from None

    def document(self, recipe: str, split: str | None, position: int | None, doc_id: str | None, offset: int,
                 limit: int, budget: WorkBudget) -> dict[str, Any]:
        reader = self.open(recipe)
        span = self.find(reader, split, position, doc_id, budget)
        entries = reader.shards(span.split)
        touched = [entries[i] for i in span.shard_indexes]
        unverified = self._require_intact(reader, touched, budget)
        if span.length and offset >= span.length:
            raise ServiceError(422, "invalid_request", f"offset: document {span.doc_id!r} has {span.length:,} tokens, "
                                                       f"got offset {offset}")
        ids = read_page(reader, span, offset, limit)
        loaded = self.tokenizer(reader)
        if len(ids) and int(ids.max()) >= reader.vocab_size:
            raise ServiceError(409, "shard_damaged", f"{reader.root / touched[0]['path']}: document {span.doc_id!r} "
                               f"holds id {int(ids.max())}, outside the vocabulary of {reader.vocab_size} "
                               f"(corrupt shard; {REENCODE})")
        shown = ids.tolist()
        return {"recipe": recipe, "split": span.split, "position": span.position, "id": span.doc_id,
                "length": span.length, "offset": offset, "limit": limit, "ids": shown,
                "tokens": loaded.infos(shown) if loaded else None,
                "tokenizer": loaded.identity if loaded else None,
                "shards": [e["path"] for e in touched], "unverified": unverified}


class VerifyRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    split: str
    shard: int = Field(ge=0)


def shards_router(browser: ShardBrowser, budget_dependency) -> APIRouter:
    """The routes above, over `browser`; `budget_dependency` gives each request its WorkBudget (app.py)."""
    router = APIRouter(prefix="/pages/api/shards", include_in_schema=False)
    Budget = Annotated[WorkBudget, budget_dependency]

    @router.get("")
    def recipes():
        return {"root": str(browser.artifacts.root), "recipes": browser.artifacts.recipes(),
                "exists": os.path.isdir(browser.artifacts.root)}

    @router.get("/{recipe}")
    def overview(recipe: str):
        return browser.overview(recipe)

    @router.post("/{recipe}/verify")
    def verify(recipe: str, req: VerifyRequest, budget: Budget):
        return browser.verify(recipe, req.split, req.shard, budget)

    @router.get("/{recipe}/stats")
    def stats(recipe: str, budget: Budget, top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20):
        return browser.stats(recipe, top, budget)

    @router.get("/{recipe}/document")
    def document(
        recipe: str,
        budget: Budget,
        split: str | None = None,
        position: Annotated[int | None, Query(ge=0)] = None,
        id: Annotated[str | None, Query(max_length=4096)] = None,   # shadows the builtin, in here only
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_TOKENS)] = DEFAULT_PAGE_TOKENS,
    ):
        return browser.document(recipe, split, position, id, offset, limit, budget)

    return router
