"""Files from the Hugging Face hub, the way every huggingface_hub user gets them: through its cache.

`hub_snapshot("openai-community/gpt2", patterns)` is `huggingface_hub.snapshot_download`: the first call
downloads into the HF cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE / $HF_HOME), every later one reads
the cache, and with HF_HUB_OFFLINE=1 nothing but the cache is looked at. HF_ENDPOINT, HTTPS_PROXY and a
token from `hf auth login` are honoured because huggingface_hub itself makes the requests.

What this module adds is the failure: huggingface_hub raises one of several exceptions with a paragraph
of text, and a user needs one line saying what was wanted, why it could not be had, and what to do.
`HubUnavailableError` is a FileNotFoundError (the files are not here), so every command of the project
reports it as one `error:` line.

Part of the tokenizer package (floor 0) because GPT-2's vocabulary files come from the hub too; it
imports nothing else of the project, and huggingface_hub only when a download is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

# GPT-2's short names: the hub redirects them to openai-community/, but the cache keeps one folder per
# name, so a model downloaded as one name would not be found offline under the other.
GPT2_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}


class HubUnavailableError(FileNotFoundError):
    """Files wanted from the hub are neither in the HF cache nor downloadable now; the message says why."""


def canonical_repo(repo_id: str) -> str:
    return GPT2_REPOS.get(repo_id, repo_id)


def looks_like_repo_id(text: str) -> bool:
    """"gpt2" or "owner/name": one or two parts of letters, digits, `-`, `_`, `.`, and not a relative path."""
    parts = text.split("/")
    return (0 < len(parts) <= 2 and all(parts) and not text.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for part in parts for c in part))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def hub_snapshot(repo_id: str, allow_patterns: list[str], what: str) -> Path:
    """The local folder of `repo_id`'s files matching `allow_patterns` (downloaded on first use).

    `what` says what the files are for, in the error message ("GPT-2 weights", "GPT-2's vocabulary")."""
    repo_id = canonical_repo(repo_id)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HubUnavailableError(f"{what} from the hub ({repo_id}) need the huggingface_hub package: "
                                  "pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as exc:  # huggingface_hub raises many types; they are told apart in _explain
        raise HubUnavailableError(_explain(exc, repo_id, what)) from exc


def _explain(exc: Exception, repo_id: str, what: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = constants.HF_HUB_CACHE
    local = "or give a local directory instead of a hub id"
    if isinstance(exc, GatedRepoError):
        return f"{repo_id} on the hub is gated: accept its terms on the hub and run `hf auth login` ({what})"
    if isinstance(exc, RepositoryNotFoundError):
        return (f"no repository {repo_id!r} on the hub {constants.ENDPOINT} (or it is private: `hf auth login`); "
                f"{what} could not be had")
    if offline():
        return (f"{what}: {repo_id} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
                f"downloading it: run once with network (e.g. `hf download {repo_id}`), {local}")
    if isinstance(exc, LocalEntryNotFoundError) or isinstance(exc, OSError) or "Connect" in type(exc).__name__:
        cause = _root_cause(exc)
        return (f"{what}: cannot reach the Hugging Face hub ({constants.ENDPOINT}) to download {repo_id}, and it "
                f"is not in the cache ({cache}): {cause}. Run once with network (then HF_HUB_OFFLINE=1 works), "
                f"check HTTPS_PROXY / HF_ENDPOINT, {local}")
    return f"{what}: cannot download {repo_id} from the hub: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's first line: `ConnectError: [Errno 111] Connection refused`, not the
    paragraph huggingface_hub wraps it in."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
    return f"{type(seen).__name__}: {_first_line(seen)}"
