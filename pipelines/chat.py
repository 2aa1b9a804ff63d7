"""`make chat`: talk to the fine-tuned model in the terminal.

    python -m pipelines.chat --config configs/demo.toml                 # interactive: /reset, /quit
    python -m pipelines.chat --prompt "What does json.dumps do?"       # one answer on stdout, then exit

The model is artifacts/<recipe>/sft/ckpt.pt (or --checkpoint) and the tokenizer the one `make sft` saved
beside it; their fingerprints must agree. Replies stream token by token (model/chat_session.py: a KV
cache, so each token costs one position, and each turn only runs its own new tokens) and end at the
assistant's end token. The conversation is kept across turns until /reset; when it outgrows the model's
context, the oldest turns are forgotten (the demo model sees 128 tokens: about two short exchanges).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.stage_cli import add_common_flags, run_reported

HELP = "/reset forgets the conversation, /quit (or Ctrl-D) leaves, Ctrl-C stops a reply"


def load_chat_model(config: str, overrides: list[str], checkpoint: str | None, device: str):
    """(model, tokenizer, checkpoint state) of a fine-tuned run; the tokenizer is the one saved with it."""
    from contract.recipe import load_recipe, parse_overrides
    from pipelines.sft import TOKENIZER_NAME
    from tokenizer import Tokenizer
    from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from train.sft_config import sft_section_from_recipe

    recipe = load_recipe(config, parse_overrides(overrides))
    sft = sft_section_from_recipe(recipe)
    run = Path(checkpoint) if checkpoint else (Path(sft.out_dir) if sft.out_dir else recipe.stage_dir("sft"))
    ckpt = run if run.suffix == ".pt" else run / "ckpt.pt"
    if not ckpt.is_file():
        raise CheckpointError(f"no fine-tuned model at {ckpt}: fine-tune one first (make pretrain, then make sft)")
    state = load_checkpoint(ckpt)
    tok_file = ckpt.parent / TOKENIZER_NAME
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: the chat tokenizer `make sft` saves beside its checkpoint is missing")
    tok = Tokenizer.load(tok_file)
    if tok.fingerprint != state["tokenizer_fingerprint"]:
        raise CheckpointError(f"{ckpt}: tokenizer fingerprint mismatch with {tok_file}: the ids would mean other text")
    return model_from_checkpoint(state, device), tok, state, ckpt


def describe_turn(s) -> str:
    return (f"# {s.prompt_tokens} prompt tokens ({s.prefilled_tokens} run), {s.new_tokens} new; first token "
            f"{1000 * s.first_token_s:.1f} ms, {s.tokens_per_s:.0f} tokens/s; finish: {s.finish_reason}")


def repl(session, out=None, inp=None, stats: bool = False) -> None:
    """Read a message per line (from a terminal, or piped), stream each reply; /reset and /quit as in HELP."""
    out, inp = out or sys.stdout, inp or sys.stdin
    try:
        import readline  # noqa: F401  (line editing and history for input(), where available)
    except ImportError:  # pragma: no cover - Windows
        pass
    interactive = inp.isatty()
    while True:
        try:
            line = input("you> ") if interactive else inp.readline()
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return
        if not interactive and not line:
            return  # end of piped input
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            print("(conversation forgotten)", file=out, flush=True)
            continue
        if text.startswith("/"):
            print(f"(unknown command {text.split()[0]}; {HELP})", file=out, flush=True)
            continue
        print("model> ", end="", file=out, flush=True)
        try:
            for piece in session.send(text):
                print(piece, end="", file=out, flush=True)
        except KeyboardInterrupt:
            print(" [stopped; this exchange is forgotten]", end="", file=out)
        print(file=out, flush=True)
        if session.last.dropped_turns:
            print(f"(the context was full: forgot the oldest {session.last.dropped_turns} exchange(s))", file=out)
        if stats:
            print(describe_turn(session.last), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set sft.out_dir=artifacts/demo/sft-2 (repeatable)")
    parser.add_argument("--checkpoint", default=None, help="default: artifacts/<recipe>/sft/ckpt.pt")
    parser.add_argument("--prompt", default=None, help="answer this one message and exit")
    parser.add_argument("--system", default=None, help="a system message to start the conversation with")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filtering")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling, e.g. 0.95")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest reply")
    parser.add_argument("--seed", type=int, default=None, help="fix the sampling (default: a new seed each run)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (default: 1 for models under 10M parameters, else torch's default)")
    parser.add_argument("--stats", action="store_true", help="print time to first token and tokens/s per reply")
    add_common_flags(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        import contextlib

        import torch

        from model.chat_session import ChatSession
        from pipelines.sample import pick_device

        device = pick_device(args.device)
        model, tok, state, ckpt = load_chat_model(args.config, args.set, args.checkpoint, device)
        if device == "cpu":
            # One token at a time is a chain of small matmuls: below ~10M parameters each one takes microseconds,
            # and handing it to a second thread costs more than it saves (and on a busy machine, far more).
            threads = args.threads or (1 if model.num_params() < 10_000_000 else 0)
            if threads:
                torch.set_num_threads(threads)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.startswith("cuda") \
            else contextlib.nullcontext
        session = ChatSession(model, tok, system=args.system, temperature=args.temperature, top_k=args.top_k or None,
                              top_p=args.top_p, max_new_tokens=args.max_tokens, seed=args.seed, autocast=autocast)
        session.warm_up()
        if args.prompt is not None:
            for piece in session.send(args.prompt):
                print(piece, end="", flush=True)
            print()
        else:
            print(f"# {ckpt} (step {state['step']}, context {model.config.block_size} tokens); {HELP}", flush=True)
            repl(session, stats=args.stats)
        if args.stats and args.prompt is not None:
            print(describe_turn(session.last), file=sys.stderr)

    from model.chat_session import ContextFullError
    from tokenizer.chat import MissingChatTokensError

    return run_reported(body, (ValueError, ContextFullError, MissingChatTokensError), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
