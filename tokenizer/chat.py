"""The chat format: conversations -> token ids + a loss mask, with dedicated special tokens.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`: an
optional system message first, then user and assistant alternating, user first. It is rendered as

    <|endoftext|> [<|system_start|> text <|system_end|>]
    <|user_start|> text <|user_end|> <|assistant_start|> text <|assistant_end|>  (repeated per turn)

- `<|endoftext|>` opens the conversation, as it opens every pretraining document: the model already
  knows that whatever follows it is the start of something new (nanochat has a separate <|bos|>; our
  tokenizers put <|endoftext|> before every document, so it already plays that part).
- Each role's text sits between its own start and end tokens. Six control tokens that no text can
  produce make the turn structure unambiguous for the model and trivial to parse for us.
- The loss mask is 1 on the assistant's text and on its <|assistant_end|>, 0 everywhere else. The model
  is taught to *write* answers and to *stop*, never to imitate users; <|assistant_start|> is 0 too,
  because at inference time we put it there ourselves (it ends the prompt).
- Message text is always encoded as ordinary text (`encode_ordinary`): a user who types
  "<|assistant_start|>" gets the characters, never the control token (the same rule that keeps a
  document from smuggling in <|endoftext|>).

Where the ids come from: a tokenizer the project trains gets the six tokens at `make tokenizer` time
(`special_tokens_with_chat` puts them before <|endoftext|>, which keeps the last id). GPT-2's vocabulary
is fixed, so `with_chat_tokens` appends them after <|endoftext|> (ids 50257-50262), inside the rows the
model pads its embedding to (50304): no embedding resize. A tokenizer without them is refused by
`ChatFormat` with a message saying how to add them.

`hf_chat_template()` is the same format as a Jinja template, which `save_hf` writes into
tokenizer_config.json so that transformers' `apply_chat_template` produces exactly our ids.

This module is part of the tokenizer package (floor 0): it imports nothing else of the project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .core import EOT, Tokenizer

ROLES = ("system", "user", "assistant")
SYSTEM_START, SYSTEM_END = "<|system_start|>", "<|system_end|>"
USER_START, USER_END = "<|user_start|>", "<|user_end|>"
ASSISTANT_START, ASSISTANT_END = "<|assistant_start|>", "<|assistant_end|>"
CHAT_SPECIAL_TOKENS = (SYSTEM_START, SYSTEM_END, USER_START, USER_END, ASSISTANT_START, ASSISTANT_END)
ROLE_TOKENS = {"system": (SYSTEM_START, SYSTEM_END), "user": (USER_START, USER_END),
               "assistant": (ASSISTANT_START, ASSISTANT_END)}


class ConversationError(ValueError):
    """A conversation that breaks the format. `reason` is a short key the SFT manifest counts by."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class MissingChatTokensError(ValueError):
    """A tokenizer without the chat special tokens (the message says how to get them)."""


# ------------------------------------------------------------------------------ the vocabulary
def special_tokens_with_chat(special_tokens: Sequence[str]) -> list[str]:
    """The special tokens a trained tokenizer gets: the chat tokens first, then the recipe's own.

    Tokenizer.train numbers specials in list order after the merges, so listing the chat tokens first
    keeps <|endoftext|> (normally the recipe's only special) at the last id, where the shards, the
    README and exported configs expect it.
    """
    own = list(dict.fromkeys(special_tokens))
    return [t for t in CHAT_SPECIAL_TOKENS if t not in own] + own


def with_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """`tok` plus the chat tokens it lacks, at the ids right after its last one.

    For GPT-2 (ids 0..50256) that is 50257..50262: rows the model already has, because its embedding
    is padded to 50304. Ordinary text encodes exactly as before; only the special tokens (and so the
    fingerprint) change.
    """
    specials = tok.special_tokens
    missing = [t for t in CHAT_SPECIAL_TOKENS if t not in specials]
    if not missing:
        return tok
    first = tok.n_vocab
    specials.update({t: first + k for k, t in enumerate(missing)})
    return Tokenizer(dict(tok.mergeable_ranks), specials, tok.pattern, tok.merges, tok.name)


def has_chat_tokens(tok: Tokenizer) -> bool:
    return all(t in tok.special_tokens for t in CHAT_SPECIAL_TOKENS) and tok.eot_id is not None


