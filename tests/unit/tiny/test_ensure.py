"""`ensure_tiny(name, seed=)`: another seed is another checkpoint (the toy world builds a teacher per world seed)."""

from __future__ import annotations

import json

import pytest

from alarm.tiny import SEED, ensure_tiny


def test_another_seed_builds_another_folder_with_other_weights(tmp_path):
    default, other = ensure_tiny("whisper", tmp_path), ensure_tiny("whisper", tmp_path, seed=SEED + 1)
    assert default != other and "-seed1-" in other.name and "-seed" not in default.name
    assert json.loads((other / "tiny.json").read_text())["seed"] == SEED + 1
    assert (default / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert ensure_tiny("whisper", tmp_path, seed=SEED + 1) == other  # built once


def test_the_default_build_leaves_the_teacher_to_first_use(monkeypatch, capsys):
    """`python -m alarm.tiny` (scripts/setup.sh) builds what the tiny presets and the test suite use; the toy
    teacher, minutes of training, only when named or with --all."""
    import alarm.tiny as tiny

    built: list[str] = []
    monkeypatch.setattr(tiny, "ensure_tiny", lambda name, root=None: built.append(name) or f"/c/{name}")
    tiny.main([])
    assert "qwen3-teacher" not in built and {"qwen3", "qwen3-scripted", "whisper"} <= set(built)
    assert "qwen3-teacher: not built now" in capsys.readouterr().out
    built.clear()
    tiny.main(["--all"])
    assert set(built) == set(tiny.builders())
    built.clear()
    tiny.main(["qwen3-teacher"])
    assert built == ["qwen3-teacher"]


def test_an_unknown_name_is_refused_before_anything_is_built(monkeypatch, capsys):
    import alarm.tiny as tiny

    monkeypatch.setattr(tiny, "ensure_tiny", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(SystemExit) as exc:
        tiny.main(["qwen3", "qwen4"])
    assert exc.value.code == 2 and "unknown checkpoint qwen4; valid:" in capsys.readouterr().err
