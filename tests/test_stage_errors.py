"""Every data-stage command ends in one of three ways: success, one `error:` line with status 2 for
what the user can fix (a broken manifest or progress file, a corrupt tokenizer, a bad option, a full
disk, a directory it may not write), or a traceback for a bug. Real files, real `python -m` where the
command line matters, a real full file system where the machine allows mounting one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from stage_helpers import NAME, REPO, copy_project, error_line, original_project, python_m, shard_bytes, stage_dir

from contract.manifest import ManifestError
from contract.shard_format import ShardFormatError, ShardReader
from pipelines import inspect as inspect_cli
from pipelines import learn_tokenizer, shards


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return original_project(tmp_path_factory)


@pytest.fixture
def project(original, tmp_path):
    return copy_project(original, tmp_path)


def _edit_json(path: Path, edit) -> None:
    """Change a JSON file the way a person or a broken tool would: no checksum is updated."""
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


# ------------------------------------------------------------------------------ broken manifests
def test_shards_stage_on_a_tokenizer_manifest_without_a_key(project, tmp_path, capsys):
    _edit_json(stage_dir(tmp_path, "tokenizer") / "manifest.json", lambda m: m["tokenizer"].pop("n_vocab"))
    assert shards.main(["--config", str(project), "--force"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "tokenizer/manifest.json: key 'tokenizer.n_vocab' is missing; `make tokenizer` rebuilds it" in line
    # and the advice is right: the tokenizer stage notices its manifest is broken and rebuilds it
    assert learn_tokenizer.main(["--config", str(project), "--no-progress"]) == 0
    assert "key 'tokenizer.n_vocab' is missing: retraining" in capsys.readouterr().out
    assert shards.main(["--config", str(project), "--no-progress"]) == 0


def test_tokenizer_stage_on_a_raw_manifest_of_the_wrong_shape(project, tmp_path, capsys):
    _edit_json(stage_dir(tmp_path, "raw") / "manifest.json", lambda m: m.update(outputs={"part": 1}))
    assert learn_tokenizer.main(["--config", str(project), "--force"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "raw/manifest.json: key 'outputs' must be a list, got object" in line and "`make data`" in line


def test_inspect_and_the_reader_on_a_shard_manifest_with_a_wrong_type(project, tmp_path, capsys):
    shard_dir = stage_dir(tmp_path, "shards")
    _edit_json(shard_dir / "manifest.json", lambda m: m["splits"]["train"]["shards"][1].update(tokens="20000"))
    with pytest.raises(ManifestError, match=r"key 'splits\.train\.shards\[1\]\.tokens' must be an integer"):
        ShardReader(shard_dir)
    with pytest.raises(ShardFormatError):   # one error, both kinds: training code catches ShardFormatError
        ShardReader(shard_dir)
    assert inspect_cli.main([str(shard_dir)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "shards/manifest.json: key 'splits.train.shards[1].tokens'" in line and "`make shards`" in line
    _edit_json(shard_dir / "manifest.json", lambda m: m.pop("splits"))
    result = python_m("pipelines.inspect", str(shard_dir))   # the real command: one line, status 2
    assert result.returncode == 2 and "key 'splits' is missing" in error_line(result.stderr)


def test_a_journal_line_of_the_wrong_shape_is_named(project, tmp_path, capsys):
    journal = stage_dir(tmp_path, "shards") / shards.PROGRESS
    lines = journal.read_text().splitlines()
    record = json.loads(lines[2])
    record["shard"]["resume"] = "somewhere"
    journal.write_text("\n".join([*lines[:2], json.dumps(record), *lines[3:]]) + "\n")
    (stage_dir(tmp_path, "shards") / "manifest.json").unlink()   # so the stage reads its journal
    assert shards.main(["--config", str(project)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{shards.PROGRESS}:3: key 'shard.resume' must be an object or null" in line
    assert "`make shards FORCE=1`" in line
    assert shards.main(["--config", str(project), "--no-progress", "--force"]) == 0   # which works


# ------------------------------------------------------------------ the tokenizer, bad options, --help
def test_inspect_with_a_corrupt_tokenizer_file(project, tmp_path, capsys):
    tok = stage_dir(tmp_path, "tokenizer") / "tokenizer.ljt.json"
    tok.write_bytes(tok.read_bytes()[:-100])
    assert inspect_cli.main([str(stage_dir(tmp_path, "shards"))]) == 2
    line = error_line(capsys.readouterr().err)
    assert "tokenizer.ljt.json: not a valid tokenizer file" in line and "`make shards`" in line


def test_inspect_without_verification_on_a_damaged_shard(project, tmp_path, capsys):
    victim = stage_dir(tmp_path, "shards") / "train_000002.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF   # the high byte of the last uint16 id: far outside a 300-token vocabulary
    victim.write_bytes(bytes(data))
    assert inspect_cli.main([str(stage_dir(tmp_path, "shards")), "--no-verify"]) == 2
    assert "train_000002.npy: holds id" in error_line(capsys.readouterr().err)
    assert inspect_cli.main([str(stage_dir(tmp_path, "shards"))]) == 1   # verified: the mismatch, no crash
    assert "MISMATCH in train_000002.npy" in capsys.readouterr().out


def test_bad_option_values_are_one_line(original):
    shard_dir = str(stage_dir(original, "shards"))
    for args, message in [(["--docs", "-1"], "argument --docs: must not be negative, got -1"),
                          (["--top", "many"], "argument --top: expected a whole number, got 'many'")]:
        result = python_m("pipelines.inspect", shard_dir, *args)
        assert result.returncode == 2
        assert error_line(result.stderr) == f"error: {message} (see python -m pipelines.inspect --help)"
    result = python_m("pipelines.shards", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in error_line(result.stderr)


def test_help_shows_the_command_a_user_types():
    for module in ("pipelines.data", "pipelines.learn_tokenizer", "pipelines.shards", "pipelines.inspect"):
        result = python_m(module, "--help")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m {module} "), result.stdout


# ---------------------------------------------------------------------------------- a full disk
def _fail_writes_after(monkeypatch, module, name: str, calls: int) -> None:
    """Let `calls` calls of module.name(f, ...) through, then make every call write some bytes and hit ENOSPC."""
    real = getattr(module, name)
    count = {"n": 0}

    def full_disk(f, *args, **kwargs):
        count["n"] += 1
        if count["n"] <= calls:
            return real(f, *args, **kwargs)
        f.write(b"\0" * 100)   # some bytes land before the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, name, full_disk)


def test_disk_full_in_the_shards_stage_then_resume(project, original, tmp_path, capsys, monkeypatch):
    from contract import shard_format

    _fail_writes_after(monkeypatch, shard_format, "_write_npy", calls=5)
    assert shards.main(["--config", str(project), "--no-progress", "--force"]) == 2
    line = error_line(capsys.readouterr().err)
    assert line == f"error: {stage_dir(tmp_path, 'shards')}: no space left on the device"
    out = stage_dir(tmp_path, "shards")
    assert not list(out.rglob("*.tmp")) and not (out / "manifest.json").exists()   # nothing half-written
    monkeypatch.undo()   # space freed: the rerun keeps the 5 shards and ends with the same bytes
    assert shards.main(["--config", str(project), "--no-progress"]) == 0
    assert "resuming after 5 finished shard(s)" in capsys.readouterr().out
    assert shard_bytes(tmp_path) == shard_bytes(original)


def test_disk_full_in_the_tokenizer_stage(project, original, tmp_path, capsys, monkeypatch):
    from tokenizer import atomic_write

    real = atomic_write.publish

    def full_disk(tmp, path, durable=True):
        if Path(path).name == "tokenizer.tiktoken":
            Path(tmp).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tmp, path, durable)

    monkeypatch.setattr(atomic_write, "publish", full_disk)
    assert learn_tokenizer.main(["--config", str(project), "--no-progress", "--force"]) == 2
    out = stage_dir(tmp_path, "tokenizer")
    assert error_line(capsys.readouterr().err) == f"error: {out}: no space left on the device"   # which disk
    assert not list(out.rglob("*.tmp")) and not (out / "manifest.json").exists()
    monkeypatch.undo()
    assert learn_tokenizer.main(["--config", str(project), "--no-progress"]) == 0
    assert (out / "tokenizer.tiktoken").read_bytes() == (stage_dir(original, "tokenizer") / "tokenizer.tiktoken"
                                                           ).read_bytes()


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs a mount namespace (unshare -r -m) for a tiny tmpfs")
def test_disk_full_on_a_real_tiny_file_system(project, tmp_path):
    """The shard directory is a 64 KiB tmpfs: the kernel itself says ENOSPC. The mount lives only in
    the child's namespace, so the child lists what is left in it before exiting."""
    out = stage_dir(tmp_path, "shards")
    shutil.rmtree(out)
    out.mkdir()
    script = ('mount -t tmpfs -o size=64k tmpfs "$1" && "$2" -m pipelines.shards --config "$3" --no-progress; '
              'rc=$?; ls -A "$1"; exit $rc')
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script, "sh", str(out),
                             sys.executable, str(project)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).endswith("no space left on the device")
    left = result.stdout.split()
    assert left and "manifest.json" not in left and not [n for n in left if n.endswith(".tmp")]


