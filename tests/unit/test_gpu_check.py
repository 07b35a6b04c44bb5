"""The GPU check's dry run (meta device, every stage's shapes) and its behaviour without a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_gpu_check():
    """bench/gpu_check.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    yield load_gpu_check()
    del sys.modules["gpu_check"]


def test_the_dry_run_builds_every_stage_at_full_size_and_checks_its_shapes():
    p = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout
    for line in ("4.02 B parameters", "whisper on meta  ", "states (4, 2, 1500, 1280)", "states (5, 2, 1500, 1024)",
                 "states (3, 2, 750, 1024)", "states (3, 2, 512, 768)", "fused audio (2, 750, 2560)",
                 "7 deployments, 0.95 GPU, 7 CPUs; a 10 s clip is 252 positions"):
        assert line in p.stdout, line


def test_a_stage_that_raises_is_a_fail_row_and_the_check_fails(gpu_check, monkeypatch, capsys):
    def broken(dry, cache):
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(gpu_check.STAGES, "encoders", broken)
    assert gpu_check.main(["--dry-run", "--stages", "encoders"]) == 1
    out = capsys.readouterr().out
    assert "RuntimeError: no such kernel" in out and "FAIL" in out


def test_a_wrong_shape_is_named(gpu_check):
    with pytest.raises(AssertionError, match=r"llm: output head: expected shape \(2, 3\), found \(2, 4\)"):
        gpu_check.expect((2, 4), (2, 3), "llm: output head")


def test_an_unknown_stage_is_a_usage_error(gpu_check):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--dry-run", "--stages", "llm,nope"])
    assert e.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_it_skipped(gpu_check, capsys):
    assert gpu_check.main([]) == 0
    assert "skipped, no CUDA GPU" in capsys.readouterr().out


def test_the_training_stage_runs_its_steps_on_the_tiny_model(gpu_check):
    """The GPU stage's code on CPU: the tiny preset's adapter over the tiny LLM, bf16 autocast, a finite loss."""
    from alarm.config import ModelConfig, load_config
    from alarm.tiny import ensure_tiny

    cfg = load_config(ModelConfig, "tiny", [], section="model")
    (row,) = gpu_check.train_steps(cfg, ensure_tiny("qwen3-scripted"), "cpu", steps=3)
    assert row.status == "ok" and row.case.startswith("tiny, 3 steps"), row



@pytest.mark.parametrize("kind", ["whisper", "w2vbert", "muq", "sslam"])
def test_the_encoder_stage_runs_each_family_in_bf16_on_the_tiny_config(gpu_check, kind):
    """The GPU stage's code on CPU: the family's builder, random weights, bf16, 30 s clips through forward."""
    from alarm.encoders import family

    fam = family(kind)
    (row,) = gpu_check.encoder_throughput(kind, fam.tiny_config, fam.tiny_layers, "cpu", batches=(2,), reps=1)
    assert row.status == "ok" and row.case == f"{kind} bf16, batch 2" and row.value.endswith("clips/s (30 s clips)")


@pytest.mark.parametrize("kind, depth", [("whisper", "encoder_layers"), ("w2vbert", "num_hidden_layers"),
                                         ("muq", "encoder_depth"), ("sslam", "depth")])
def test_an_encoder_builder_writes_the_config_it_is_given(tmp_path, kind, depth):
    """The serve stage writes full-size random encoders with the tiny builders given the family's real config."""
    from alarm.encoders import family
    from alarm.encoders.checkpoint import load_encoder
    from alarm.tiny import builder

    cfg = {**family(kind).tiny_config, depth: 3}
    builder(kind)(tmp_path, 0, cfg)
    assert json.loads((tmp_path / "config.json").read_text())[depth] == 3
    last = 2 if kind == "sslam" else 3  # SSLAM taps block outputs, the others hidden states after the embedding
    load_encoder(kind, str(tmp_path), layers=[last])  # a tap that exists only with the third layer


def test_the_serving_layout_must_fit_one_gpu(gpu_check, tmp_path):
    from alarm.config import ServeConfig, load_config

    base = gpu_check.serve_overrides(tmp_path)
    cfg = load_config(ServeConfig, "alarm-ca", base, section="serve")
    assert gpu_check.serving_layout(cfg).startswith("7 deployments, 0.95 GPU")
    wide = load_config(ServeConfig, "alarm-ca", [*base, "deployments.llm.num_gpus=1"], section="serve")
    with pytest.raises(AssertionError, match="ask for 1.45 GPUs"):
        gpu_check.serving_layout(wide)
    short = load_config(ServeConfig, "alarm-ca", [*base, "llm.max_model_len=256"], section="serve")
    with pytest.raises(AssertionError, match="needs 636 positions"):
        gpu_check.serving_layout(short)


def test_the_llm_stage_says_what_more_sequences_in_flight_gain(gpu_check):
    rows = gpu_check.batching_rows({1: 50.0, 16: 600.0, 64: 1800.0})
    assert [(r.case, r.value) for r in rows] == [("a token's cost at 16 seqs / at 64 seqs", "3.00x")]
    assert gpu_check.batching_rows({1: 50.0}) == [] and gpu_check.batching_rows({16: 0.0, 64: 9.0}) == []
