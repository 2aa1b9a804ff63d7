"""model/gpt.py: configuration, parameter counts, initialisation, forward/loss, KV cache and sampling."""

from __future__ import annotations

import math

import pytest
import torch

from model import GPT, PRESETS, GPTConfig, KVCache

SMALL = dict(block_size=16, vocab_size=100, n_layer=2, n_head=4, n_embd=32)  # padded vocab: 128


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**SMALL)).eval()


# ------------------------------------------------------------------------------------------- config, sizes


def test_padded_vocab_size():
    assert GPTConfig(vocab_size=50257).padded_vocab_size == 50304
    assert GPTConfig(vocab_size=64).padded_vocab_size == 64
    assert GPTConfig(vocab_size=65).padded_vocab_size == 128
    assert GPTConfig(vocab_size=1).padded_vocab_size == 64


@pytest.mark.parametrize(
    "preset, published",
    [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)],
)
def test_openai_preset_parameter_counts(preset, published):
    """Built on the meta device: shapes only, no memory. The published counts use the unpadded vocabulary and
    count the tied embedding once."""
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset(preset))
    c = model.config
    assert model.num_params(non_embedding=False) == published
    assert model.num_params() == published - c.block_size * c.n_embd  # N without position embeddings
    padding = (c.padded_vocab_size - c.vocab_size) * c.n_embd
    assert model.num_params(non_embedding=False, padded=True) == published + padding
    assert sum(p.numel() for p in model.parameters()) == published + padding  # tensors as allocated


def test_gpt2_flops_per_token():
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset("gpt2"))
    n = 124_439_808 - 1024 * 768
    assert model.flops_per_token() == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_cpu_presets_are_small():
    assert 0.5e6 < GPT(GPTConfig.from_preset("tiny")).num_params(non_embedding=False) < 1.5e6
    assert 2e6 < GPT(GPTConfig.from_preset("small-cpu")).num_params(non_embedding=False) < 8e6


def test_from_preset_overrides_and_errors():
    cfg = GPTConfig.from_preset("tiny", vocab_size=1000, dropout=0.1)
    assert (cfg.vocab_size, cfg.dropout, cfg.n_layer) == (1000, 0.1, PRESETS["tiny"]["n_layer"])
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt5'.*gpt2, gpt2-medium.*tiny, small-cpu"):
        GPTConfig.from_preset("gpt5")
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.from_preset("tiny", n_layers=3)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


# ------------------------------------------------------------------------------------------- init, tying


def test_weight_tying_is_one_tensor_initialised_once():
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=1000, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    # exactly one (padded_vocab, n_embd) parameter: the embedding *is* the head
    big = [n for n, p in model.named_parameters() if p.shape == (cfg.padded_vocab_size, cfg.n_embd)]
    assert big == ["transformer.wte.weight"]
    wte = model.transformer.wte.weight
    assert abs(wte[: cfg.vocab_size].std().item() - 0.02) < 0.001
    assert torch.count_nonzero(wte[cfg.vocab_size :]) == 0  # padding rows inert
    # logits are x @ wte.T: rows never fed as input still get gradient, through the head
    idx = torch.randint(0, 10, (2, 8))
    logits, loss = model(idx, torch.randint(500, 510, (2, 8)))
    assert logits.shape == (2, 8, cfg.vocab_size)
    loss.backward()
    assert torch.count_nonzero(wte.grad[500:510].abs().sum(dim=1)) == 10
    assert torch.count_nonzero(wte.grad[cfg.vocab_size :]) == 0  # padding: no gradient at all


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=32, vocab_size=256, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    for i, block in enumerate(model.transformer.h):
        for name, linear, std in [
            ("attn.c_attn", block.attn.c_attn, 0.02),
            ("attn.c_proj", block.attn.c_proj, scaled),
            ("mlp.c_fc", block.mlp.c_fc, 0.02),
            ("mlp.c_proj", block.mlp.c_proj, scaled),
        ]:
            assert abs(linear.weight.std().item() - std) < 0.1 * std, f"h.{i}.{name}"
            assert torch.count_nonzero(linear.bias) == 0
        assert torch.all(block.ln_1.weight == 1) and torch.all(block.ln_2.bias == 0)
    assert abs(model.transformer.wpe.weight.std().item() - 0.02) < 0.002


# ------------------------------------------------------------------------------------------- forward, loss


