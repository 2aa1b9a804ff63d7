"""GPT-2, as published, in one file: config, blocks, the model, a KV cache and sampling.

Read first: `explicit_attention`, then `Block.forward` and `GPT.forward`. The KV cache and `generate` are
for sampling and may be skipped on a first reading; README "Understanding the model" follows the shapes.

The architecture is the one OpenAI released in 2019 (and the one Hugging Face's `GPT2LMHeadModel`
implements), so weights move between the two without conversion beyond a few transposes (see model/hf.py):

    tokens -> wte + wpe -> n_layer x Block -> ln_f -> logits = x @ wte.T
    Block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))

Design choices and what they buy:
- Pre-LayerNorm (normalise the *input* of each sub-layer, keep the residual stream untouched, one final ln_f):
  the residual path is a clean identity from the embedding to the head, so gradients reach early layers
  unattenuated and deep stacks train stably (post-LN, the 2017 original, diverges without a careful warmup).
- Weight tying: the output projection *is* the token embedding matrix (logits = x @ wte.T). One tensor, not a
  module pointing at another module's weight: it is created and initialised once, counted once, decayed once,
  and saves vocab*n_embd parameters (38.6M of GPT-2 124M's).
- Init: N(0, 0.02) everywhere, but the two projections that *write into* the residual stream (attn.c_proj,
  mlp.c_proj) use 0.02/sqrt(2*n_layer). Each block adds two such contributions; scaling them keeps the variance
  of the residual stream at the output roughly independent of depth.
- Vocabulary padded to a multiple of 64 (50257 -> 50304): matmul kernels are much faster on such shapes. The
  padding rows of wte are never looked up (ids < vocab_size) and their logits are sliced off before the loss
  and sampling, so they receive no gradient and can never be generated.
- Attention through F.scaled_dot_product_attention(is_causal=True): flash / memory-efficient kernels on GPUs,
  no (T, T) mask tensor in memory. `explicit_attention` is the same computation written out
  (q @ k.T / sqrt(d), causal mask, softmax, @ v, shapes in comments); `model.set_attention("explicit")` runs
  the model on it, and tests/test_reference_attention.py holds the two equal, with and without the KV cache.
- KV cache for generation: keys and values of past positions never change (causal attention), so
  each new token only computes its own q, k, v and attends over the cached ones: O(T) work per token instead
  of re-running the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5  # GPT-2's (and HF GPT2Config's default) LayerNorm epsilon
VOCAB_PAD_MULTIPLE = 64

# name -> GPTConfig kwargs. The four OpenAI sizes use GPT-2's 50257-token vocabulary and 1024 context; the CPU
# presets are for tests and the demo recipe (their vocab_size is a default: the trainer sets it from the shards).
PRESETS: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),  # 1558M
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=4096),  # 1.33M: the demo's model
    "small-cpu": dict(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=4096),  # ~4.3M
}


@dataclass
class GPTConfig:
    block_size: int = 1024  # maximum context length (number of learned positions)
    vocab_size: int = 50257  # real vocabulary; the embedding is padded to padded_vocab_size
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0 for pretraining on lots of data (GPT-2 used 0.1)
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2 has

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def padded_vocab_size(self) -> int:
        """vocab_size rounded up to a multiple of 64, the number of rows of the embedding matrix."""
        return -(-self.vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown} for preset {name!r}; fields: {sorted(known)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated for block_size positions.

    GPT.forward(idx, kv_cache=cache) treats idx as the tokens at positions pos, pos+1, ...; each layer appends its
    new k, v and attends over all cached ones, then the model advances pos. The buffers are allocated on first use
    with the dtype of the keys (so bf16 autocast gives a bf16 cache). Positions are absolute (learned position
    embeddings), so a cache cannot slide: going past block_size raises, and GPT.generate falls back to
    recomputing a cropped window instead (see there).
    """

    def __init__(self, config: GPTConfig):
        self.config = config
        self.pos = 0
        self._kv: torch.Tensor | None = None  # (n_layer, 2, B, n_head, block_size, head_dim)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_head, T, head_dim) at positions pos..pos+T; return keys/values for 0..pos+T."""
        B, H, T, Q = k.shape
        end = self.pos + T
        if self._kv is None:
            # empty, not zeros: only positions [0, end) are ever read, and they are written first, so
            # zero-filling the whole context (75 MB at GPT-2's shape) would only delay the first token
            self._kv = k.new_empty((self.config.n_layer, 2, B, H, self.config.block_size, Q))
        elif self._kv.shape[2] != B:
            raise ValueError(f"KV cache holds batch size {self._kv.shape[2]}, got a batch of {B}")
        self._kv[layer, 0, :, :, self.pos : end] = k
        self._kv[layer, 1, :, :, self.pos : end] = v
        return self._kv[layer, 0, :, :, :end], self._kv[layer, 1, :, :, :end]

    def check_room(self, T: int) -> None:
        if self.pos + T > self.config.block_size:
            raise ValueError(
                f"KV cache overflow: {self.pos} cached + {T} new positions > block_size {self.config.block_size}; "
                "start a new cache with a cropped context (GPT.generate does this for you)"
            )


