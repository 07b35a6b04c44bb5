"""The whole model core on tiny checkpoints: waveform -> features -> encoders -> adapter -> prompt embeddings."""

import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
import soundfile as sf
import torch

from alarm.config import ModelConfig, load_config
from alarm.model.alarm_model import AlarmModel, ensemble_prompt
from alarm.model.audio_adapter import audio_token_count
from alarm.model.checkpoint import save_adapter
from alarm.types import Waveform

PRESETS = ["tiny", "tiny-p", "tiny-whisper"]


def tone(duration_s: float, sr: int = 44100, f: float = 440.0, seed: int = 0) -> Waveform:
    t = np.arange(round(duration_s * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return Waveform((0.3 * np.sin(2 * np.pi * f * t) + noise).astype(np.float32), sr)


@pytest.fixture(scope="module", params=PRESETS)
def model(request):
    torch.manual_seed(0)
    return AlarmModel.build(load_config(ModelConfig, request.param))


@pytest.mark.parametrize("duration", [0.3, 10.0, 31.0, 59.9])
def test_audio_positions_follow_25_hz_bookkeeping(model, duration):
    (block,) = model.audio_embeds([tone(duration)])
    assert block.shape == (audio_token_count(model.cfg, duration, 44100), model.cfg.llm.hidden_size)
    extra = 2 + (62 if model.cfg.fusion.kind == "perceiver" else 0)
    assert abs((block.shape[0] - extra) - 25 * duration) <= 1


def test_bookkeeping_is_exact_for_odd_lengths_and_rates(model):
    rng = np.random.default_rng(1)
    for _ in range(6):
        sr = int(rng.choice([8000, 16000, 22050, 24000, 44100, 48000]))
        dur = round(float(rng.uniform(0.05, 4.0)), 4)
        (block,) = model.audio_embeds([tone(dur, sr)])
        assert block.shape[0] == audio_token_count(model.cfg, dur, sr), (sr, dur)


def test_batched_equals_one_at_a_time(model):
    waves = [tone(1.3, f=300, seed=1), tone(11.7, f=900, seed=2), tone(0.4, sr=16000, f=2000, seed=3)]
    batched = model.audio_embeds(waves)
    for w, b in zip(waves, batched, strict=True):
        (single,) = model.audio_embeds([w])
        assert single.shape == b.shape
        torch.testing.assert_close(single, b, rtol=1e-4, atol=1e-5)


def test_prompt_places_audio_block(model):
    p = model.prompt("What do you hear?", tone(2.0), system=model.cfg.system_prompt)
    (s, e), = p.audio_spans
    assert e - s == audio_token_count(model.cfg, 2.0, 44100)
    tok = model.builder.tok
    assert tok.decode(p.input_ids[:s]).endswith("<|im_start|>user\n")
    assert tok.decode(p.input_ids[e:]).startswith("What do you hear?<|im_end|>")


def test_trained_adapter_round_trips_through_build(tmp_path):
    cfg = load_config(ModelConfig, "tiny-whisper")
    a = AlarmModel.build(cfg)
    with torch.no_grad():
        for p in a.adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_adapter(a.adapter, cfg, tmp_path / "adapter")
    b = AlarmModel.build(cfg, adapter=tmp_path / "adapter")
    w = tone(3.0)
    torch.testing.assert_close(a.audio_embeds([w])[0], b.audio_embeds([w])[0], rtol=0, atol=0)


def test_adapter_from_s3(tmp_path, s3_endpoint):
    from alarm.checkpoints import s3_filesystem

    cfg = load_config(ModelConfig, "tiny-whisper")
    a = AlarmModel.build(cfg)
    save_adapter(a.adapter, cfg, tmp_path / "adapter")
    fs = s3_filesystem()
    fs.mkdir("models")
    # a prefix no earlier run used, so the adapter is fetched, not found in the cache (an empty ALARM_CACHE
    # would also rebuild the tiny checkpoints: a minute of this test)
    run = f"models/{uuid.uuid4().hex}/adapter"
    fs.put(str(tmp_path / "adapter"), run, recursive=True)
    b = AlarmModel.build(cfg, adapter=f"s3://{run}")
    w = tone(1.0)
    torch.testing.assert_close(a.audio_embeds([w])[0], b.audio_embeds([w])[0], rtol=0, atol=0)


def test_fusion_stage_loads_and_freezes_single_encoder_adapter(tmp_path):
    single_cfg = load_config(ModelConfig, "tiny-whisper")
    single = AlarmModel.build(single_cfg)
    save_adapter(single.adapter, single_cfg, tmp_path / "whisper")
    fused_cfg = load_config(ModelConfig, "tiny", [f"encoders.whisper.adapter_init={tmp_path / 'whisper'}",
                                                  "encoders.whisper.adapter_frozen=true"])
    fused = AlarmModel.build(fused_cfg)
    for name, p in single.adapter.adapters["whisper"].state_dict().items():
        assert torch.equal(fused.adapter.adapters["whisper"].state_dict()[name], p), name
    assert not any(p.requires_grad for p in fused.adapter.adapters["whisper"].parameters())
    fused.adapter.train()
    assert not fused.adapter.adapters["whisper"].training  # BatchNorm statistics stay frozen


def test_ensemble_prompt_concatenates_blocks():
    m1 = AlarmModel.build(load_config(ModelConfig, "tiny"))
    m2 = AlarmModel.build(load_config(ModelConfig, "tiny-whisper"))
    w = tone(2.0)
    p = ensemble_prompt([m1, m2], "Which instrument?", w)
    sizes = [e - s for s, e in p.audio_spans]
    assert sizes == [audio_token_count(m1.cfg, 2.0, 44100), audio_token_count(m2.cfg, 2.0, 44100)]


def test_embed_command(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(2.0).samples, 44100)
    out = subprocess.run([sys.executable, "-m", "alarm.embed", str(wav), "--prompt", "Hi?",
                          "--out", str(tmp_path / "p.safetensors"), "--preset", "tiny-whisper"],
                         capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["audio_positions"] == audio_token_count(load_config(ModelConfig, "tiny-whisper"), 2.0, 44100)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "p.safetensors"), "pt") as f:
        assert f.get_tensor("prompt_embeds").shape == (summary["prompt_positions"], 64)
        assert ModelConfig.model_validate_json(f.metadata()["config"]).name == "tiny-whisper"
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot audio")
    err = subprocess.run([sys.executable, "-m", "alarm.embed", str(bad)], capture_output=True, text=True)
    assert err.returncode == 1 and "error:" in err.stderr and "bad.wav" in err.stderr
