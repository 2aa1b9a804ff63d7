"""The written-out attention (model/gpt.py `explicit_attention`) is the fused kernel's specification.

The two must agree up to float rounding everywhere the model attends: training (queries = keys), a prefill,
one token after a cached prefix, several tokens after one, gradients, and whole generations. And
`GPT.set_attention("explicit")` must really switch every block (a switch that did nothing would pass the
equalities trivially, so one test breaks the explicit path on purpose and watches the output move).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, KVCache, explicit_attention, fused_attention

SMALL = dict(block_size=32, vocab_size=100, n_layer=2, n_head=4, n_embd=32)
TOL = dict(atol=1e-5, rtol=1e-5)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def models() -> tuple[GPT, GPT]:
    """The same weights twice: one on the fused kernel, one on the explicit attention."""
    torch.manual_seed(0)
    fused = GPT(GPTConfig(**SMALL)).eval()
    explicit = GPT(GPTConfig(**SMALL)).eval().set_attention("explicit")
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


def test_explicit_attention_is_the_textbook_formula():
    """softmax(q k^T / sqrt(d) + causal mask) v, computed here a third way: one query at a time, in float64."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = explicit_attention(q, k, v)
    for i in range(7):  # query i sees keys 0..i
        weights = torch.softmax(q[:, :, i : i + 1] @ k[:, :, : i + 1].transpose(-2, -1) / math.sqrt(8), dim=-1)
        torch.testing.assert_close(out[:, :, i : i + 1], weights @ v[:, :, : i + 1])


@pytest.mark.parametrize("tq, tk", [(9, 9), (1, 9), (4, 9)])
def test_explicit_equals_fused_for_every_query_key_shape(tq, tk):
    """tq = tk: training and prefill; tq < tk: the last tq positions, as with a KV cache."""
    g = torch.Generator().manual_seed(tq * 100 + tk)
    q = torch.randn(2, 4, tq, 16, generator=g)
    k, v = (torch.randn(2, 4, tk, 16, generator=g) for _ in range(2))
    torch.testing.assert_close(explicit_attention(q, k, v), fused_attention(q, k, v), **TOL)
    torch.testing.assert_close(fused_attention(q, k, v), F.scaled_dot_product_attention(
        q, k, v, attn_mask=torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)), **TOL)


def test_model_forward_and_gradients_are_equal():
    fused, explicit = models()
    fused.train(), explicit.train()
    idx = torch.randint(0, 100, (3, 32), generator=torch.Generator().manual_seed(2))
    targets = torch.roll(idx, -1, dims=1)
    logits_f, loss_f = fused(idx, targets)
    logits_e, loss_e = explicit(idx, targets)
    torch.testing.assert_close(logits_e, logits_f, **TOL)
    loss_f.backward(), loss_e.backward()
    for (name, p_f), p_e in zip(fused.named_parameters(), explicit.parameters()):
        torch.testing.assert_close(p_e.grad, p_f.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_kv_cache_paths_are_equal():
    """Prefill 10, then 1 token, then 5 at once: each step's logits equal with either attention, and equal to
    the uncached forward over the whole sequence."""
    fused, explicit = models()
    idx = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    full, _ = fused(idx)
    for model in (fused, explicit):
        cache = KVCache(model.config)
        steps = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in ((0, 10), (10, 11), (11, 16))]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_generation_is_the_same_with_either_attention():
    fused, explicit = models()
    prompt = torch.tensor([[1, 2, 3]])
    for use_cache in (True, False):
        a = fused.generate(prompt, 40, temperature=0, use_cache=use_cache)  # past block_size: the window slides
        b = explicit.generate(prompt, 40, temperature=0, use_cache=use_cache)
        assert a.tolist() == b.tolist()


def test_set_attention_switches_every_block(monkeypatch):
    fused, explicit = models()
    assert [b.attn.attention for b in explicit.transformer.h] == ["explicit"] * 2
    idx = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(4))
    before = explicit(idx)[0]
    import model.gpt as gpt

    monkeypatch.setattr(gpt, "explicit_attention", lambda q, k, v, dropout_p=0.0: torch.zeros_like(q))
    assert not torch.allclose(explicit(idx)[0], before)  # the explicit path really runs
    torch.testing.assert_close(fused(idx)[0], before, **TOL)  # ...and the fused one does not use it
    with pytest.raises(ValueError, match="attention must be one of"):
        fused.set_attention("flash")
