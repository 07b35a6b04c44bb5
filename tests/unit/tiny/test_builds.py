"""The nodes of a cluster whose ALARM_CACHE is not shared each build the tiny checkpoints they use, at the same
time: the builds must agree byte for byte, or a driver, its engines and its encoder actors would hold different
weights under one name. (A shared cache is `build_once`'s case: tests/unit/test_files.py.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def build_on_two_nodes(tmp_path: Path, name: str, timeout_s: float) -> tuple[dict, dict]:
    roots = [tmp_path / "node-a", tmp_path / "node-b"]
    procs = [subprocess.Popen([sys.executable, "-m", "alarm.tiny", "--out", str(r), name], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in roots]
    for p in procs:
        _, err = p.communicate(timeout=timeout_s)
        assert p.returncode == 0, err
    return digests(roots[0]), digests(roots[1])


def test_an_encoder_built_on_two_nodes_at_once_is_the_same_bytes(tmp_path):
    a, b = build_on_two_nodes(tmp_path, "whisper", 300)
    assert a and a == b


@pytest.mark.slow
def test_the_scripted_llm_trained_on_two_nodes_at_once_is_the_same_bytes(tmp_path):
    a, b = build_on_two_nodes(tmp_path, "qwen3-scripted", 1200)  # trained here: ~2.5 min on 2 cores
    assert a and a == b
