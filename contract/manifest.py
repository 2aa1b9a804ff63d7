"""Manifests: how each stage records what it made, from what, and decides whether to run again.

Every stage directory (artifacts/<recipe>/{raw,tokenizer,shards}) ends with a `manifest.json`:

    {"stage": ..., "config": <the recipe section used>, "inputs": <fingerprints of what was read>,
     "outputs": [{"path", "bytes", "sha256"}, ...], ...stage facts..., "manifest_sha256": ...}

The manifest is written LAST, atomically (temporary name + os.replace), so its presence means the
stage finished: a killed stage leaves no manifest and no output that looks complete. Manifests hold
no timestamps, so rerunning a deterministic stage reproduces them byte for byte.

Read as a schema. A manifest is read by code in other stages, other processes, other versions; a
missing key or a value of the wrong type must not surface as a KeyError three calls later. Every
reader states the keys it relies on as a small declarative schema (`OUTPUT`, `STAGE_MANIFEST`,
`TOKENIZER_MANIFEST` here, `RAW_MANIFEST` in raw.py, the shard format's in shard_format.py) and
`check_schema` checks it in one place, raising ManifestError with the file and the key:

    artifacts/demo/tokenizer/manifest.json: key 'tokenizer.n_vocab' is missing; `make tokenizer` rebuilds it

Its own checksum. `manifest_sha256` is the fingerprint of every other key, so an edited or damaged
value (a changed digit still parses, still has the right type) is caught by every reader too.
Manifests written before the key existed have none and are accepted as they are.

Up to date means intact, at a cost that stays small. `is_up_to_date` says a stage can be skipped
when its manifest is valid, its config and inputs equal the current ones and every output is what
the manifest says. Sizes are checked always. sha256 (about 0.75-0.95 GB/s on one core from the
page cache, ~0.25 GB/s from a cold disk) is computed for every output up to FULL_HASH_BYTES on
every check: tokenizer files, shard indexes, all of the demo's files, a few ms in all. A bigger
output is hashed when its stat stamp (size, mtime, ctime, inode) differs from the one recorded when
its sha256 was last confirmed: any write to the file changes its ctime, which user space cannot set
back (`touch` can only set mtime), so this catches every change made through the file system,
and 20 GB of untouched shards cost a few hundred stat() calls instead of ~25 s of hashing. What
it cannot see is a change that bypasses the file system (bit rot on the disk):
`full_verification()` (`make <stage> VERIFY=1`) hashes every output regardless, as `make inspect`
does for shards. The stamps live beside the stage directory
(`.<dir>.verified.json`, like its lock), so they never show up among the outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizer.atomic_write import write_json_atomic

MANIFEST = "manifest.json"
CHECKSUM_KEY = "manifest_sha256"
FULL_HASH_BYTES = 16 << 20   # outputs up to this size are hashed on every up-to-date check
# The make target that (re)builds each stage directory: the remedy error messages suggest.
MAKE_TARGETS = {"raw": "make data", "tokenizer": "make tokenizer", "shards": "make shards"}


class ManifestError(ValueError):
    """A manifest (or another stage record) that is present but not what the contract says: names file and key."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of obj: equal configs give equal fingerprints."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def rebuild_hint(stage_dir: str | os.PathLike) -> str:
    """What rebuilds a stage directory: its stage's make target, which notices a broken manifest or output."""
    target = MAKE_TARGETS.get(Path(stage_dir).name)
    return f"`{target}` rebuilds it" if target else "rebuild it with the stage that wrote it"


# ------------------------------------------------------------------------------------------ schemas
# A schema is plain data:
#   int, float, str, bool, dict, list  a JSON value of that type (an int is never a bool; float accepts ints)
#   None                               JSON null
#   (spec, spec, ...)                  any one of these
#   {"key": spec, ...}                 an object with at least these keys (more are allowed: later stages
#                                      and later versions add facts, and readers only state what they use)
#   MayOmit(spec)                      (as a value in such a dict) the key may be absent
#   EachValue(spec)                    an object with any keys, each value matching spec (splits by name)
#   [spec]                             a list whose items all match spec
@dataclass(frozen=True)
class MayOmit:
    spec: Any


@dataclass(frozen=True)
class EachValue:
    spec: Any


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
               list: "a list", None: "null"}


def _describe_spec(spec: Any) -> str:
    if isinstance(spec, tuple):
        return " or ".join(_describe_spec(s) for s in spec)
    if isinstance(spec, (dict, EachValue)):
        return "an object"
    if isinstance(spec, list):
        return "a list"
    return _TYPE_NAMES[spec]


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    text = json.dumps(value, ensure_ascii=False)
    return f"{kind.get(type(value), type(value).__name__)} {text[:40] + '...' if len(text) > 40 else text}"


