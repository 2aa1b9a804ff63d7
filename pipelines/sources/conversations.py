"""Where fine-tuning conversations come from: `[sft] source` = python-docs | local | hf.

Each source yields `ConversationRecord`s -- the raw `messages` value of one row, an id and a `where`
that names the row in messages -- in a fixed order. Like the document sources of `make data`, a source
does not judge its rows: the SFT stage checks every conversation in one place (tokenizer/chat.py's
check_conversation) and counts what it skips. A source does stop, naming the file and row, on what
makes the whole input unusable: a file that is not JSON lines or parquet, a missing messages column.

- python-docs: generated from the embedded corpus (python_docs_chat.py), offline and deterministic.
- local: `.jsonl`/`.json` (one JSON object per line) or `.parquet` files with a messages column
  (`[sft] messages_field`, default "messages": a list of {"role", "content"}). Read with the standard
  library and pyarrow, one row group at a time.
- hf: a hub dataset streamed with `datasets` (e.g. HuggingFaceTB/smol-smoltalk, nanochat's SFT mix).
  Kept thin: open the stream, yield rows. A local directory laid out like a hub repository streams
  through the same call, which is how the tests exercise it offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.sources.records import SourceError, expand_file_patterns

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class ConversationRecord:
    messages: Any          # should be a list of {role, content}; checked by the SFT stage
    id: str
    where: str             # "data/chat.jsonl line 12": names the row in messages


def iter_records(sft) -> Iterator[ConversationRecord]:
    """The records of the [sft] section's source, in order (`sft` is a train.sft_config.SftSection)."""
    if sft.source == "python-docs":
        from pipelines.sources import python_docs_chat

        for i, conv in enumerate(python_docs_chat.iter_conversations()):
            yield ConversationRecord(conv.messages, conv.id, f"python-docs conversation {i} ({conv.id})")
    elif sft.source == "local":
        for path in resolve_paths(sft.paths):
            yield from iter_local_file(path, sft.messages_field, sft.id_field)
    else:
        yield from iter_hub(sft.dataset, sft.config, sft.split, sft.messages_field, sft.id_field)


def input_fingerprint(sft) -> dict[str, Any]:
    """What the conversations are made from: a change means the SFT data is rebuilt."""
    if sft.source == "python-docs":
        from pipelines.sources import python_docs_chat

        return {"source": sft.source, **python_docs_chat.fingerprint()}
    if sft.source == "local":
        return {"source": sft.source, "files": [{"path": str(p), "bytes": p.stat().st_size,
                                                  "mtime_ns": p.stat().st_mtime_ns} for p in resolve_paths(sft.paths)]}
    return {"source": sft.source, "dataset": sft.dataset, "config": sft.config, "split": sft.split}


# ------------------------------------------------------------------------------ local files
def resolve_paths(patterns: list[str]) -> list[Path]:
    unsupported = f": conversations are read from {', '.join(LOCAL_SUFFIXES)} files"
    return list(expand_file_patterns(patterns, "sft", LOCAL_SUFFIXES, unsupported))


def _missing(path: Path, where: str, field: str, columns) -> SourceError:
    return SourceError(f"{path} {where}: missing column {field!r} (columns: {', '.join(map(str, columns))}); "
                       "set [sft] messages_field (or id_field) to the column that holds it")


def iter_local_file(path: Path, messages_field: str, id_field: str) -> Iterator[ConversationRecord]:
    if path.suffix.lower() == ".parquet":
        yield from _iter_parquet(path, messages_field, id_field)
        return
    row = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8", errors="replace"))
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path} line {lineno}: not valid JSON ({exc.msg}); expected one JSON object "
                                  "per line") from None
            if not isinstance(obj, dict):
                raise SourceError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
            for field in (messages_field, id_field):
                if field and field not in obj:
                    raise _missing(path, f"line {lineno}", field, obj)
            rid = str(obj[id_field]) if id_field else f"{path.name}:{row}"
            yield ConversationRecord(obj[messages_field], rid, f"{path} line {lineno}")
            row += 1


def _iter_parquet(path: Path, messages_field: str, id_field: str) -> Iterator[ConversationRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: say which file
        raise SourceError(f"{path}: cannot be read as parquet ({type(exc).__name__}: {exc})") from None
    names = pf.schema_arrow.names
    for field in (messages_field, id_field):
        if field and field not in names:
            raise _missing(path, "", field, names)
    columns = [messages_field] + ([id_field] if id_field else [])
    row = 0
    for group in range(pf.num_row_groups):  # one row group in memory at a time
        table = pf.read_row_group(group, columns=columns)
        ids = table.column(id_field).to_pylist() if id_field else None
        for k, messages in enumerate(table.column(messages_field).to_pylist()):
            rid = str(ids[k]) if ids is not None else f"{path.name}:{row}"
            yield ConversationRecord(messages, rid, f"{path} row {row}")
            row += 1


# ------------------------------------------------------------------------------ the hub
def iter_hub(dataset: str, config: str, split: str, messages_field: str, id_field: str
             ) -> Iterator[ConversationRecord]:
    from pipelines.sources.hf import hub_reachable

    if not Path(dataset).is_dir():
        ok, host = hub_reachable()
        if not ok:
            raise SourceError(f"no network: cannot reach the Hugging Face hub ({host}) to stream {dataset!r}; "
                              "fine-tune on the embedded conversations ([sft] source = \"python-docs\") or on files "
                              "you have ([sft] source = \"local\", paths = [...])")
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset, config or None, split=split, streaming=True)
    except Exception as exc:  # the hub raises many types; the message is what matters
        raise SourceError(f"cannot open hub dataset {dataset!r} config {config!r} split {split!r}: {exc}") from None
    label = Path(dataset).name
    for row_number, row in enumerate(ds):
        for field in (messages_field, id_field):
            if field and field not in row:
                raise _missing(Path(dataset), f"row {row_number}", field, row)
        rid = str(row[id_field]) if id_field else f"{label}:{row_number}"
        yield ConversationRecord(row[messages_field], rid, f"{dataset} row {row_number}")
