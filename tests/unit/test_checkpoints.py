"""The checkpoint resolver: local folders, hub ids (offline cache), s3:// against a local server, tiny://."""

import os

import pytest

from alarm.checkpoints import resolve_checkpoint, s3_filesystem
from alarm.errors import CheckpointError


def _checkpoint(folder, files=("config.json", "model.safetensors")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text(f"content of {name}")
    return folder


def test_local_folder_and_file_uri(tmp_path):
    ck = _checkpoint(tmp_path / "ck")
    assert resolve_checkpoint(str(ck), expect=["config.json"]) == ck.resolve()
    assert resolve_checkpoint(f"file://{ck}") == ck.resolve()


def test_missing_local_folder_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}/nope does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        resolve_checkpoint(str(tmp_path / "f"))


def test_missing_expected_file_names_it_and_what_is_there(tmp_path):
    ck = _checkpoint(tmp_path / "ck", ["config.json"])
    with pytest.raises(CheckpointError, match=r"lacks model.safetensors\|model.bin; it holds \['config.json'\]"):
        resolve_checkpoint(str(ck), expect=["config.json", "model.safetensors|model.bin"])
    assert resolve_checkpoint(str(ck), expect=["model.bin|config.json"])


def test_revision_only_for_hub_ids(tmp_path):
    with pytest.raises(CheckpointError, match="revision.*hub ids only"):
        resolve_checkpoint("s3://b/p", revision="abc")


def test_hub_id_from_offline_cache(tmp_path, monkeypatch):
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-model"
    _checkpoint(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    folder = resolve_checkpoint("acme/tiny-model", revision=sha, expect=["config.json"])
    assert folder.name == sha and (folder / "model.safetensors").exists()
    with pytest.raises(CheckpointError, match="acme/other@main"):
        resolve_checkpoint("acme/other")


def test_s3_prefix_fetched_once_and_atomically(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(tmp_path / "cache"))
    fs = s3_filesystem()
    fs.mkdir("ckpts")
    fs.pipe({"ckpts/run1/adapter/config.json": b"{}", "ckpts/run1/adapter/sub/w.bin": b"1234"})
    folder = resolve_checkpoint("s3://ckpts/run1/adapter", expect=["config.json"])
    assert (folder / "sub" / "w.bin").read_bytes() == b"1234"
    assert resolve_checkpoint("s3://ckpts/run1/adapter") == folder  # cached: same folder, no refetch
    # no staged folders left behind (the per-destination lock file stays by design: removing it would race)
    leftovers = [p for p in folder.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert leftovers == []
    fs.pipe({"ckpts/run1/adapter/sub/w.bin": b"5678"})  # an updated checkpoint is fetched again
    again = resolve_checkpoint("s3://ckpts/run1/adapter")
    assert again != folder and (again / "sub" / "w.bin").read_bytes() == b"5678"


def test_s3_missing_prefix_and_bucket(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(tmp_path / "cache"))
    s3_filesystem().mkdir("empty-bucket")
    with pytest.raises(CheckpointError, match="s3://empty-bucket/none is empty or does not exist"):
        resolve_checkpoint("s3://empty-bucket/none")
    with pytest.raises(CheckpointError, match="s3://no-such-bucket/x"):
        resolve_checkpoint("s3://no-such-bucket/x")


def test_unreachable_s3_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ALARM_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(CheckpointError, match="cannot list s3://b/p"):
        resolve_checkpoint("s3://b/p")
    assert not os.path.exists(tmp_path / "cache" / "s3") or not any((tmp_path / "cache" / "s3").iterdir())


def test_unknown_tiny_name():
    with pytest.raises(CheckpointError, match="unknown tiny checkpoint tiny://nope; valid: .*qwen3"):
        resolve_checkpoint("tiny://nope")


def test_pretrained_scheme(monkeypatch):
    with pytest.raises(CheckpointError, match="unknown pretrained checkpoint pretrained://nope; valid: whisper-tiny.en"):
        resolve_checkpoint("pretrained://nope")
    import alarm.tiny.pretrained as P

    calls = []
    monkeypatch.setitem(P.PRETRAINED, "whisper-tiny.en", lambda: calls.append(1) or P.pretrained_root())
    P.pretrained_root().mkdir(parents=True, exist_ok=True)
    assert resolve_checkpoint("pretrained://whisper-tiny.en") == P.pretrained_root() and calls == [1]