def _same_kind(value: Any, spec: Any) -> bool:
    """Whether value is at least the right kind of JSON value for spec (its insides may still be wrong)."""
    if isinstance(spec, (dict, EachValue)):
        return isinstance(value, dict)
    if isinstance(spec, list):
        return isinstance(value, list)
    return not isinstance(spec, tuple) and _is_a(value, spec)


def _is_a(value: Any, kind: Any) -> bool:
    if kind is None:
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_schema(value: Any, spec: Any, *, file: str | os.PathLike, key: str = "") -> None:
    """Raise ManifestError naming `file` and the dotted key when `value` does not match `spec`."""

    def fail(problem: str) -> ManifestError:
        where = f"key {key!r}" if key else "the top level"
        return ManifestError(f"{file}: {where} {problem}")

    if isinstance(spec, MayOmit):
        spec = spec.spec
    if isinstance(spec, tuple):
        errors = []
        for alternative in spec:
            try:
                check_schema(value, alternative, file=file, key=key)
                return
            except ManifestError as exc:
                errors.append((alternative, exc))
        for alternative, exc in errors:   # an object of the right kind with a wrong part: name that part
            if _same_kind(value, alternative):
                raise exc
        raise fail(f"must be {_describe_spec(spec)}, got {_describe_value(value)}")
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise fail(f"must be an object, got {_describe_value(value)}")
        for name, sub in spec.items():
            path = f"{key}.{name}" if key else name
            if name in value:
                check_schema(value[name], sub, file=file, key=path)
            elif not isinstance(sub, MayOmit):
                raise ManifestError(f"{file}: key {path!r} is missing")
    elif isinstance(spec, EachValue):
        if not isinstance(value, dict):
            raise fail(f"must be an object, got {_describe_value(value)}")
        for name, item in value.items():
            check_schema(item, spec.spec, file=file, key=f"{key}.{name}" if key else name)
    elif isinstance(spec, list):
        (item_spec,) = spec
        if not isinstance(value, list):
            raise fail(f"must be a list, got {_describe_value(value)}")
        for i, item in enumerate(value):
            check_schema(item, item_spec, file=file, key=f"{key}[{i}]")
    elif not _is_a(value, spec):
        raise fail(f"must be {_describe_spec(spec)}, got {_describe_value(value)}")


OUTPUT = {"path": str, "bytes": int, "sha256": str}
# What every stage's manifest holds, and what the up-to-date check reads.
STAGE_MANIFEST = {"stage": str, "config": dict, "inputs": dict, "outputs": [OUTPUT],
                  CHECKSUM_KEY: MayOmit(str)}
# tokenizer/manifest.json as the stages after it read it: the tokenizer's identity.
TOKENIZER_MANIFEST = {
    **STAGE_MANIFEST,
    "tokenizer": {"fingerprint": str, "name": str, "n_vocab": int, "eot_id": (int, None),
                  "special_tokens": EachValue(int), "file": str},
}


# ------------------------------------------------------------------------------ writing and reading
def with_checksum(manifest: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: fingerprint(body)}


def check_manifest(manifest: Any, schema: Any, file: str | os.PathLike, remedy: str = "") -> dict[str, Any]:
    """The schema, then the checksum; errors end with `remedy` (what to run to fix it)."""
    try:
        check_schema(manifest, schema, file=file)
        if CHECKSUM_KEY in manifest:
            if not isinstance(manifest[CHECKSUM_KEY], str):
                raise ManifestError(f"{file}: key {CHECKSUM_KEY!r} must be a string")
            if with_checksum(manifest)[CHECKSUM_KEY] != manifest[CHECKSUM_KEY]:
                raise ManifestError(f"{file}: its content does not match its {CHECKSUM_KEY} "
                                    "(edited or damaged after the stage wrote it)")
    except ManifestError as exc:
        raise ManifestError(f"{exc}; {remedy}" if remedy else str(exc)) from None
    return manifest


def parse_manifest(data: bytes, file: str | os.PathLike, schema: Any, remedy: str = "") -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:   # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise ManifestError(f"{file}: not valid JSON ({exc})" + (f"; {remedy}" if remedy else "")) from None
    return check_manifest(manifest, schema, file, remedy)


