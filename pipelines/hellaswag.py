"""`make hellaswag`: download HellaSwag's validation split (10,042 examples) to score checkpoints with.

    python -m pipelines.hellaswag [DEST]         (default artifacts/hellaswag/hellaswag_val.jsonl)

A file already at DEST is kept as it is. Scoring is `make eval` / `python -m pipelines.evaluate --hellaswag
DEST`, or during training with eval.hellaswag = DEST. The download itself is train/hellaswag.py; this is its
command, with every stage's error policy (pipelines/stage_cli.py): no network, a proxy that refuses, a
server error or a file that is not HellaSwag is one `error:` line and status 2, not a traceback.
"""

from __future__ import annotations

import sys

from pipelines.stage_cli import add_common_flags, command_parser, run_reported

DEFAULT_DEST = "artifacts/hellaswag/hellaswag_val.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.hellaswag", __doc__.split("\n")[0])
    parser.add_argument("dest", nargs="?", default=DEFAULT_DEST, help="where to save the jsonl (default: %(default)s)")
    parser.add_argument("--url", help="where to download it from (default: the official file on GitHub)")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        from train.hellaswag import VAL_URL, download, load_examples  # torch: only when it is needed

        path = download(args.dest, args.url or VAL_URL)
        print(f"HellaSwag validation: {path} ({len(load_examples(path)):,} examples)")

    # HellaSwagDownloadError and a malformed file are ValueErrors
    return run_reported(body, (ValueError,), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