# ------------------------------------------------------------------------------- permission denied
def _unprivileged(*args: str) -> subprocess.CompletedProcess:
    """`python -m args...` held to file modes. Root ignores them, so as root the command runs without
    any capability (setpriv --bounding-set=-all): still uid 0, but with no right to override a mode."""
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_directories_it_may_not_write_or_read(original):
    base = Path(tempfile.mkdtemp(prefix="llmj-perm-"))
    artifacts, recipe_dir = base / "artifacts", base / "artifacts" / NAME
    try:
        recipe = copy_project(original, base)
        shards_dir = recipe_dir / "shards"
        for p in [*recipe_dir.rglob("*"), recipe_dir]:   # everything read-only, as shared on a cluster
            p.chmod(0o555 if p.is_dir() else 0o444)
        # up to date: checking needs no writing (the stage lock opens its existing file read-only)
        result = _unprivileged("pipelines.shards", "--config", str(recipe), "--no-progress")
        assert result.returncode == 0 and "is up to date" in result.stdout, result.stderr
        # a stage that must write there says where it may not, in one line
        result = _unprivileged("pipelines.shards", "--config", str(recipe), "--no-progress", "--force")
        assert result.returncode == 2, result.stderr
        assert error_line(result.stderr) == f"error: {shards_dir / 'manifest.json'}: permission denied"
        # an unreadable manifest is one line in inspect too
        (shards_dir / "manifest.json").chmod(0)
        result = _unprivileged("pipelines.inspect", str(shards_dir))
        assert result.returncode == 2
        assert error_line(result.stderr) == f"error: {shards_dir / 'manifest.json'}: permission denied"
        # and a stage whose directory cannot even be created
        for p in [*recipe_dir.rglob("*"), recipe_dir]:
            p.chmod(0o755)
        shutil.rmtree(recipe_dir)
        artifacts.chmod(0o555)
        result = _unprivileged("pipelines.data", "--config", str(recipe), "--no-progress")
        assert result.returncode == 2
        assert error_line(result.stderr) == f"error: {recipe_dir}: permission denied"
    finally:
        for p in [artifacts, *artifacts.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(base)
