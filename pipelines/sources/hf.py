"""The `hf` source: a hub dataset streamed through `datasets` (e.g. HuggingFaceFW/fineweb-edu).

Deliberately thin: open a streaming `IterableDataset`, yield its rows, and expose
`state_dict()` so the data stage can resume an interrupted download at the exact row
(`IterableDataset.load_state_dict`) instead of streaming gigabytes again.

Offline, `datasets` would spend minutes in retries before failing, so we ask the hub about the
dataset first and fail fast with a message that says what to do instead. The question goes through
huggingface_hub's own request path (`HfApi.dataset_info`), the one `datasets` uses next: HF_ENDPOINT
(a mirror), HTTPS_PROXY / NO_PROXY, HF_HUB_OFFLINE and a token from `hf auth login` count exactly as they
will for the download, and a dataset name that does not exist is said at once. A `dataset` that is a
local directory laid out like a hub repository (parquet files inside) is streamed without the probe:
that is how the tests exercise this exact code path offline.

Memory: within one parquet file Arrow reads ahead as fast as the network delivers. Local files
are read a row group at a time for that reason (local.py); a hub stream is not, because that
would reopen the remote file for every row group. When the stage, not the network, is the
bottleneck, download the files and use `source = "local"`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.sources.records import SourceError, SourceRecord

OFFLINE_HELP = (   # one line, like every stage error: what failed, why, and the two ways to work offline
    "no network: cannot reach the Hugging Face hub ({host}) to stream {dataset!r} ({cause}); offline, use the "
    "embedded corpus (make shards CONFIG=configs/demo.toml) or files you have ([data] source = \"local\", "
    "paths = [\"data/*.parquet\"])"
)
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _offline_variable() -> str | None:
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off"):
            return name
    return None


def hub_problem(dataset: str | None = None, timeout: float = 10.0) -> tuple[str, str] | None:
    """None when the hub answers (about `dataset`, when given), else (host, why not).

    Asked through huggingface_hub, so the endpoint, the proxy settings and the token are the ones the
    download will use. A refusal about the dataset itself (no such dataset, gated) is a SourceError."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from huggingface_hub.utils import get_session

    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    variable = _offline_variable()
    if variable:
        return host, f"{variable}=1 is set"
    try:
        if dataset:
            HfApi().dataset_info(dataset, timeout=timeout)
        else:
            get_session().head(constants.ENDPOINT, timeout=timeout)
    except GatedRepoError:
        raise SourceError(f"hub dataset {dataset!r} is gated: accept its terms on {constants.ENDPOINT} and run "
                          "`hf auth login`") from None
    except RepositoryNotFoundError:
        raise SourceError(f"no dataset {dataset!r} on the hub {constants.ENDPOINT} (a typo in [data] dataset? a "
                          "private dataset needs `hf auth login`)") from None
    except Exception as exc:  # httpx/OSError for the network, HfHubHTTPError for a server error
        text = str(exc).strip().strip("'\"")
        return host, f"{type(exc).__name__}: {text.splitlines()[0] if text else repr(exc)}"
    return None


def hub_reachable(timeout: float = 10.0) -> tuple[bool, str]:
    """(whether the hub answers, its host): hub_problem without the reason, for callers that only ask that."""
    problem = hub_problem(timeout=timeout)
    if problem is None:
        from huggingface_hub import constants

        return True, urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    return False, problem[0]


class HubStream:
    """Iterate a hub dataset's rows as SourceRecords; `state()` is the resume point after the last one."""

    def __init__(self, dataset: str, config: str, split: str, text_field: str, id_field: str,
                 metadata_fields: list[str], resume_state: dict | None = None, skip_rows: int = 0):
        if not dataset:
            raise SourceError("source 'hf' needs [data] dataset = \"owner/name\" (e.g. HuggingFaceFW/fineweb-edu)")
        self.label = dataset
        self.text_field, self.id_field, self.metadata_fields = text_field, id_field, metadata_fields
        if not Path(dataset).is_dir():
            problem = hub_problem(dataset)
            if problem is not None:
                raise SourceError(OFFLINE_HELP.format(host=problem[0], dataset=dataset, cause=problem[1]))
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
