"""The command line: python -m tokenizer {encode,decode,info,convert}."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer import Tokenizer
from tokenizer.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_ljt(tmp_path_factory, gpt2_files) -> Path:
    """A small tokenizer file (GPT-2's first 2000 ranks) so each CLI call loads fast."""
    gpt2 = Tokenizer.from_gpt2_files(*gpt2_files)
    ranks = {t: r for t, r in gpt2.mergeable_ranks.items() if r < 2000}
    path = tmp_path_factory.mktemp("cli") / "tokenizer.ljt.json"
    return Tokenizer(ranks, {"<|endoftext|>": 2000}, name="small").save(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_decode_gpt2(capsys):
    assert run(capsys, "encode", "hello world") == (0, "31373 995\n", "")
    assert run(capsys, "decode", "31373", "995") == (0, "hello world\n", "")
    assert run(capsys, "decode", "[31373, 995]", "-n") == (0, "hello world", "")
    code, out, _ = run(capsys, "encode", "--json", "--allow-special", "hello <|endoftext|>")
    assert json.loads(out) == [31373, 220, 50256]
    code, out, _ = run(capsys, "encode", "--tokens", "hello world")
    assert out.splitlines() == ["31373\t'hello'", "995\t' world'"]


def test_encode_file_and_stdin(capsys, small_ljt, tmp_path, monkeypatch):
    tok = Tokenizer.load(small_ljt)
    text = "Some text,\n  with lines.\n"
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    code, out, _ = run(capsys, "encode", "-t", str(small_ljt), "--file", str(tmp_path / "in.txt"))
    assert code == 0 and [int(i) for i in out.split()] == tok.encode(text)
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(out))
    assert run(capsys, "decode", "-t", str(small_ljt), "-n") == (0, text, "")


def test_info(capsys, small_ljt):
    code, out, _ = run(capsys, "info", "--json", "-t", str(small_ljt))
    info = json.loads(out)
    tok = Tokenizer.load(small_ljt)
    assert code == 0
    assert info["n_vocab"] == 2001 and info["eot_id"] == 2000 and info["fingerprint"] == tok.fingerprint
    assert info["merges"] == 2000 - 256 and info["name"] == "small"
    code, out, _ = run(capsys, "info", "-t", str(small_ljt.parent))  # a directory holding tokenizer.ljt.json
    assert code == 0 and tok.fingerprint in out


def test_convert_all_formats(capsys, small_ljt, tmp_path):
    tok = Tokenizer.load(small_ljt)
    assert run(capsys, "convert", "-t", str(small_ljt), "--to", "tiktoken", str(tmp_path / "s.tiktoken"))[0] == 0
    assert Tokenizer.from_tiktoken(tmp_path / "s.tiktoken").fingerprint == tok.fingerprint
    assert run(capsys, "convert", "-t", str(tmp_path / "s.tiktoken"), "--to", "ljt", str(tmp_path / "s.json"))[0] == 0
    assert Tokenizer.load(tmp_path / "s.json").fingerprint == tok.fingerprint
    code, out, _ = run(capsys, "convert", "-t", str(small_ljt), "--to", "hf", str(tmp_path / "hf"))
    assert code == 0 and "wrote" in out
    assert (tmp_path / "hf" / "tokenizer.json").is_file() and (tmp_path / "hf" / "tokenizer_config.json").is_file()


def test_errors_are_reported_not_raised(capsys, tmp_path):
    code, _, err = run(capsys, "info", "-t", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err
    bad = tmp_path / "bad.ljt.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "info", "-t", str(bad))
    assert code == 2 and "bad.ljt.json" in err and "truncated" in err
    code, _, err = run(capsys, "decode", "99999999")
    assert code == 2 and "unknown token id 99999999" in err
    code, _, err = run(capsys, "decode", "12", "x")
    assert code == 2 and "integers" in err
    code, _, err = run(capsys, "encode", "<|endoftext|>")
    assert code == 2 and "disallowed special token" in err
    with pytest.raises(SystemExit):
        main(["convert", "--to", "xml", "out"])


def test_module_entry_point(small_ljt):
    result = subprocess.run([sys.executable, "-m", "tokenizer", "encode", "-t", str(small_ljt), "hello world"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(i) for i in Tokenizer.load(small_ljt).encode("hello world")]
