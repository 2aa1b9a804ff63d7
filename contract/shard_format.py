"""The on-disk token shard format: the ONE module that writes and reads it.

Layout of artifacts/<recipe>/shards/ (format version 1):

    manifest.json                  what is here: tokenizer fingerprint/path, vocab size, dtype, eot id,
                                   and per split the ordered shard list (tokens, documents, sha256)
    train_000000.npy               format "npy": one flat token array per shard, like build-nanogpt's
    train_000000.index.arrow         + its document index (Arrow IPC stream: id, start)
    val_000000.arrow               format "arrow": an Arrow IPC *stream* with ONE record batch,
                                   one row per document piece: input_ids list<uint16|uint32>, id string

Invariants the reader relies on (and training exploits):
- Every document is preceded by the end-of-text token, and documents are encoded as ordinary
  text, so eot appears ONLY at document starts: the stream never runs two documents together.
- Every shard except the last of a split holds exactly `shard_tokens` tokens. A document that
  crosses a boundary is cut: its continuation starts the next shard (same id, no leading eot).
  In an arrow shard that makes the continuation the shard's first row, so a document is one row
  per shard it touches: rows whose input_ids start with eot are the documents, and only a shard's
  first row can be a continuation (`ShardReader.iter_documents` stitches them). Never splitting a
  document would break the fixed shard size that resume and byte identity rest on.
- Tokens are uint16 when the vocabulary fits in 65,536 ids, else uint32.
- An arrow shard is a single record batch, so its `input_ids` values are one contiguous buffer:
  memory-mapping the file gives the whole shard as one zero-copy numpy array, exactly like
  `np.load(mmap_mode="r")` gives for npy. (int32 list offsets cap a batch at 2**31-1 tokens.)
- Files are written to a temporary name and renamed, so a file with a final name is complete,
  and the manifest is written last, so a directory with a manifest holds complete shards.

Everything about the format lives here, for every side of it: the writer (`ShardWriter`), the
manifest (`shards_manifest`, the one builder, used by the shards stage and by synthetic test shards),
the checks (`damaged_files`, the one sha256 verifier, used by the stage's resume, the reader and
inspect), the reader (`ShardReader`) and the tokenizer that goes with a shard directory
(`ShardReader.load_tokenizer`, `load_matching_tokenizer`). Training imports it, so it stays light:
numpy, pyarrow, the manifest helpers, and the tokenizer only when a caller asks for one.

Read first: `ShardWriter.add` (documents in, fixed-size shards out) and `ShardReader.token_arrays` (a
split as memory-mapped arrays, what training reads). Bookkeeping a first reading may skip: the manifest
schema and checks (`manifest_schema`, `damaged_files`, `ShardReader._validate_manifest`) and the resume
positions the writer records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from contract.manifest import (  # stdlib only
    MANIFEST,
    OUTPUT,
    EachValue,
    ManifestError,
    MayOmit,
    check_manifest,
    check_schema,
    file_problem,
    sha256_file,
)
from tokenizer.atomic_write import atomic_open, atomic_path

FORMAT_VERSION = 1
FORMATS = ("npy", "arrow")
REBUILD = "`make shards` rebuilds it"
# A same-size corruption is found only by hashing, which `make shards` does for big shards only when
# their stat stamps changed (contract/manifest.py); VERIFY=1 hashes every file, then re-encodes.
REENCODE = "`make shards VERIFY=1` re-encodes it (from the first damaged shard on)"


class ShardFormatError(ValueError):
    """Shards that cannot be used as they are: missing, corrupt, or made by another tokenizer."""


class ShardManifestError(ShardFormatError, ManifestError):
    """A shard manifest that is not what the format says (a missing key, a wrong type, an edited value).

    Both kinds of error at once: callers that handle unusable shards and callers that handle broken
    manifests each see it as theirs."""


# The manifest as readers rely on it (contract/manifest.py explains the notation). The writer adds
# more (the stage's config and inputs, a shard's piece count); readers only state what they use.
SHARD_ENTRY = {"path": str, "bytes": int, "sha256": str, "tokens": int, "documents": int}
NPY_SHARD_ENTRY = {**SHARD_ENTRY, "index": str, "index_bytes": int, "index_sha256": str}


def manifest_schema(fmt: str) -> dict[str, Any]:
    """The keys of a shard directory's manifest.json in format `fmt` (npy shards also list their index)."""
    return {
        "format_version": int, "format": str,
        "tokenizer": {"fingerprint": str, "name": MayOmit((str, None)), "path": MayOmit((str, None))},
        "vocab_size": int, "dtype": str, "eot_id": int, "shard_tokens": int,
        "splits": EachValue({"tokens": int, "documents": int, "skipped_empty": int,
                             "shards": [NPY_SHARD_ENTRY if fmt == "npy" else SHARD_ENTRY]}),
        "outputs": [OUTPUT],
    }


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_name(split: str, index: int, fmt: str) -> str:
    return f"{split}_{index:06d}.{'npy' if fmt == 'npy' else 'arrow'}"


