"""The `hf` source: a hub dataset streamed through `datasets` (e.g. HuggingFaceFW/fineweb-edu).

Deliberately thin: open a streaming `IterableDataset`, yield its rows, and expose
`state_dict()` so the data stage can resume an interrupted download at the exact row
(`IterableDataset.load_state_dict`) instead of streaming gigabytes again.

Offline, `datasets` would spend minutes in retries before failing, so we probe the hub first and
fail fast with a message that says what to do instead. A `dataset` that is a local directory laid
out like a hub repository (parquet files inside) is streamed without the probe: that is how the
tests exercise this exact code path offline.

Memory: within one parquet file Arrow reads ahead as fast as the network delivers. Local files
are read a row group at a time for that reason (local.py); a hub stream is not, because that
would reopen the remote file for every row group. When the stage, not the network, is the
bottleneck, download the files and use `source = "local"`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.sources.records import SourceError, SourceRecord

OFFLINE_HELP = (
    "no network: cannot reach the Hugging Face hub ({host}) to stream {dataset!r}.\n"
    "  - the offline default recipe runs on the embedded corpus: make shards CONFIG=configs/demo.toml\n"
    "  - or point a recipe at files you already have: [data] source = \"local\", paths = [\"data/*.parquet\"]"
)


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in (
        "",
        "0",
    ):
        return False, host
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True, host
    except OSError:
        return False, host


class HubStream:
    """Iterate a hub dataset's rows as SourceRecords; `state()` is the resume point after the last one."""

    def __init__(self, dataset: str, config: str, split: str, text_field: str, id_field: str,
                 metadata_fields: list[str], resume_state: dict | None = None, skip_rows: int = 0):
        if not dataset:
            raise SourceError("source 'hf' needs [data] dataset = \"owner/name\" (e.g. HuggingFaceFW/fineweb-edu)")
        self.label = dataset
        self.text_field, self.id_field, self.metadata_fields = text_field, id_field, metadata_fields
        if not Path(dataset).is_dir():
            ok, host = hub_reachable()
            if not ok:
                raise SourceError(OFFLINE_HELP.format(host=host, dataset=dataset))
        from datasets import load_dataset

        try:
            self.ds = load_dataset(dataset, config or None, split=split, streaming=True)
        except Exception as exc:  # the hub raises many types; the message is what matters
            raise SourceError(f"cannot open hub dataset {dataset!r} config {config!r} split {split!r}: {exc}") from None
        if resume_state is not None:
            self.ds.load_state_dict(resume_state)   # exact row, no re-download of finished shards
        elif skip_rows:
            self.ds = self.ds.skip(skip_rows)
        self.row = skip_rows

    def state(self) -> dict[str, Any]:
        return self.ds.state_dict()

    def __iter__(self) -> Iterator[SourceRecord]:
        checked = False
        for row in self.ds:
            if not checked:
                wanted = [self.text_field] + ([self.id_field] if self.id_field else []) + list(self.metadata_fields)
                missing = [f for f in wanted if f not in row]
                if missing:
                    raise SourceError(
                        f"{self.label}: missing column {missing[0]!r} (columns: {', '.join(map(str, row))})"
                    )
                checked = True
            yield SourceRecord(
                text=row.get(self.text_field),
                id=row.get(self.id_field) if self.id_field else f"{Path(self.label).name}:{self.row}",
                where=f"{self.label} row {self.row}",
                metadata={k: row.get(k) for k in self.metadata_fields},
            )
            self.row += 1
