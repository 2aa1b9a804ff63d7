"""Conversations made from the embedded python-docs corpus: fine-tuning data that needs no network.

Every document of the corpus (pipelines/sources/python_docs.py) documents one thing -- a module, class,
function or help topic -- and its first paragraph says what that thing is. That is a question and its
answer:

    user:      What does json.dumps do?
    assistant: Serialize ``obj`` to a JSON formatted ``str``.

Everything is derived from the document id by a hash, so the set is the same on every run and machine
with the same Python: which of several phrasings the question takes, whether a system message comes
first, and whether a second turn asks for more (answered by the second paragraph, when it is prose).
Answers are cut to whole sentences of at most MAX_ANSWER_CHARS, so that a conversation fits the demo
model's 128-token context; documents whose first sentence is longer, whose first paragraph is not prose
or says next to nothing, and the generated codec modules (one template, dozens of times) are left out.

The base model was pretrained on these very docstrings, so fine-tuning teaches the *format* (answer a
question, then stop) and the mapping from a name to its description, not new facts: the right task for
a 1.3M-parameter model and three minutes on a CPU.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines.sources import python_docs

MAX_ANSWER_CHARS = 280
MIN_ANSWER_WORDS = 3          # "Arguments:" or "No argument." describe nothing
# Generated modules whose docstrings are one template with a name filled in ("Python Character Mapping Codec
# cp1252 generated from ..."): dozens of near-copies would teach the model to recite the template.
SKIPPED_PREFIXES = ("doc:encodings/",)
GENERATOR_VERSION = 1  # bump when the conversations change: the SFT data is rebuilt

FUNCTION_QUESTIONS = ("What does {name} do?", "What is {name} for?", "Explain {name}.",
                      "Can you tell me what {name} does?", "What is the purpose of {name}?")
CLASS_QUESTIONS = ("What is {name}?", "What is the {name} class?", "Describe the class {name}.",
                   "What does {name} represent?")
MODULE_QUESTIONS = ("What is the {name} module for?", "What does the {name} module do?",
                    "Tell me about the {name} module.")
TOPIC_QUESTIONS = ("Tell me about {title}.", "What should I know about {title}?", "Explain {title} in Python.")
FOLLOW_UPS = ("Tell me more.", "Can you say more?", "Go on.", "What else?")
SYSTEM_PROMPTS = ("You are a concise assistant that explains the Python standard library.",
                  "Answer questions about Python briefly and accurately.")

_SENTENCE_END = re.compile(r"[.!?:](?=\s|$)")


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: list[dict[str, str]]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _pick(options: tuple[str, ...], key: str, salt: str) -> str:
    return options[_hash(salt + key) % len(options)]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each with its lines kept (layout tells prose from code)."""
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def is_prose(block: str) -> bool:
    """A paragraph of running text: not indented (code, grammar), not a table, not a doctest."""
    lines = block.splitlines()
    return bool(lines) and not any(line[:1].isspace() or line.lstrip().startswith(("+", "|", ">>>", "*", "-"))
                                   for line in lines) and block[:1].isalpha()


def short_answer(block: str, limit: int = MAX_ANSWER_CHARS) -> str | None:
    """A paragraph as one line, cut after its last whole sentence within `limit` characters (None if none)."""
    text = " ".join(block.split())
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit + 1)]
    return text[:ends[-1]] if ends else None


def subject(doc_id: str) -> tuple[str, str] | None:
    """("function" | "class" | "module" | "topic", name) of a corpus document id."""
    kind, _, rest = doc_id.partition(":")
    if kind == "topic":
        return "topic", rest
    path, _, qualname = rest.rpartition(":")
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    if qualname == "<module>":
        return "module", module
    last = qualname.rsplit(".", 1)[-1]
    return ("class" if last[:1].isupper() else "function"), f"{module}.{qualname}"


def topic_title(text: str) -> tuple[str, str] | None:
    """A help topic's title (its first line, underlined with *** or ===) and the text after it."""
    lines = text.splitlines()
    if len(lines) < 2 or not set(lines[1].strip()) <= set("*="):
        return None
    title = lines[0].strip()
    if len(title) > 1 and title[1].islower():
        title = title[0].lower() + title[1:]  # "Assignment statements" -> "Tell me about assignment statements."
    return title, "\n".join(lines[2:])


def question_for(doc_id: str, text: str) -> tuple[str, str] | None:
    """(question, the text that answers it) for one document, or None when it makes no good question."""
    found = subject(doc_id)
    if found is None:
        return None
    kind, name = found
    if kind == "topic":
        titled = topic_title(text)
        if titled is None:
            return None
        title, body = titled
        return _pick(TOPIC_QUESTIONS, doc_id, "q").format(title=title), body
    options = {"function": FUNCTION_QUESTIONS, "class": CLASS_QUESTIONS, "module": MODULE_QUESTIONS}[kind]
    return _pick(options, doc_id, "q").format(name=name), text


def conversation_for(doc_id: str, text: str) -> Conversation | None:
    if doc_id.startswith(SKIPPED_PREFIXES):
        return None
    asked = question_for(doc_id, text)
    if asked is None:
        return None
    question, body = asked
    blocks = paragraphs(body)
    if not blocks or not is_prose(blocks[0]):
        return None
    answer = short_answer(blocks[0])
    if answer is None or len(answer.split()) < MIN_ANSWER_WORDS:
        return None
    messages: list[dict[str, str]] = []
    h = _hash("shape" + doc_id)
    if h % 5 == 0:  # one in five starts with a system message
        messages.append({"role": "system", "content": _pick(SYSTEM_PROMPTS, doc_id, "s")})
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if (h >> 8) % 4 == 0 and len(blocks) > 1 and is_prose(blocks[1]):  # one in four goes on, when it can
        more = short_answer(blocks[1])
        if more:
            messages += [{"role": "user", "content": _pick(FOLLOW_UPS, doc_id, "f")},
                         {"role": "assistant", "content": more}]
    return Conversation(f"python-docs:{doc_id}", messages)


def iter_conversations() -> Iterator[Conversation]:
    """The conversations in corpus order (about one per document that has a prose first paragraph)."""
    for doc in python_docs.documents():  # cached: built once per process
        conv = conversation_for(doc.id, doc.text)
        if conv is not None:
            yield conv


def fingerprint() -> dict[str, Any]:
    """What the conversations depend on: the interpreter's stdlib and this generator."""
    import sys
    from pathlib import Path

    code = Path(__file__).read_bytes() + Path(python_docs.__file__).read_bytes()
    return {"python": sys.version.split()[0], "generator": GENERATOR_VERSION,
            "code_sha256": hashlib.sha256(code).hexdigest()}
