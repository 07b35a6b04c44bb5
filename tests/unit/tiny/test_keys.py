"""Tiny checkpoints' cache keys: they move when what the bytes depend on moves, and only then (a docstring edit
in a module that produces the teacher's data must not cost a ~4-minute rebuild)."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import pytest

from alarm.tiny import builder, keys, teacher
from alarm.toy import world

EDITED = ("alarm.corpus.rows", "alarm.eval.prompts", "alarm.corpus.synthetic", "alarm.toy.world")


def key(name: str) -> str:
    return keys.cache_key(name, builder(name), 0)


@pytest.fixture(scope="module", autouse=True)
def fewer_steps():
    """The teacher's data digest over its first 150 batches, not all 1,500 (a tenth of the ~15 s each digest takes):
    what the key does with a digest is the same, and the reworded data below shows in the first batches."""
    full = teacher.training_batches
    with pytest.MonkeyPatch.context() as m:
        m.setattr(teacher, "training_batches", lambda tok, seed, steps=150: full(tok, seed, steps))
        yield


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of this module's own, so every data digest is computed here rather than read back."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def before(cache) -> str:
    """The teacher's key as the library stands."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ALARM_CACHE", str(cache))
        return key("qwen3-teacher")


def edit_sources(monkeypatch, modules=EDITED, tag: str | None = "edited") -> None:
    """What an edit of `modules` does to the library as the key sees it: their source reads differently and, with
    a `tag`, the library's source digest (the key of remembered data digests) changes."""
    getsource = inspect.getsource

    def edited(obj):
        text = getsource(obj)
        return text + '\n"""edited"""\n' if getattr(obj, "__name__", None) in modules else text

    monkeypatch.setattr(inspect, "getsource", edited)
    if tag is not None:
        monkeypatch.setattr(keys, "library_digest", lambda: tag)


def test_a_docstring_edit_where_the_data_comes_from_keeps_the_teacher_key(cache, before, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(cache))
    edit_sources(monkeypatch)
    assert key("qwen3-teacher") == before
    assert (cache / "tiny" / ".keys" / "qwen3-teacher-data-0-edited").is_file()  # the data digest was made again


def test_a_change_of_the_training_data_changes_the_teacher_key(cache, before, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(cache))
    monkeypatch.setitem(world.LEVELS, "quiet", "soft")  # the descriptions' word for a quiet clip
    edit_sources(monkeypatch, ("alarm.toy.world",), tag="reworded")
    assert key("qwen3-teacher") != before


def test_the_teacher_key_covers_its_code_and_recipe(cache, before, monkeypatch):
    monkeypatch.setenv("ALARM_CACHE", str(cache))  # the data digest is remembered there for this source
    for module in ("alarm.tiny.teacher", "alarm.tiny.lm"):
        with monkeypatch.context() as m:
            edit_sources(m, (module,), tag=None)  # the data digest stays remembered: only the code moved
            assert key("qwen3-teacher") != before, module
    monkeypatch.setitem(teacher.TEACHER_ARCH, "num_hidden_layers", 5)
    assert key("qwen3-teacher") != before


def test_encoder_keys_cover_the_record_and_the_writers(monkeypatch):
    from alarm.encoders import FAMILIES

    before = key("sslam")
    monkeypatch.setitem(FAMILIES["sslam"].tiny_config, "depth", 3)
    assert key("sslam") != before
    monkeypatch.undo()
    edit_sources(monkeypatch, ("alarm.encoders.checkpoint",), tag=None)
    assert key("sslam") != before
    assert key("sslam") != key("muq")


def test_portable_numerics_move_every_key_and_native_keeps_them(cache, before, monkeypatch):
    from alarm import numerics

    monkeypatch.setenv("ALARM_CACHE", str(cache))
    native = {name: key(name) for name in ("qwen3-teacher", "qwen3-scripted", "sslam")}
    assert native["qwen3-teacher"] == before
    for k, v in numerics.PORTABLE.items():  # the environment portable mode sets: other kernels, other bytes
        monkeypatch.setenv(k, v)
    assert all(key(name) != native[name] for name in native)
    monkeypatch.delenv("MKL_CBWR")
    assert {name: key(name) for name in native} == native


def test_another_vendors_cpu_moves_portable_keys_only(cache, before, monkeypatch):
    """MKL runs its AUTO branch on a CPU of another vendor than Intel: a portable build there is not the Intel
    machines' bytes and gets a key of its own; Intel keys and native keys stay as they were."""
    from alarm import numerics

    monkeypatch.setenv("ALARM_CACHE", str(cache))
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "AuthenticAMD")
    assert key("qwen3-teacher") == before  # native: the CPU's own kernels either way
    for k, v in numerics.PORTABLE.items():
        monkeypatch.setenv(k, v)
    amd = key("qwen3-teacher")
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma", "avx512f"})
    assert key("qwen3-teacher") != amd  # MKL's AUTO dispatch differs by CPU: an AVX-512 AMD CPU is another
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "GenuineIntel")
    intel = key("qwen3-teacher")
    assert len({amd, intel, before}) == 3
    hashed = []  # and the Intel key is the mode's alone, as before vendors were told apart
    real = keys.hashlib.sha256
    monkeypatch.setattr(keys, "hashlib", SimpleNamespace(sha256=lambda *a: _Recorder(real(*a), hashed)))
    assert key("qwen3-teacher") == intel and not any(part[8:].startswith(b"portable, MKL") for part in hashed)
    assert any(json.dumps(numerics.PORTABLE, sort_keys=True).encode() in part for part in hashed)
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "AuthenticAMD")  # what the AMD key hashed beside it
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    hashed.clear()
    assert key("qwen3-teacher") == amd
    assert any(part[8:].startswith(b"portable, MKL AUTO (AuthenticAMD family") for part in hashed)


class _Recorder:
    def __init__(self, h, parts: list):
        self.h, self.parts = h, parts

    def update(self, data: bytes) -> None:
        self.parts.append(bytes(data))
        self.h.update(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()

    def digest(self) -> bytes:
        return self.h.digest()
