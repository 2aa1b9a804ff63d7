"""`make inspect` / `python -m pipelines.inspect PATH`: look inside token shards before training on them.

PATH is a shard directory, its manifest.json, or one shard file (then only that shard is shown).
With `--config` instead, the recipe's shard directory is used. Shows:
  - a summary table per split: shards, tokens, documents, dtype, tokenizer, UTF-8 bytes per token;
  - checksum verification (sha256 of every file against the manifest; --no-verify skips it);
  - a few decoded documents (--doc ID, or --docs N at random with --seed);
  - the most frequent tokens;
  - a PNG histogram of document lengths in tokens (--plot FILE; matplotlib's Agg backend, no display).
`--json` prints the same facts as one JSON object for scripts. Everything is read through
contract.shard_format.ShardReader, the same reader training uses, so what inspect shows is what
training gets. Exit status: 0, 1 when a checksum does not match, 2 for shards that cannot be used
(one `error:` line: a broken manifest, a corrupt tokenizer file, a bad option; pipelines/stage_cli.py).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import MANIFEST
from contract.shard_format import ShardFormatError, ShardReader, damaged_files, shard_files
from contract.shard_stats import document_lengths, log_bins, token_counts
from pipelines.stage_cli import add_common_flags, command_parser, non_negative_int, run_reported
from tokenizer.atomic_write import atomic_path

BYTES_SAMPLE_TOKENS = 1_000_000   # bytes/token is measured on (up to) this many tokens per split


def open_reader(path: Path) -> tuple[ShardReader, str | None]:
    """(reader, the one shard file to restrict to or None)."""
    if path.is_file() and path.name != MANIFEST:
        return ShardReader(path.parent), path.name
    return ShardReader(path), None


def selected_shards(reader: ShardReader, only: str | None) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for split in reader.splits:
        entries = [e for e in reader.shards(split) if only is None or only in (e["path"], e.get("index"))]
        if entries:
            out[split] = entries
    if only is not None and not out:
        raise ShardFormatError(f"{only} is not a shard listed in {reader.manifest_path}")
    return out


def bytes_per_token(tok, reader: ShardReader, entries: list[dict[str, Any]]) -> tuple[float, int]:
    """UTF-8 bytes per (non-eot) token on the first BYTES_SAMPLE_TOKENS tokens of the split."""
    sample, left = [], BYTES_SAMPLE_TOKENS
    for entry in entries:
        if left <= 0:
            break
        t = reader.shard_tokens(entry)[:left]
        sample.append(t[t != reader.eot_id])
        left -= len(t)
    ids = np.concatenate(sample) if sample else np.zeros(0, np.int64)
    n_bytes = len(tok.decode_bytes(ids.tolist()))
    return n_bytes / max(1, len(ids)), int(len(ids))


def find_documents(reader: ShardReader, split: str, wanted: set[str] | None, n_random: int,
                   seed: int) -> list[tuple[str, np.ndarray]]:
    docs = []
    if wanted:
        for split_name in reader.splits:
            for doc_id, tokens in reader.iter_documents(split_name):
                if doc_id in wanted:
                    docs.append((doc_id, tokens))
        missing = wanted - {d for d, _ in docs}
        if missing:
            raise ShardFormatError(f"document id(s) not found in {reader.root}: {', '.join(sorted(missing))}")
        return docs
    n_docs = reader.num_documents(split)
    picks = set(random.Random(seed).sample(range(n_docs), min(n_random, n_docs)))
    for i, (doc_id, tokens) in enumerate(reader.iter_documents(split)):
        if i in picks:
            docs.append((doc_id, tokens))
            if len(docs) == len(picks):
                break
    return docs


def histogram_figure(lengths_by_split: dict[str, np.ndarray], title: str):
    """Document lengths per split, each normalised so its bars sum to 1 (the share of the split's documents
    in each bin): the val split is some 100 documents beside thousands of train ones, and on a count axis it
    would be a flat line at the bottom; normalised, the two shapes can be compared, which is the question
    (does val look like train?). The bins are equally wide on the log axis, so this is a density over log
    length: matplotlib's density=True would divide by the bins' linear widths and flatten every long
    document into the axis. The counts stay in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = log_bins(list(lengths_by_split.values()))   # the bins the service's shard browser draws too
    for split, lengths in lengths_by_split.items():
        if len(lengths):
            ax.hist(lengths, bins=bins, weights=np.full(len(lengths), 1 / len(lengths)), alpha=0.55,
                    histtype="stepfilled", label=f"{split} ({len(lengths):,} docs)")
    ax.set_xscale("log")
    ax.set_xlabel("document length (tokens, incl. eot)")
    ax.set_ylabel("share of the split's documents")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_histogram(lengths_by_split: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = histogram_figure(lengths_by_split, title)
    with atomic_path(path, durable=False) as tmp:
        fig.savefig(tmp, dpi=100, format="png")  # the format by name: the temporary file ends in .tmp
    plt.close(fig)


def collect(reader: ShardReader, only: str | None, verify: bool, doc_ids: set[str] | None, n_docs: int,
            seed: int, top: int, plot: Path | None) -> dict[str, Any]:
    """Every fact inspect reports, as plain data (the --json output)."""
    tok = reader.load_tokenizer(required=False)  # without it: statistics only, no decoded text
    shards = selected_shards(reader, only)
    facts: dict[str, Any] = {
        "path": str(reader.root), "format": reader.format, "format_version": reader.manifest["format_version"],
        "dtype": reader.dtype.name, "vocab_size": reader.vocab_size, "eot_id": reader.eot_id,
        "tokenizer": {"name": reader.manifest["tokenizer"].get("name"), "fingerprint": reader.tokenizer_fingerprint,
                      "path": str(reader.tokenizer_path) if reader.tokenizer_path else None,
                      "available": tok is not None},
        "splits": {}, "checksums": None, "documents": [], "top_tokens": [], "histogram": None,
    }
    if verify:  # every damaged file is listed, not just the first
        entries = [e for split_entries in shards.values() for e in split_entries]
        bad = [rel for e in entries for rel in damaged_files(reader.root, e)]
        checked = sum(len(shard_files(e)) for e in entries)
        facts["checksums"] = {"files": checked, "ok": not bad, "mismatched": bad}
        if bad:   # what damaged shards hold is noise (ids outside the vocabulary, cut documents): stop here
            return facts
    counts = np.zeros(reader.vocab_size, dtype=np.int64)
    lengths_by_split = {}
    for split, entries in shards.items():
        lengths = document_lengths(reader, entries)
        lengths_by_split[split] = lengths
        counts += token_counts(reader, entries)[0]
        info = {
            "shards": len(entries),
            "tokens": int(sum(e["tokens"] for e in entries)),
            "documents": int(sum(e["documents"] for e in entries)),
            "mean_doc_tokens": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            "max_doc_tokens": int(lengths.max()) if len(lengths) else 0,
        }
        if tok is not None:
            bpt, sample = bytes_per_token(tok, reader, entries)
            info["bytes_per_token"], info["bytes_per_token_sample"] = round(bpt, 3), sample
        facts["splits"][split] = info
    for ident in np.argsort(-counts, kind="stable")[:top]:
        if counts[ident] == 0:
            break
        facts["top_tokens"].append({"id": int(ident), "count": int(counts[ident]),
                                    "text": tok.decode([int(ident)]) if tok is not None else None})
    if doc_ids or n_docs:
        split = "train" if "train" in shards else next(iter(shards))
        for doc_id, tokens in find_documents(reader, split, doc_ids, n_docs, seed):
            facts["documents"].append({"id": doc_id, "tokens": int(len(tokens)),
                                       "text": tok.decode(tokens[1:].tolist()) if tok is not None else None})
    if plot is not None and any(len(v) for v in lengths_by_split.values()):
        plot_histogram(lengths_by_split, plot, f"{reader.root.parent.name}: document lengths")
        facts["histogram"] = str(plot)
    return facts


def render(facts: dict[str, Any], max_chars: int) -> str:
    lines = [f"shards: {facts['path']}  (format {facts['format']} v{facts['format_version']}, "
             f"dtype {facts['dtype']}, vocab {facts['vocab_size']:,}, eot {facts['eot_id']})",
             f"tokenizer: {facts['tokenizer']['name']}  fingerprint {facts['tokenizer']['fingerprint'][:16]}"
             + ("" if facts["tokenizer"]["available"] else "  (file not found: no decoding)"), ""]
    header = ["split", "shards", "tokens", "documents", "tokens/doc", "max doc", "bytes/token"]
    rows = [[split, f"{s['shards']:,}", f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['mean_doc_tokens']:,}",
             f"{s['max_doc_tokens']:,}", str(s.get("bytes_per_token", "-"))] for split, s in facts["splits"].items()]
    if rows:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for r in [header, *rows]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        lines.append("")
    if facts["checksums"] is not None:
        c = facts["checksums"]
        lines.append(f"checksums: {c['files']} files, " + ("all sha256 match the manifest" if c["ok"]
                     else f"MISMATCH in {', '.join(c['mismatched'])} (`make shards VERIFY=1` re-encodes "
                          "damaged shards)"))
    if facts["top_tokens"]:
        lines.append("most frequent tokens: " + ", ".join(
            f"{t['id']} {t['text']!r} ({t['count']:,})" for t in facts["top_tokens"]))
    for d in facts["documents"]:
        text = d["text"] if d["text"] is not None else "(no tokenizer)"
        cut = text[:max_chars] + (f" [... {len(text) - max_chars:,} more characters]" if len(text) > max_chars else "")
        lines += ["", f"--- document {d['id']} ({d['tokens']:,} tokens) ---", cut]
    if facts["histogram"]:
        lines += ["", f"histogram of document lengths: {facts['histogram']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.inspect",
                            "Inspect token shards (a shard directory or a single shard).")
    parser.add_argument("path", nargs="?", help="shard directory, manifest.json or one shard file")
    parser.add_argument("--config", help="use the shard directory of this recipe instead of PATH")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (with --config), e.g. --set shards.format=arrow")
    parser.add_argument("--doc", action="append", default=[], help="decode this document id (repeatable)")
    parser.add_argument("--docs", type=non_negative_int, default=2, help="decode N random documents (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="which random documents --docs picks")
    parser.add_argument("--top", type=non_negative_int, default=15, help="most frequent tokens to list")
    parser.add_argument("--chars", type=non_negative_int, default=600,
                        help="characters of each decoded document to print")
    parser.add_argument("--plot", type=Path, help="write the document length histogram (PNG) here")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 verification")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if not args.config and not args.path:
        parser.error("give a shard PATH or --config")
    status = {"checksums_ok": True}

    def body() -> None:
        plot = args.plot
        if args.config:
            from contract.recipe import load_recipe, parse_overrides

            recipe = load_recipe(args.config, parse_overrides(args.set))
            path = recipe.stage_dir("shards")
            plot = plot or recipe.artifacts_dir / "inspect" / "doc_lengths.png"
        else:
            path = Path(args.path)
        reader, only = open_reader(path)
        facts = collect(reader, only, not args.no_verify, set(args.doc) or None, 0 if args.doc else args.docs,
                        args.seed, args.top, plot)
        print(json.dumps(facts, indent=2, ensure_ascii=False) if args.json else render(facts, args.chars))
        status["checksums_ok"] = facts["checksums"] is None or facts["checksums"]["ok"]

    rc = run_reported(body, (ShardFormatError,), debug=args.debug)
    return rc if rc else (0 if status["checksums_ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