def write_manifest(stage_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Publish a stage's manifest.json: call it LAST, when every output it lists is in place.

    The stage has just computed the sha256 of each output from the file itself, so the stamps of the
    big ones are recorded as confirmed: the next up-to-date check does not hash them again."""
    path = write_json_atomic(Path(stage_dir) / MANIFEST, with_checksum(manifest))
    outputs = manifest.get("outputs")
    if isinstance(outputs, list):
        stamps = _Stamps(Path(stage_dir))
        for out in outputs:
            try:
                stamps.confirm(out, (Path(stage_dir) / out["path"]).stat())
            except (OSError, KeyError, TypeError):
                continue   # the stamps only save time; the next check simply hashes this file
        stamps.save()
    return path


def read_json(path: str | os.PathLike, schema: Any = None) -> Any:
    """A JSON file; with `schema`, checked against it (ManifestError names the file and the key)."""
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    if schema is not None:
        check_schema(value, schema, file=path)
    return value


def output_entry(path: Path, root: Path) -> dict[str, Any]:
    """{"path": relative to the stage directory, "bytes", "sha256"} for one output file."""
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(stage_dir: str | os.PathLike, schema: Any = STAGE_MANIFEST,
                  remedy: str | None = None) -> dict[str, Any] | None:
    """The stage's manifest checked against `schema`, or None when there is none (the stage has not finished).

    A manifest that is present but unreadable, incomplete or edited raises ManifestError naming the
    file and the key, ending with `remedy` (by default: the make target that rebuilds the directory)."""
    path = Path(stage_dir) / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_manifest(data, path, schema, rebuild_hint(stage_dir) if remedy is None else remedy)


def manifest_fingerprint(stage_dir: str | os.PathLike, schema: Any = STAGE_MANIFEST) -> str:
    """The input fingerprint a downstream stage records: sha256 of this stage's manifest file, which
    must be valid: a stage never builds on a manifest its producer would not accept."""
    path = Path(stage_dir) / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        target = MAKE_TARGETS.get(Path(stage_dir).name, "the stage that makes it")
        raise FileNotFoundError(f"{path} is missing: run `{target}` first") from None
    parse_manifest(data, path, schema, rebuild_hint(stage_dir))
    return hashlib.sha256(data).hexdigest()


def remove_manifest(stage_dir: str | os.PathLike) -> None:
    """Called before a stage starts writing, so outputs in progress never sit next to an old manifest."""
    try:
        os.remove(Path(stage_dir) / MANIFEST)
    except FileNotFoundError:
        pass


def remove_leftovers(stage_dir: str | os.PathLike) -> list[Path]:
    """Delete every `*.tmp` file or directory under stage_dir: what a killed writer leaves
    (tokenizer/atomic_write.py writes every file as `<name>.tmp` first). Never trusted, always rewritten."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    removed = []
    for p in sorted(stage_dir.rglob("*.tmp")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# --------------------------------------------------------------------------------- output integrity
_full_verification: ContextVar[bool] = ContextVar("full_verification", default=False)


@contextmanager
def full_verification(enabled: bool = True) -> Iterator[None]:
    """Within the block, up-to-date checks hash every output, trusting no stamp (`--verify`, VERIFY=1)."""
    token = _full_verification.set(enabled)
    try:
        yield
    finally:
        _full_verification.reset(token)


def _stamp(st: os.stat_result) -> list[int]:
    # ctime changes on every write and cannot be set back from user space (mtime can: touch -d).
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _Stamps:
    """Stat stamps of big outputs whose sha256 matched the manifest, kept beside the stage directory."""

    def __init__(self, stage_dir: Path):
        self.path = stage_dir.parent / f".{stage_dir.name}.verified.json"
        self.changed = False
        try:
            files = json.loads(self.path.read_text(encoding="utf-8"))["files"]
            self.files: dict[str, Any] = files if isinstance(files, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.files = {}   # absent or unreadable: only costs a hash

    def vouches_for(self, out: dict[str, Any], st: os.stat_result) -> bool:
        return self.files.get(out["path"]) == [out["sha256"], *_stamp(st)]

    def confirm(self, out: dict[str, Any], st: os.stat_result) -> None:
        if st.st_size > FULL_HASH_BYTES and not self.vouches_for(out, st):
            self.files[out["path"]] = [out["sha256"], *_stamp(st)]
            self.changed = True

    def save(self) -> None:
        if self.changed:
            try:
                write_json_atomic(self.path, {"files": self.files}, durable=False)
            except OSError:
                pass   # a read-only artifacts directory: the next check hashes again


def file_problem(path: Path, size: int, sha256: str, stamps: _Stamps | None = None,
                 out: dict[str, Any] | None = None) -> str | None:
    """Why the file at `path` is not the recorded one ("missing", a size, "sha256 differs"), or None.

    With `stamps`, a big file whose stat stamp was confirmed before is trusted without hashing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != size:
        return f"{st.st_size} bytes, the manifest says {size}"
    if stamps is not None and out is not None and st.st_size > FULL_HASH_BYTES and stamps.vouches_for(out, st):
        return None
    if sha256_file(path) != sha256:
        return "sha256 differs from the manifest (same size: corrupted in place)"
    if stamps is not None and out is not None:
        stamps.confirm(out, st)
    return None


def damaged_outputs(stage_dir: str | os.PathLike, outputs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(path, problem) for every listed output that is missing or differs from its manifest entry.

    Small outputs are always hashed; big ones when their stamp changed, or always under full_verification()."""
    stage_dir = Path(stage_dir)
    stamps = None if _full_verification.get() else _Stamps(stage_dir)
    damaged = []
    for out in outputs:
        problem = file_problem(stage_dir / out["path"], out["bytes"], out["sha256"], stamps, out)
        if problem:
            damaged.append((out["path"], problem))
    if stamps is not None:
        stamps.save()
    return damaged


@dataclass(frozen=True)
class Freshness:
    """The up-to-date verdict: true when the stage can be skipped, else false with the reason.

    `damaged` tells "the outputs are not what the manifest says" (the stage repairs, and says so),
    `changed` "the settings or inputs differ from the ones the outputs were made with" (the stage says
    what changed, then rebuilds: a silent rebuild would replace, say, arrow shards with npy ones without
    a word), from "there is nothing yet" (the stage just runs)."""

    reason: str = ""
    damaged: bool = False
    changed: bool = False

    def __bool__(self) -> bool:
        return not self.reason


def _short(value: Any) -> str:
    """A value for a one-line message: a plain word as it is (`npy`), anything else as JSON (`""`,
    `["a b"]`), a sha256 by its first 12 digits, and long values cut."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "..."   # a digest or fingerprint: its start identifies it
    plain = isinstance(value, str) and value and not any(c.isspace() or c in "\"'[]{}," for c in value)
    text = value if plain else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key: old -> new` for every value that differs between two JSON objects, nested keys dotted
    (`shards.format: arrow -> npy`); a key only one side has shows as `(absent)` on the other. Changed
    values come first, then new keys, then keys gone: the first items are what a user most likely set."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed, added, removed = [], [], []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                added.append(f"{name}: (absent) -> {_short(new[key])}")
            elif key not in new:
                removed.append(f"{name}: {_short(old[key])} -> (absent)")
            else:
                changed += describe_changes(old[key], new[key], name)
        return changed + added + removed
    if canonical_json(old) == canonical_json(new):
        return []
    return [f"{prefix or 'value'}: {_short(old)} -> {_short(new)}"]


def _changes_text(old: Any, new: Any, prefix: str) -> str:
    changes = describe_changes(old, new, prefix)
    return "; ".join(changes[:4]) + (f" (and {len(changes) - 4} more)" if len(changes) > 4 else "")


def is_up_to_date(stage_dir: str | os.PathLike, config: Any, inputs: Any,
                  schema: Any = STAGE_MANIFEST) -> Freshness:
    """Whether the stage's manifest is valid, matches this config + inputs, and its outputs are intact."""
    stage_dir = Path(stage_dir)
    try:
        # First as any stage manifest: one made with other settings (arrow shards, when npy ones are
        # asked for now) need not have the keys of the current settings' schema, and is not damaged.
        manifest = read_manifest(stage_dir, STAGE_MANIFEST, remedy="")
    except ManifestError as exc:
        problem = str(exc)
        try:   # the stage's own schema names a missing key, which says more than "the checksum differs"
            read_manifest(stage_dir, schema, remedy="")
        except ManifestError as specific:
            problem = str(specific)
        return Freshness(problem, damaged=True)
    if manifest is None:
        return Freshness(f"{stage_dir / MANIFEST} does not exist yet")
    # The recipe section is named after the stage that reads it (data, tokenizer, shards), so the change
    # reads as the key a user sets: `shards.format: arrow -> npy`.
    if canonical_json(manifest["config"]) != canonical_json(config):
        return Freshness(f"the recipe changed ({_changes_text(manifest['config'], config, manifest['stage'])})",
                         changed=True)
    if canonical_json(manifest["inputs"]) != canonical_json(inputs):
        return Freshness(f"its inputs changed ({_changes_text(manifest['inputs'], inputs, '')})", changed=True)
    try:
        check_manifest(manifest, schema, stage_dir / MANIFEST)
    except ManifestError as exc:
        return Freshness(str(exc), damaged=True)
    damaged = damaged_outputs(stage_dir, manifest["outputs"])
    if damaged:
        listed = "; ".join(f"{stage_dir / p}: {problem}" for p, problem in damaged[:3])
        more = f" (and {len(damaged) - 3} more)" if len(damaged) > 3 else ""
        return Freshness(listed + more, damaged=True)
    return Freshness()
