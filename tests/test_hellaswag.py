"""HellaSwag completion-style scoring on small files in the official schema."""

from __future__ import annotations

import json

import pytest
import torch
from pretrain_helpers import byte_tokenizer, make_project

from model import GPT, GPTConfig
from train.hellaswag import Example, ending_losses, load_examples, render, score
from train.trainer import pretrain

EXAMPLES = [
    ("A man is sitting on a roof. He", ["starts pulling up roofing on a roof.", "is ripping level tiles off.",
                                        "is holding a rubik's cube.", "is using wrap to wrap a pair of skis."], 0),
    ("The cat sat on the", ["mat and purred.", "moon, singing opera loudly.", "equation of state.",
                            "printer."], 0),
    ("To make tea, boil the", ["socks.", "water and steep the leaves.", "telephone.", "sky."], 1),
    ("She opened the door and", ["the door ate a sandwich.", "flew.", "walked into the room.",
                                 "numbers."], 2),
    ("He put the key in the", ["banana.", "cloud.", "ocean of time.", "lock and turned it."], 3),
]


def write_jsonl(path, examples=EXAMPLES):
    with open(path, "w") as f:
        for i, (ctx, endings, label) in enumerate(examples):  # the official schema, extra fields included
            f.write(json.dumps({"ind": i, "activity_label": "test", "ctx_a": ctx, "ctx_b": "", "ctx": ctx,
                                "split": "val", "split_type": "indomain", "endings": endings, "label": label,
                                "source_id": f"test~{i}"}) + "\n")
    return path


def test_load_and_validate(tmp_path):
    examples = load_examples(write_jsonl(tmp_path / "hs.jsonl"))
    assert len(examples) == 5 and examples[2].label == 1 and examples[0].ctx.startswith("A man")
    assert len(load_examples(tmp_path / "hs.jsonl", limit=2)) == 2
    bad = tmp_path / "bad.jsonl"
    cases = [({"ctx": "x", "endings": ["a", "b", "c"], "label": 0}, "bad.jsonl:2: field 'endings'"),
             ({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4}, "bad.jsonl:2: field 'label'"),
             ({"endings": ["a", "b", "c", "d"], "label": 1}, "bad.jsonl:2: field 'ctx'")]
    good = json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": "1"})
    for obj, message in cases:
        bad.write_text(good + "\n" + json.dumps(obj) + "\n")
        with pytest.raises(ValueError, match=message):
            load_examples(bad)
    bad.write_text("{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        load_examples(bad)
    with pytest.raises(FileNotFoundError, match="make hellaswag"):
        load_examples(tmp_path / "missing.jsonl")


def test_render_masks_exactly_the_ending_and_crops_the_context_start():
    tok = byte_tokenizer()
    ex = Example("abcdef", ("xy", "z", "long ending", "q"), 0)
    tokens, mask = render(ex, tok.encode, max_len=64)
    assert tokens.shape == mask.shape == (4, len("abcdef") + len(" long ending"))
    for i, ending in enumerate(ex.endings):
        row = tok.decode(tokens[i][mask[i].bool()].tolist())
        assert row == " " + ending
        assert tok.decode(tokens[i, : 6].tolist()) == "abcdef"
    tokens, mask = render(ex, tok.encode, max_len=8)  # " long ending" is 12 bytes: keep 7 + 1 context byte
    assert tok.decode(tokens[2].tolist()) == "f long e"
    assert tok.decode(tokens[1].tolist()) == "abcdef z" and mask[1].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert tokens.shape[1] == 8


def test_scores_agree_with_the_models_own_masked_loss():
    """acc_norm = argmin of the model's mean loss over the ending (targets -1 elsewhere); acc = argmin of the sum."""
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=128, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=32)).eval()
    examples = load_examples_from(EXAMPLES)
    expected = torch.zeros(3, dtype=torch.float64)
    for ex in examples:
        means, sums = [], []
        for ending in ex.endings:
            ctx, end = tok.encode(ex.ctx), tok.encode(" " + ending)
            idx = torch.tensor([ctx + end])
            targets = torch.tensor([[-1] * (len(ctx) - 1) + end + [-1]])
            _, loss = model(idx, targets)
            means.append(loss.item())
            sums.append(loss.item() * len(end))
        expected += torch.tensor([1, int(min(range(4), key=sums.__getitem__) == ex.label),
                                  int(min(range(4), key=means.__getitem__) == ex.label)], dtype=torch.float64)
    got = score(model, examples, tok.encode, device="cpu", block_size=128)
    assert got.tolist() == expected.tolist()
    shares = sum(score(model, examples, tok.encode, device="cpu", block_size=128, rank=r, world_size=2)
                 for r in (0, 1))
    assert shares.tolist() == got.tolist()  # ranks score disjoint examples that add up to the whole set


