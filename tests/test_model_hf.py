"""model/hf.py against the real transformers GPT-2 implementation, offline (random small models, no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from model import GPT, GPTConfig
from model.hf import export_hf, load_hf_gpt2

transformers = pytest.importorskip("transformers")

VOCAB = 300  # not a multiple of 64: exercises the padding on import and the unpadding on export


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _hf_config(**overrides):
    kwargs = dict(
        n_positions=64, n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, activation_function="gelu_new",
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )  # fmt: skip
    return transformers.GPT2Config(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def hf_model():
    """A random transformers GPT-2 whose biases and LayerNorms are perturbed too (HF inits them to 0/1, which
    would hide a bias or LayerNorm mapped to the wrong place)."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(_hf_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))


def _hf_logits(model, idx):
    with torch.no_grad():
        return model(idx).logits


def _our_logits(model, idx):
    with torch.no_grad():
        return model.eval()(idx)[0]


def test_import_from_save_pretrained_dir_matches_transformers(hf_model, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path)
    assert ours.config == GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=64)
    assert ours.config.padded_vocab_size == 320
    diff = (_our_logits(ours, tokens) - _hf_logits(hf_model, tokens)).abs().max().item()
    assert diff < 1e-4
    assert torch.count_nonzero(ours.transformer.wte.weight[VOCAB:]) == 0  # padding rows are inert


def test_import_from_state_dict_and_bin_file(hf_model, tokens, tmp_path):
    expected = _hf_logits(hf_model, tokens)
    config = GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=64)
    from_state = load_hf_gpt2(hf_model.state_dict(), config=config)
    assert (_our_logits(from_state, tokens) - expected).abs().max().item() < 1e-4
    # legacy pickle format, read with weights_only=True; config.json found next to it
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(hf_model.config.to_json_string())
    from_bin = load_hf_gpt2(tmp_path)
    assert (_our_logits(from_bin, tokens) - expected).abs().max().item() < 1e-4


def test_bare_gpt2model_keys_and_mask_buffers(hf_model, tokens):
    """Original OpenAI-converted checkpoints use GPT2Model keys (no "transformer." prefix) and old ones carry
    attn.bias / attn.masked_bias mask buffers: both must load."""
    state = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    config = GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=64)
    ours = load_hf_gpt2(state, config=config)
    assert (_our_logits(ours, tokens) - _hf_logits(hf_model, tokens)).abs().max().item() < 1e-4


def test_export_loads_in_transformers_with_our_logits(tmp_path, tokens):
    torch.manual_seed(2)
    ours = GPT(GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=64))
    with torch.no_grad():  # non-trivial biases / LayerNorms
        for name, p in ours.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    export_hf(ours, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["vocab_size"] == VOCAB and config["tie_word_embeddings"] is True
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "export").eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # re-tied, not a random head
    assert (_hf_logits(hf, tokens) - _our_logits(ours, tokens)).abs().max().item() < 1e-4
    # and back: export -> import is lossless
    again = load_hf_gpt2(tmp_path / "export")
    for (name, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_export_bf16_and_refusals(tmp_path):
    ours = GPT(GPTConfig.from_preset("tiny", vocab_size=VOCAB, block_size=32))
    export_hf(ours, tmp_path / "bf16", dtype=torch.bfloat16)
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert weights["transformer.wte.weight"].shape == (VOCAB, 128)
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (128, 384)  # Conv1D layout (in, out)
    with pytest.raises(ValueError, match="biases"):
        export_hf(GPT(GPTConfig.from_preset("tiny", bias=False)), tmp_path / "nobias")
    assert not (tmp_path / "nobias" / "config.json").exists()


def test_bad_checkpoints_give_clear_errors(hf_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_hf_gpt2(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a transformers checkpoint"):
        load_hf_gpt2(tmp_path / "empty")
    # an architecture variant we do not implement is refused, naming the field and the file
    hf_model.save_pretrained(tmp_path / "relu")
    cfg_path = tmp_path / "relu" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "activation_function": "relu"}))
    with pytest.raises(ValueError, match=r"config.json: unsupported activation_function='relu'"):
        load_hf_gpt2(tmp_path / "relu")
    state = dict(hf_model.state_dict())
    config = GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=64)
    with pytest.raises(ValueError, match="untied"):
        load_hf_gpt2({**state, "lm_head.weight": torch.randn(VOCAB, 64)}, config=config)
    with pytest.raises(ValueError, match="missing.*h.1.mlp.c_fc.bias"):
        load_hf_gpt2({k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"}, config=config)
    with pytest.raises(ValueError, match="cannot infer n_head"):
        load_hf_gpt2(state)  # width 64 is not an OpenAI size and there is no config
    with pytest.raises(ValueError, match="c_fc.weight: checkpoint shape"):
        # a weight already in nn.Linear layout (not Conv1D) does not fit after the transpose
        load_hf_gpt2({**state, "transformer.h.0.mlp.c_fc.weight": state["transformer.h.0.mlp.c_fc.weight"].t()}, config)


def test_malicious_bin_is_not_unpickled(tmp_path):
    """A pickle that would run code on load is rejected by weights_only=True."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"transformer.wte.weight": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only"):
        load_hf_gpt2(tmp_path)


# ------------------------------------------------------------------------------------------- command line


def test_cli_export_sample_and_check(tmp_path, gpt2_files, capsys):
    """export (training checkpoint + tokenizer) -> a directory that transformers and `sample` both use."""
    import shutil

    from pipelines.hf import main
    from tokenizer import Tokenizer
    from train.checkpoint import save_checkpoint

    tok = Tokenizer.from_gpt2_files(*gpt2_files)
    torch.manual_seed(3)
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=tok.n_vocab, block_size=32))
    checkpoint = tmp_path / "ckpt.pt"
    save_checkpoint(checkpoint, {"step": 5, "model": model.state_dict(), "model_config": model.config.to_dict(),
                                 "tokenizer_fingerprint": tok.fingerprint})
    tok.save(tmp_path / "tokenizer.ljt.json")
    out = tmp_path / "hf"

    assert main(["export", str(checkpoint), str(out), "--tokenizer", str(tmp_path / "tokenizer.ljt.json")]) == 0
    assert "step 5" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 50256
    assert main(["check", str(out)]) == 0
    assert "max |our logits - transformers logits|" in capsys.readouterr().out

    args = ["--prompt", "hello world", "--max-new-tokens", "5", "--seed", "1"]
    assert main(["sample", str(out), *args]) == 0
    first = capsys.readouterr().out
    assert first.startswith("hello world") and len(first.splitlines()[0]) > len("hello world")
    # the GPT-2 directory layout (vocab.json + merges.txt) decodes the same way; no-cache gives the same text
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(out / name, plain / name)
    shutil.copy(gpt2_files[0], plain / "vocab.json")
    shutil.copy(gpt2_files[1], plain / "merges.txt")
    assert main(["sample", str(plain), *args, "--no-cache"]) == 0
    assert capsys.readouterr().out == first


def test_cli_export_rejects_non_checkpoints(tmp_path, capsys):
    from pipelines.hf import main

    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    assert main(["export", str(tmp_path / "x.pt"), str(tmp_path / "out")]) == 2  # one `error:` line, rc 2
    assert "not a checkpoint of this project" in capsys.readouterr().err