ATTENTION = ("fused", "explicit")  # GPT.set_attention: the same function, two ways of computing it


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal self-attention written out: what the fused kernel computes, one readable line per idea.

    q (B, H, Tq, Q) are the queries of the last Tq positions; k, v (B, H, Tk, Q) the keys and values of all
    Tk positions (Tk = Tq in training; Tk > Tq when a KV cache supplies the earlier ones). H heads of Q dims.
    """
    Tq, Tk = q.size(-2), k.size(-2)
    att = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk): similarity of query i with key j
    # Causal mask: query i sits at position Tk - Tq + i and may only look at keys 0..that position.
    visible = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)  # (Tq, Tk)
    att = att.masked_fill(~visible, float("-inf"))  # exp(-inf) = 0: the future gets no weight
    att = F.softmax(att, dim=-1)  # (B, H, Tq, Tk): every row is a probability distribution over the keys
    att = F.dropout(att, dropout_p) if dropout_p else att
    return att @ v  # (B, H, Tq, Q): each query's weighted average of the values


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """explicit_attention in one kernel call (flash / memory-efficient on GPUs: no (Tq, Tk) matrix in memory)."""
    Tq, Tk = q.size(-2), k.size(-2)
    if Tq == Tk:  # training, or a prefill: the usual lower-triangular mask
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if Tq == 1:  # one new token after a cached prefix may see every position
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    # several new tokens after a prefix: is_causal=True would align the mask top-left, i.e. wrongly, when Tq != Tk
    visible = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.attention = "fused"  # or "explicit" (GPT.set_attention): equal results, the explicit one is readable
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # writes into the residual
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape  # C = n_embd = n_head * head_dim
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, n_head, T, head_dim): every head attends independently, in its own head_dim subspace
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:  # generation: add this step's keys and values to the earlier positions' ones
            k, v = kv_cache.update(layer, k, v)  # (B, n_head, pos + T, head_dim)
        attend = explicit_attention if self.attention == "explicit" else fused_attention
        y = attend(q, k, v, self.dropout if self.training else 0.0)  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C), added to the residual stream by the Block


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)  # writes into the residual
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: each sub-layer reads a normalised copy and *adds* to the residual stream."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)  # (B, T, C): tokens exchange information
        return x + self.mlp(self.ln_2(x))  # (B, T, C): each position alone, through 4*C hidden units


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # Parameter names follow GPT-2 / Hugging Face (transformer.h.0.attn.c_attn, ...) so that model/hf.py
        # is a rename-free mapping. There is no lm_head module: the head is the (tied) wte matrix itself.
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias),
            )
        )
        self.reset_parameters()

    def set_attention(self, kind: str) -> GPT:
        """Run every block on `fused_attention` (the default, fast) or on `explicit_attention` (the maths spelled
        out, for learning and checking; equal up to float rounding). Not part of the config: it changes no weight
        and no result, so checkpoints and run identities do not record it."""
        if kind not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {kind!r}")
        for block in self.transformer.h:
            block.attn.attention = kind
        return self

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init; every parameter is initialised exactly once (the tied wte/head is a single tensor)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Padding rows are inert (never looked up, logits sliced off); zero makes that visible in the weights.
        self.transformer.wte.weight[self.config.vocab_size :].zero_()

    def num_params(self, non_embedding: bool = True, padded: bool = False) -> int:
        """Parameter count with the tied embedding counted once, over the *real* vocabulary by default.

        non_embedding=False gives GPT-2's published figure (gpt2 preset: 124,439,808). non_embedding=True
        leaves out the position embeddings (123,653,376 for gpt2): the N of the FLOPs formula -- wte stays in,
        because as the output head it does matmul work. padded=True also counts the padding rows of wte
        (padded_vocab_size - vocab_size) * n_embd, i.e. the tensors as allocated (gpt2: +47*768 = 124,475,904).
        """
        n = sum(p.numel() for p in self.parameters())
        if not padded:
            n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, PaLM form: 6N (forward+backward matmuls with the weights) + 12*L*H*Q*T
        (attention scores and weighted sum over a context of T = seq_len tokens, default block_size).
        N excludes position embeddings and padding. The numerator of MFU."""
        c = self.config
        t = seq_len or c.block_size
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_head * c.head_dim * t

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, vocab_size), mean cross-entropy over targets != -1 or None).

        Pretraining's targets are all real ids; fine-tuning (train/sft_data.py) sets -1 where nothing is to be
        learned (the user's turns, padding), and the loss skips those positions. With a kv_cache, idx are the
        tokens at positions kv_cache.pos onwards and the cache advances by T.
        """
        logits = self.head(self.hidden_states(idx, kv_cache))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) -> the final, normalised residual stream (B, T, n_embd)."""
        B, T = idx.shape
        start = 0
        if kv_cache is not None:
            kv_cache.check_room(T)
            start = kv_cache.pos
        elif T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, n_embd)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, layer)  # (B, T, n_embd): the residual stream, read and added to
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Tied output head: x @ wte.T over the padded vocabulary (fast matmul shape), then the padding columns
        are dropped -- a view, so the loss and sampling only ever see real ids."""
        return F.linear(x, self.transformer.wte.weight)[..., : self.config.vocab_size]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T) and return the (B, T + max_new_tokens) sequence.

        temperature 0 means greedy (argmax); top_k keeps the k most likely tokens. Sampling draws from `generator`
        only, so the same generator seed gives the same tokens -- with or without the cache.

        Context longer than block_size: the model sees the last block_size tokens (the window slides). The cache
        holds absolute positions and cannot slide, so once the sequence outgrows block_size the cached path falls
        back to recomputing the cropped window each step -- exactly what the uncached path does, so both give the
        same output for any length. The model runs in eval mode (no dropout) and is put back afterwards.
        """
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(f"generate expects idx of shape (B, T) and dtype long, got {tuple(idx.shape)} {idx.dtype}")
        if idx.size(1) == 0:
            raise ValueError("generate needs at least one prompt token (e.g. the end-of-text id)")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
        if max_new_tokens <= 0:
            return idx
        was_training = self.training
        self.eval()
        try:
            block = self.config.block_size
            cache = KVCache(self.config) if use_cache else None
            # Only the last position's logits are needed: skip the (T, vocab) head matmul for the rest.
            x = self.hidden_states(idx[:, -block:], cache)
            for step in range(max_new_tokens):
                next_id = sample_next(self.head(x[:, -1, :]), temperature, top_k, generator)
                idx = torch.cat([idx, next_id], dim=1)
                if step == max_new_tokens - 1:
                    break
                if cache is not None and cache.pos < block:
                    x = self.hidden_states(next_id, cache)  # one new position, attends over the cache
                else:
                    cache = None  # past block_size (or no cache): recompute the last block_size tokens
                    x = self.hidden_states(idx[:, -block:])
        finally:
            self.train(was_training)
        return idx


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits (B, V) -> next ids (B, 1): greedy for temperature 0, else softmax(logits / T) over the top_k."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        # multinomial needs the generator on the tensor's device; sampling where the generator lives lets a
        # CPU generator drive a GPU model (and the same seed pick the same tokens on either device).
        probs = probs.to(generator.device)
    return torch.multinomial(probs, num_samples=1, generator=generator).to(logits.device)