def load_examples_from(rows):
    return [Example(ctx, tuple(endings), label) for ctx, endings, label in rows]


class BigramModel(torch.nn.Module):
    """Logits = log bigram frequencies of a text: it 'knows' exactly the text it was counted on."""

    def __init__(self, text_ids: list[int], vocab: int):
        super().__init__()
        counts = torch.ones(vocab, vocab)
        for a, b in zip(text_ids, text_ids[1:]):
            counts[a, b] += 50
        self.table = counts.log()  # log counts are logits of the bigram distribution

    def forward(self, idx, targets=None):
        return self.table[idx], None


def test_a_model_that_knows_the_right_endings_scores_one():
    tok = byte_tokenizer()
    examples = load_examples_from(EXAMPLES)
    known = " ".join(ex.ctx + " " + ex.endings[ex.label] for ex in examples)
    model = BigramModel(tok.encode(known), tok.n_vocab)
    n, acc, acc_norm = score(model, examples, tok.encode, device="cpu", block_size=128).tolist()
    assert (n, acc_norm) == (5, 5)
    assert acc < acc_norm  # the *total* loss favours short wrong endings ("sky.", "flew."): why acc_norm exists


def test_ending_losses_ignore_padding():
    logits = torch.randn(4, 6, 11)
    tokens = torch.randint(0, 11, (4, 6))
    mask = torch.zeros(4, 6, dtype=torch.long)
    mask[:, 3:5] = 1
    total, mean = ending_losses(logits, tokens, mask)
    logits2 = logits.clone()
    logits2[:, 5:] = 100.0  # the padding position's predictions must not matter
    assert torch.allclose(ending_losses(logits2, tokens, mask)[0], total)
    assert torch.allclose(mean, total / 2)


def test_trainer_reports_hellaswag(tmp_path, corpus_texts):
    path = write_jsonl(tmp_path / "hs.jsonl")
    _, cfg = make_project(tmp_path, corpus_texts[:48], train={"max_steps": 2},
                          eval={"every": 2, "hellaswag": str(path), "hellaswag_limit": 4, "samples_per_prompt": 0})
    result = pretrain(cfg, log=False)
    assert result.hellaswag["n"] == 4 and 0 <= result.hellaswag["acc_norm"] <= 1
    records = [json.loads(x) for x in (cfg.out_dir / "metrics.jsonl").read_text().splitlines()]
    hs = [r for r in records if r["type"] == "hellaswag"]
    assert [r["step"] for r in hs] == [0, 2] and hs[-1]["acc_norm"] == result.hellaswag["acc_norm"]


def test_download_validates_then_publishes(tmp_path):
    """`make hellaswag` fetches over HTTPS; a file:// URL exercises the same path offline."""
    from train.hellaswag import download

    src = write_jsonl(tmp_path / "src.jsonl")
    dest = download(tmp_path / "out" / "hellaswag_val.jsonl", url=src.as_uri())
    assert dest.read_bytes() == src.read_bytes() and not list(dest.parent.glob("*.part"))
    (tmp_path / "broken.jsonl").write_text('{"ctx": "x"}\n')
    with pytest.raises(ValueError, match="field 'endings'"):
        download(tmp_path / "out2" / "hs.jsonl", url=(tmp_path / "broken.jsonl").as_uri())
    assert not list((tmp_path / "out2").iterdir())  # nothing half-downloaded left behind