def index_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.index.arrow"


def _arrow_type(dtype: np.dtype) -> pa.DataType:
    return pa.uint16() if dtype == np.uint16 else pa.uint32()


# numpy <-> Arrow through raw buffers. pyarrow's own converters (pa.array, Array.to_numpy) import
# pandas on first use (~0.3 s per process, and the shards stage and training start many), and the
# buffers are exactly what we want anyway: one contiguous, zero-copy block of values.
def _arrow_from_numpy(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _arrow_strings(strings: list[str]) -> pa.Array:
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _numpy_view(array: pa.Array, dtype: np.dtype) -> np.ndarray:
    """The values of a null-free primitive Arrow array as a numpy view (no copy; read-only if mapped)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _write_stream(path: Path, batch: pa.RecordBatch) -> None:
    """One record batch as an Arrow IPC stream (the format datasets.Dataset.from_file reads), published
    atomically. Not durable (no fsync): a rename survives kill -9, and a resume re-checks the sha256 of
    every shard it keeps, which also catches a file torn by a power cut."""
    with atomic_path(path, durable=False) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)


def _write_npy(f, array: np.ndarray) -> None:
    """The bytes np.save writes for a 1-D array (format 1.0 header, then the data), written with
    f.write. numpy's own writer uses ndarray.tofile, which reports a full disk as a bare "N requested
    and M written" without an errno, so the error could not be told apart from a bug."""
    np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
    f.write(memoryview(array))


# ------------------------------------------------------------------------------------------ writer
@dataclass
class ShardWriter:
    """Cut one split's token stream into fixed-size shards.

    Feed documents in order with `add(doc_id, tokens, position)`; `tokens` already starts with
    eot. `position` is any JSON value that says where in the input the document came from
    (the shards stage passes (task, row)). When a shard fills up it is written and `on_shard` is
    called with its manifest entry, which includes `resume`: the input position and token offset
    of the first token NOT in this shard. A rerun can start there and produce the same bytes.
    """

    out_dir: Path
    split: str
    fmt: str
    shard_tokens: int
    dtype: np.dtype
    eot_id: int
    next_index: int = 0
    on_shard: Callable[[dict[str, Any]], None] | None = None
    _buf: np.ndarray = field(init=False, repr=False)
    _fill: int = field(init=False, default=0)
    _pieces: list[tuple[str, int]] = field(init=False, default_factory=list)  # (id, start in shard)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown shard format {self.fmt!r} (use one of {FORMATS})")
        self.dtype = np.dtype(self.dtype)
        # np.empty touches no pages: resident memory grows with the fill, bounded by one shard
        self._buf = np.empty(self.shard_tokens, dtype=self.dtype)

    def add(self, doc_id: str, tokens: np.ndarray, position: Any, skip: int = 0) -> None:  # read first
        """Append tokens[skip:] of one document (skip > 0 only when resuming inside a document).

        A full shard is written lazily, when the next token arrives: then we know where that token
        comes from, which is exactly the shard's resume point."""
        n = len(tokens)
        offset = skip
        while offset < n:
            if self._fill == self.shard_tokens:
                self._write_shard(resume={"position": position, "offset": offset})
            take = min(n - offset, self.shard_tokens - self._fill)
            self._pieces.append((doc_id, self._fill))
            self._buf[self._fill : self._fill + take] = tokens[offset : offset + take]
            self._fill += take
            offset += take

    def close(self) -> None:
        """Write the last, shorter shard (if any tokens are left)."""
        if self._fill:
            self._write_shard(resume=None)

    def _write_shard(self, resume: dict[str, Any] | None) -> None:
        tokens = self._buf[: self._fill]
        ids = [p[0] for p in self._pieces]
        starts = np.array([p[1] for p in self._pieces], dtype=np.int64)
        documents = int(np.count_nonzero(tokens[starts] == self.eot_id)) if len(starts) else 0
        final = self.out_dir / shard_name(self.split, self.next_index, self.fmt)
        entry: dict[str, Any] = {"path": final.name}
        if self.fmt == "npy":
            # the index first: a shard file with its final name never lacks its index
            index_final = self.out_dir / index_name(self.split, self.next_index)
            index = pa.RecordBatch.from_arrays(
                [_arrow_strings(ids), _arrow_from_numpy(starts.astype(np.uint64), pa.uint64())], names=["id", "start"]
            )
            _write_stream(index_final, index)
            entry["index"] = index_final.name
            entry["index_bytes"] = index_final.stat().st_size
            entry["index_sha256"] = sha256_file(index_final)
            with atomic_open(final, "wb", durable=False) as f:
                _write_npy(f, np.ascontiguousarray(tokens))
        else:
            offsets = np.append(starts, len(tokens)).astype(np.int32)
            values = _arrow_from_numpy(tokens, _arrow_type(self.dtype))
            input_ids = pa.ListArray.from_arrays(_arrow_from_numpy(offsets, pa.int32()), values)
            batch = pa.RecordBatch.from_arrays([input_ids, _arrow_strings(ids)], names=["input_ids", "id"])
            _write_stream(final, batch)
        # bookkeeping: the manifest entry (sizes, sha256) and where a resumed run would continue
        entry.update({"tokens": int(len(tokens)), "documents": documents, "pieces": len(ids),
                      "bytes": final.stat().st_size, "sha256": sha256_file(final), "resume": resume})
        self.next_index += 1
        self._fill = 0
        self._pieces = []
        if self.on_shard is not None:
            self.on_shard(entry)


# ---------------------------------------------------------------------------------------- manifest
def shard_files(entry: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(path, bytes, sha256) of every file of one shard as its manifest entry records them:
    the shard itself and, for npy, its document index."""
    files = [(entry["path"], entry["bytes"], entry["sha256"])]
    if "index" in entry:
        files.append((entry["index"], entry["index_bytes"], entry["index_sha256"]))
    return files


def damaged_files(root: Path, entry: dict[str, Any]) -> list[str]:
    """The files of one shard that are missing or differ from its manifest entry (size, then sha256).

    The ONE checksum check of the format, always in full (every byte hashed): the shards stage keeps only
    undamaged shards when it resumes, `ShardReader.verify` refuses damaged ones, inspect lists them."""
    return [rel for rel, size, digest in shard_files(entry) if file_problem(root / rel, size, digest)]


def shards_manifest(*, fmt: str, vocab_size: int, eot_id: int, shard_tokens: int, tokenizer: dict[str, Any],
                    splits: dict[str, list[dict[str, Any]]], skipped_empty: dict[str, int] | None = None,
                    **stage_facts: Any) -> dict[str, Any]:
    """The manifest.json of a shard directory, from the entries ShardWriter reported for each split.

    tokenizer: {"fingerprint", "name", "path" (relative to the shard directory, or None)}.
    stage_facts: what the writer adds for itself (the shards stage: stage, recipe, config, inputs).
    Writer bookkeeping (a shard's resume point) stays out: the manifest describes files, not a run.
    """
    split_info: dict[str, Any] = {}
    outputs = []
    for split, shards in splits.items():
        entries = [{k: v for k, v in e.items() if k not in ("resume", "skipped_empty")} for e in shards]
        split_info[split] = {
            "tokens": sum(e["tokens"] for e in entries),
            "documents": sum(e["documents"] for e in entries),
            "skipped_empty": (skipped_empty or {}).get(split, 0),
            "shards": entries,
        }
        outputs += [{"path": rel, "bytes": size, "sha256": digest} for e in entries for rel, size, digest in
                    shard_files(e)]
    return {
        **stage_facts,
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "dtype": dtype_for_vocab(vocab_size).name,
        "eot_id": eot_id,
        "shard_tokens": shard_tokens,
        "splits": split_info,
        "outputs": outputs,
    }


def load_matching_tokenizer(path: str | os.PathLike, fingerprint: str, made_with: str,
                            remedy: str = "`make shards` rebuilds whichever of the two no longer matches the recipe"):
    """Load a tokenizer file and make sure it is the one whose fingerprint the artifacts record.

    Token ids only mean something together with the tokenizer that produced them, so every reader of
    ids (the shards stage, training, sampling, inspect) loads its tokenizer through this check.
    `made_with` names what the fingerprint comes from, `remedy` what fixes a mismatch or a corrupt file."""
    from tokenizer import Tokenizer  # lazily: reading shards never needs it
    from tokenizer.formats import TokenizerFileError

    try:
        tok = Tokenizer.load(path)
    except TokenizerFileError as exc:
        raise ShardFormatError(f"{exc}; {remedy}") from None
    if tok.fingerprint != fingerprint:
        raise ShardFormatError(
            f"{path} has fingerprint {tok.fingerprint[:16]}..., but {made_with} {fingerprint[:16]}...: "
            f"the same ids would mean different text; {remedy}")
    return tok


# ------------------------------------------------------------------------------------------ reader
def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ShardFormatError(message)


class ShardReader:
    """Open a shard directory (or its manifest.json) and read it without copying.

    >>> reader = ShardReader("artifacts/demo/shards", expect_fingerprint=tok.fingerprint)
    >>> arrays = reader.token_arrays("train")       # memory-mapped, one flat array per shard
    """

    def __init__(self, path: str | os.PathLike, expect_fingerprint: str | None = None, verify: bool = False):
        path = Path(path)
        self.manifest_path = path if path.is_file() else path / MANIFEST
        self.root = self.manifest_path.parent
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ShardFormatError(
                f"{self.manifest_path} not found: no complete shards here (run `make shards`)"
            ) from None
        try:
            self.manifest: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ShardManifestError(f"{self.manifest_path} is not valid JSON: {exc}; {REBUILD}") from None
        self._validate_manifest()
        if expect_fingerprint is not None and expect_fingerprint != self.tokenizer_fingerprint:
            raise ShardFormatError(
                f"{self.root}: shards were encoded with tokenizer {self.tokenizer_fingerprint[:16]}..., "
                f"but the tokenizer given has fingerprint {expect_fingerprint[:16]}...; token ids would mean "
                f"different things. Rebuild the shards with this tokenizer (`make shards` does when it is "
                f"the recipe's) or use the tokenizer at {self.manifest['tokenizer'].get('path')}"
            )
        if verify:
            self.verify()

    # ---- manifest facts
    def _validate_manifest(self) -> None:
        """The schema (every key the reader uses, with its type), the checksum, then the facts themselves.
        Version first: a newer format deserves "newer version", not a list of keys it moved."""
        m, where = self.manifest, self.manifest_path
        try:
            check_schema(m, {"format_version": int, "format": str}, file=where)
            _check(m["format_version"] == FORMAT_VERSION,
                   f"{where}: format version {m['format_version']} (this reader knows version {FORMAT_VERSION})")
            _check(m["format"] in FORMATS, f"{where}: unknown format {m['format']!r}")
            check_manifest(m, manifest_schema(m["format"]), where)
        except ManifestError as exc:
            raise ShardManifestError(f"{exc}; {REBUILD}") from None
        _check(m["dtype"] in ("uint16", "uint32") and np.dtype(m["dtype"]) == dtype_for_vocab(m["vocab_size"]),
               f"{where}: dtype {m['dtype']} does not fit vocab size {m['vocab_size']}")
        _check(0 <= m["eot_id"] < m["vocab_size"], f"{where}: eot id {m['eot_id']} outside the vocabulary")
        for split, info in m["splits"].items():
            for entry in info["shards"]:
                # sizes only (cheap, every open); the sha256 of every byte is `verify`'s job
                for rel, size, _ in shard_files(entry):
                    p = self.root / rel
                    _check(p.is_file(), f"{where}: split {split!r}: shard file {p} is missing; {REBUILD}")
                    _check(p.stat().st_size == size,
                           f"{p}: {p.stat().st_size} bytes, manifest says {size} (truncated or replaced); {REBUILD}")

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.manifest["eot_id"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def tokenizer_fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    @property
    def tokenizer_path(self) -> Path | None:
        rel = self.manifest["tokenizer"].get("path")
        return (self.root / rel).resolve() if rel else None

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def shards(self, split: str) -> list[dict[str, Any]]:
        try:
            return self.manifest["splits"][split]["shards"]
        except KeyError:
            raise ShardFormatError(f"{self.root}: no split {split!r} (splits: {', '.join(self.splits)})") from None

    def num_tokens(self, split: str) -> int:
        return sum(e["tokens"] for e in self.shards(split))

    def num_documents(self, split: str) -> int:
        return sum(e["documents"] for e in self.shards(split))

    # ---- checksums
    def verify(self) -> list[str]:
        """sha256 of every shard (and index) file against the manifest; raises on the first damaged shard."""
        checked = []
        for split in self.splits:
            for entry in self.shards(split):
                damaged = damaged_files(self.root, entry)
                if damaged:
                    raise ShardFormatError(f"{self.root / damaged[0]}: sha256 does not match the manifest's "
                                           f"(corrupt shard); {REENCODE}")
                checked += [rel for rel, _, _ in shard_files(entry)]
        return checked

    # ---- the tokenizer that gives the ids their meaning
    def load_tokenizer(self, required: bool = True):
        """The tokenizer file the manifest names, checked against the shards' fingerprint.

        With required=False a missing file gives None (inspect and training can do without text);
        a file that exists but belongs to another tokenizer is always an error."""
        path = self.tokenizer_path
        if path is None or not path.is_file():
            if required:
                raise ShardFormatError(f"{self.manifest_path}: the tokenizer it names ({path}) is missing; "
                                       "it is needed to turn ids into text and back (`make tokenizer` rebuilds it)")
            return None
        return load_matching_tokenizer(path, self.tokenizer_fingerprint, f"the shards in {self.root} were made with")

    # ---- data, zero copy
    def shard_tokens(self, entry: dict[str, Any]) -> np.ndarray:
        """The flat token array of one shard, memory-mapped read-only."""
        path = self.root / entry["path"]
        if self.format == "npy":
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise ShardFormatError(f"{path}: not a readable .npy file ({exc})") from None
        else:
            column = self._arrow_batch(path).column("input_ids")
            _check(column.type.value_type == _arrow_type(self.dtype),
                   f"{path}: input_ids are {column.type.value_type}, manifest says {self.dtype}")
            arr = _numpy_view(column.values, self.dtype)
        _check(arr.ndim == 1 and arr.dtype == self.dtype,
               f"{path}: {arr.dtype} array of shape {arr.shape}, manifest says 1-D {self.dtype}")
        _check(len(arr) == entry["tokens"], f"{path}: {len(arr)} tokens, manifest says {entry['tokens']}")
        return arr

    def token_arrays(self, split: str) -> list[np.ndarray]:
        return [self.shard_tokens(e) for e in self.shards(split)]

    def shard_pieces(self, entry: dict[str, Any]) -> tuple[list[str], np.ndarray]:
        """(ids, starts) of the document pieces in one shard; piece i spans starts[i]:starts[i+1]."""
        if self.format == "npy":
            batch = self._arrow_batch(self.root / entry["index"])
            ids = batch.column("id").to_pylist()
            starts = _numpy_view(batch.column("start"), np.uint64).astype(np.int64)
        else:
            batch = self._arrow_batch(self.root / entry["path"])
            ids = batch.column("id").to_pylist()
            starts = _numpy_view(batch.column("input_ids").offsets, np.int32)[:-1].astype(np.int64)
        return ids, starts

    def iter_documents(self, split: str) -> Iterator[tuple[str, np.ndarray]]:
        """(document id, tokens incl. the leading eot) in order; a document cut by a shard boundary
        is stitched back together (that one document is copied, everything else is a view)."""
        pending_id: str | None = None
        pending: list[np.ndarray] = []
        for entry in self.shards(split):
            tokens = self.shard_tokens(entry)
            ids, starts = self.shard_pieces(entry)
            ends = np.append(starts[1:], len(tokens))
            for doc_id, s, e in zip(ids, starts, ends):
                piece = tokens[s:e]
                if piece[0] == self.eot_id:  # a new document begins
                    if pending_id is not None:
                        yield pending_id, pending[0] if len(pending) == 1 else np.concatenate(pending)
                    pending_id, pending = doc_id, [piece]
                else:
                    _check(pending_id == doc_id, f"{self.root / entry['path']}: piece of {doc_id!r} continues "
                                                 f"{pending_id!r} (shards out of order?)")
                    pending.append(piece)
        if pending_id is not None:
            yield pending_id, pending[0] if len(pending) == 1 else np.concatenate(pending)

    @staticmethod
    def _arrow_batch(path: Path) -> pa.RecordBatch:
        try:
            reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
            batch = reader.read_next_batch()
        except (pa.ArrowInvalid, OSError, StopIteration) as exc:
            raise ShardFormatError(f"{path}: not a readable Arrow IPC stream ({exc})") from None
        return batch