def test_loss_is_cross_entropy_ignoring_minus_one(small_model):
    idx = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    targets[0, :5] = -1
    targets[2, -1] = -1
    logits, loss = small_model(idx, targets)
    assert logits.shape == (3, 12, 100)  # real vocabulary only
    keep = targets != -1
    expected = -torch.log_softmax(logits[keep], dim=-1).gather(1, targets[keep][:, None]).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # an untrained model predicts roughly uniformly: loss near ln(vocab)
    assert abs(loss.item() - math.log(100)) < 0.5


def test_attention_is_causal(small_model):
    idx = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 100
    a, _ = small_model(idx)
    b, _ = small_model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_too_long_input_raises(small_model):
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        small_model(torch.zeros(1, 17, dtype=torch.long))


def test_tiny_model_learns_a_fixed_sequence():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    data = torch.randint(0, 100, (4, 17), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        _, loss = model(data[:, :-1], data[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0 and loss.item() < 0.5
    # the padding rows got no gradient and stayed zero (they are neither inputs nor candidates)
    assert torch.count_nonzero(model.transformer.wte.weight[100:]) == 0


# ------------------------------------------------------------------------------------------- KV cache


def test_cached_incremental_forward_matches_full_forward(small_model):
    idx = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    full, _ = small_model(idx)
    cache = KVCache(small_model.config)
    pieces = []
    # prefill 5, then single tokens, then a chunk of 4 (the explicit-mask path), then the rest one by one
    for start, end in [(0, 5), (5, 6), (6, 7), (7, 11), (11, 12), (12, 13), (13, 14), (14, 15), (15, 16)]:
        logits, _ = small_model(idx[:, start:end], kv_cache=cache)
        pieces.append(logits)
    assert cache.pos == 16
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="KV cache overflow"):
        small_model(idx[:, :1], kv_cache=cache)


# ------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("prompt_len, new", [(3, 10), (10, 20), (20, 5)])  # within, across, beyond block_size 16
def test_generate_with_cache_equals_without(small_model, prompt_len, new):
    idx = torch.randint(0, 100, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    kwargs = dict(temperature=1.3, top_k=40)
    cached = small_model.generate(idx, new, generator=torch.Generator().manual_seed(7), **kwargs)
    uncached = small_model.generate(idx, new, generator=torch.Generator().manual_seed(7), use_cache=False, **kwargs)
    assert cached.shape == (2, prompt_len + new)
    assert torch.equal(cached[:, :prompt_len], idx)
    assert torch.equal(cached, uncached)
    other_seed = small_model.generate(idx, new, generator=torch.Generator().manual_seed(8), **kwargs)
    assert not torch.equal(cached, other_seed)


def test_greedy_and_top1_follow_the_argmax(small_model):
    idx = torch.randint(0, 100, (1, 4), generator=torch.Generator().manual_seed(0))
    greedy = small_model.generate(idx, 8, temperature=0)
    assert torch.equal(small_model.generate(idx, 8, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    for t in range(4, 12):  # each generated token is the argmax of the full forward over its prefix
        logits, _ = small_model(greedy[:, :t])
        assert logits[0, -1].argmax().item() == greedy[0, t].item()


def test_top_k_restricts_the_candidates(small_model):
    idx = torch.zeros(64, 1, dtype=torch.long)
    out = small_model.generate(idx, 1, temperature=5.0, top_k=3, generator=torch.Generator().manual_seed(0))
    logits, _ = small_model(idx[:1])
    allowed = set(torch.topk(logits[0, -1], 3).indices.tolist())
    assert set(out[:, 1].tolist()) <= allowed and len(set(out[:, 1].tolist())) > 1


def test_padding_ids_are_never_generated():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    with torch.no_grad():  # make the padding rows irresistible if their logits were not sliced off
        model.transformer.wte.weight[100:] = 10 * model.transformer.ln_f.weight[None, :] + 10
    out = model.generate(torch.zeros(8, 1, dtype=torch.long), 15, generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 100


def test_generate_restores_training_mode_and_validates():
    model = GPT(GPTConfig(**{**SMALL, "dropout": 0.2})).train()
    idx = torch.zeros(1, 2, dtype=torch.long)
    a = model.generate(idx, 6, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 6, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(a, b)  # dropout is off while generating
    assert model.training
    with pytest.raises(ValueError, match="dtype long"):
        model.generate(idx.float(), 2)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(idx, 2, top_k=0)
    assert torch.equal(model.generate(idx, 0), idx)