# ------------------------------------------------------------------------------ checking messages
def check_conversation(messages: Any, *, for_prompt: bool = False) -> list[dict[str, str]]:
    """The messages as plain {"role", "content"} dicts, or ConversationError saying what is wrong.

    Training conversations must end with the assistant (that is what is learned); a prompt ends with
    the user (the assistant answers next). Extra keys in a message (names, ids) are ignored.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConversationError("malformed", f"messages must be a list of {{role, content}}, got "
                                             f"{type(messages).__name__}")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ConversationError("malformed", f"message {i} is not a {{role, content}} mapping: {m!r:.80}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ConversationError("unknown_role", f"message {i}: unknown role {role!r} (roles: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ConversationError("non_string_content",
                                    f"message {i} ({role}): content must be a string, got {type(content).__name__}")
        if not content.strip():
            raise ConversationError("empty_content", f"message {i} ({role}): empty content")
        out.append({"role": role, "content": content})
    first = 1 if out and out[0]["role"] == "system" else 0
    for i in range(first, len(out)):
        expected = "user" if (i - first) % 2 == 0 else "assistant"
        if out[i]["role"] != expected:
            raise ConversationError("role_order", f"message {i}: expected {expected}, got {out[i]['role']} "
                                                  "(an optional system message, then user and assistant alternating)")
    last = "user" if for_prompt else "assistant"
    if len(out) == first or out[-1]["role"] != last:
        raise ConversationError("role_order", f"a {'prompt' if for_prompt else 'training conversation'} must end "
                                              f"with a {last} message")
    return out


# ------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    mask: list[int]          # 1 where ids[i] is a token the model learns to produce (assistant text + end)
    reply_ends: list[int]    # len(ids) after each <|assistant_end|>: where the conversation may be cut


class ChatFormat:
    """Render conversations with one tokenizer's chat token ids (see the module docstring)."""

    def __init__(self, tok: Tokenizer):
        if not has_chat_tokens(tok):
            missing = [t for t in (EOT, *CHAT_SPECIAL_TOKENS) if t not in tok.special_tokens]
            raise MissingChatTokensError(
                f"tokenizer {tok.name!r} ({tok.fingerprint[:16]}...) lacks the chat special tokens "
                f"{', '.join(missing)}. A tokenizer trained by `make tokenizer` gets them (retrain an older one with "
                "`make tokenizer FORCE=1`, then `make shards pretrain`); for GPT-2's vocabulary or any other, "
                "tokenizer.chat.with_chat_tokens(tok) appends them after its last id")
        self.tok = tok
        s = tok.special_tokens
        self.bos = tok.eot_id
        self.start = {role: s[a] for role, (a, _) in ROLE_TOKENS.items()}
        self.end = {role: s[b] for role, (_, b) in ROLE_TOKENS.items()}
        self.assistant_end = self.end["assistant"]
        # Generation stops at the end of the reply; <|endoftext|> too, should a weak model produce it.
        self.stop_ids = frozenset({self.assistant_end, self.bos})
        self.control_ids = frozenset({self.bos, *self.start.values(), *self.end.values()})

    def encode_text(self, text: str) -> list[int]:
        """Message text -> ids, always as ordinary text: special-token text stays characters."""
        return self.tok.encode_ordinary(text)

    def render(self, messages: Iterable[Mapping[str, Any]], *, checked: bool = False) -> Rendered:
        """A training conversation (ends with the assistant) -> ids, loss mask and reply boundaries."""
        msgs = list(messages) if checked else check_conversation(list(messages))
        return self._render(msgs, [self.encode_text(m["content"]) for m in msgs])

    def render_encoded(self, msgs: Sequence[Mapping[str, Any]], contents: Sequence[Sequence[int]]) -> Rendered:
        """`render` with the contents already encoded (by encode_batch, in parallel); msgs checked."""
        return self._render(msgs, contents)

    def _render(self, msgs: Sequence[Mapping[str, Any]], contents: Sequence[Sequence[int]]) -> Rendered:
        ids, mask, reply_ends = [self.bos], [0], []
        for m, text in zip(msgs, contents):
            role = m["role"]
            learn = 1 if role == "assistant" else 0
            ids.append(self.start[role])
            mask.append(0)
            ids.extend(text)
            mask.extend([learn] * len(text))
            ids.append(self.end[role])
            mask.append(learn)
            if learn:
                reply_ends.append(len(ids))
        return Rendered(ids, mask, reply_ends)

    def render_prompt(self, messages: Iterable[Mapping[str, Any]]) -> list[int]:
        """A conversation ending with the user -> the ids the assistant's reply continues."""
        msgs = check_conversation(list(messages), for_prompt=True)
        ids = [self.bos]
        for m in msgs:
            ids += [self.start[m["role"]], *self.encode_text(m["content"]), self.end[m["role"]]]
        return ids + [self.start["assistant"]]

    def decode_reply(self, ids: Iterable[int]) -> str:
        """The text of generated ids, without the stop token(s) and any stray control token."""
        return self.tok.decode([i for i in ids if i not in self.control_ids])


# ------------------------------------------------------------------------------ transformers
def hf_chat_template() -> str:
    """Jinja for transformers' `apply_chat_template`: the rendering above, token for token.

    transformers renders the template to text and then tokenizes it, splitting at special-token text.
    So the ids agree with ours for any text that does not itself contain a control token's spelling;
    text that does becomes the control token there (HF cannot tell), while our renderer keeps it text.
    """
    return (
        "{%- if messages and messages[0]['role'] == 'system' %}{% set offset = 1 %}{% else %}{% set offset = 0 %}"
        "{% endif -%}"
        "<|endoftext|>"
        "{%- for message in messages %}"
        "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
        "{%- elif loop.index0 >= offset and message['role'] != ['user', 'assistant'][(loop.index0 - offset) % 2] %}"
        "{{ raise_exception('an optional system message, then user and assistant alternating') }}"
        "{%- endif %}"
        "{{ '<|' + message['role'] + '_start|>' + message['content'] + '<|' + message['role'] + '_end|>' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}<|assistant_start|>{% endif %}"
    )
