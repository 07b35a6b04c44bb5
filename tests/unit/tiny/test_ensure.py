"""`ensure_tiny(name, seed=)`: another seed is another checkpoint (the toy world builds a teacher per world seed)."""

from __future__ import annotations

import json

from alarm.tiny import SEED, ensure_tiny


def test_another_seed_builds_another_folder_with_other_weights(tmp_path):
    default, other = ensure_tiny("whisper", tmp_path), ensure_tiny("whisper", tmp_path, seed=SEED + 1)
    assert default != other and "-seed1-" in other.name and "-seed" not in default.name
    assert json.loads((other / "tiny.json").read_text())["seed"] == SEED + 1
    assert (default / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert ensure_tiny("whisper", tmp_path, seed=SEED + 1) == other  # built once
