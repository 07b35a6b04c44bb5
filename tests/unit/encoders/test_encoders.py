"""The four frozen encoders on tiny checkpoints (real on-disk formats): shapes, chunking, masks, freezing,
loading errors, deterministic tiny builds, and the full-size architectures on the meta device."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from alarm.audio.features import collate, extract_features, feature_spec
from alarm.encoders import FAMILIES, family
from alarm.encoders.base import Encoder, FrozenEncoder
from alarm.encoders.checkpoint import (
    build_encoder_meta,
    checkpoint_feature_dim,
    checkpoint_format,
    load_encoder,
)
from alarm.errors import CheckpointError, CheckpointMismatch
from alarm.types import Waveform

torch.set_num_threads(1)
KINDS = ["muq", "sslam", "w2vbert", "whisper"]
ENCODERS = {k: FAMILIES[k] for k in KINDS}


def build_tiny(kind: str, out: Path, seed: int) -> None:
    family(kind).code().build_tiny(out, seed)


def real_facts(kind: str) -> tuple[int, int]:
    """(hidden size, number of hidden states) of the real checkpoint, from its config and format."""
    fam, fmt = checkpoint_format(kind)
    return fam.real_config[fmt.hidden], fam.real_config[fmt.depth] + fmt.states_per_depth
DURATIONS = [0.3, 10.0, 31.0, 59.9]  # seconds: odd lengths, 1-3 chunks


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    for kind in KINDS:
        build_tiny(kind, root / kind, 0)
    return {kind: root / kind for kind in KINDS}


@pytest.fixture(scope="module")
def encoders(tiny_dirs):
    return {k: load_encoder(k, tiny_dirs[k], ENCODERS[k].tiny_layers, hidden_size=16) for k in KINDS}


def batch(kind: str, durations: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features of the right shape, right-padded to a chunk multiple (no audio module needed)."""
    spec = ENCODERS[kind]
    lens = torch.tensor([round(d * spec.input_rate) for d in durations])
    T = math.ceil(int(lens.max()) / spec.chunk) * spec.chunk
    g = torch.Generator().manual_seed(seed)
    shape = (len(durations), T) if spec.feature_dim is None else (len(durations), T, spec.feature_dim)
    feats = torch.randn(shape, generator=g)
    valid = torch.arange(T)[None, :] < lens[:, None]
    feats = feats * (valid if spec.feature_dim is None else valid[..., None])  # zero padding (pad_sequence)
    return feats, lens


def expected_out_lens(kind: str, lens: torch.Tensor) -> torch.Tensor:
    return {"whisper": lens // 2, "w2vbert": lens, "muq": lens // 960, "sslam": lens // 2}[kind]


# ---------------------------------------------------------------------------------------------------------------
# shapes and chunking


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_lengths_on_odd_durations(encoders, kind):
    enc = encoders[kind]
    assert isinstance(enc, Encoder) and isinstance(enc, FrozenEncoder) and enc.name == kind
    feats, lens = batch(kind, DURATIONS)
    states, out_lens = enc(feats, lens)
    want = expected_out_lens(kind, lens)
    assert out_lens.dtype == torch.int64 and out_lens.tolist() == want.tolist()
    assert torch.equal(enc.output_lengths(lens), out_lens)
    L = len(ENCODERS[kind].tiny_layers)
    assert states.shape == (L, len(DURATIONS), int(want.max()), 16)  # (L, B, T, D), trimmed to the longest
    assert torch.isfinite(states).all()
    assert not states.requires_grad


@pytest.mark.parametrize("kind", KINDS)
def test_frame_arithmetic_matches_the_front_end_and_the_encoder(encoders, kind):
    from alarm.model.audio_adapter import encoder_frames

    rng = np.random.default_rng(0)
    for rate, duration in [(16000, 0.3), (44100, 3.7), (22050, 10.01), (48000, 0.0201)]:
        wave = Waveform((0.1 * rng.standard_normal(round(rate * duration))).astype(np.float32), rate)
        _, n = extract_features(kind, wave)
        assert encoders[kind].output_lengths(torch.tensor([n])).item() == encoder_frames(kind, duration, rate)


def test_rates_match_the_reference_table():
    # 30 s of audio: (3000, 128) / (1500, 160) / 720000 / (3072, 128) in -> 1500 / 1500 / 750 / 1536 out
    for kind, n_in, n_out in [("whisper", 3000, 1500), ("w2vbert", 1500, 1500), ("muq", 720_000, 750),
                              ("sslam", 3072, 1536)]:
        assert expected_out_lens(kind, torch.tensor([n_in])).item() == n_out


@pytest.mark.parametrize("kind", KINDS)
def test_layers_come_back_in_the_order_given(tiny_dirs, encoders, kind):
    layers = ENCODERS[kind].tiny_layers
    rev = load_encoder(kind, tiny_dirs[kind], layers[::-1])
    feats, lens = batch(kind, [0.3, 10.0])
    a, _ = encoders[kind](feats, lens)
    b, _ = rev(feats, lens)
    torch.testing.assert_close(a, b.flip(0))


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_are_encoded_independently(encoders, kind):
    spec, enc = ENCODERS[kind], encoders[kind]
    feats, lens = batch(kind, [(2 * spec.chunk) / spec.input_rate])  # exactly two full chunks
    other = feats.clone()
    other[:, spec.chunk:] = torch.randn_like(other[:, spec.chunk:])  # new audio in chunk 2 only
    a, _ = enc(feats, lens)
    b, _ = enc(other, lens)
    t1 = a.shape[2] // 2  # outputs of chunk 1
    torch.testing.assert_close(a[:, :, :t1], b[:, :, :t1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, :, t1:], b[:, :, t1:])


@pytest.mark.parametrize("kind", KINDS)
def test_padding_chunks_past_the_longest_item_are_skipped(encoders, kind):
    enc = encoders[kind]
    feats, lens = batch(kind, [10.0, 0.3])
    padded = torch.cat([feats, torch.zeros_like(feats)], dim=1)  # an extra all-padding chunk
    a, la = enc(feats, lens)
    b, lb = enc(padded, lens)
    assert torch.equal(la, lb)
    torch.testing.assert_close(a, b)


def test_w2vbert_outputs_do_not_depend_on_batch_padding(encoders):
    enc = encoders["w2vbert"]
    long_feats, long_lens = batch("w2vbert", [59.9, 14.0], seed=1)
    alone_feats, alone_lens = long_feats[1:2, :1500], long_lens[1:2]  # the 14 s item, padded to one chunk
    together, _ = enc(long_feats, long_lens)
    alone, _ = enc(alone_feats, alone_lens)
    n = int(alone_lens[0])
    torch.testing.assert_close(together[:, 1, :n], alone[:, 0, :n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_not_padded_to_the_chunk_are_rejected(encoders, kind):
    spec = ENCODERS[kind]
    feats, lens = batch(kind, [0.3])
    with pytest.raises(ValueError, match=f"multiple of {spec.chunk}"):
        encoders[kind](feats[:, : spec.chunk - 1], torch.clamp(lens, max=spec.chunk - 1))


# ---------------------------------------------------------------------------------------------------------------
# the feature width comes from the checkpoint


@pytest.mark.parametrize("kind", KINDS)
def test_feature_dim_comes_from_the_checkpoint(tiny_dirs, encoders, kind):
    want = ENCODERS[kind].feature_dim
    assert encoders[kind].feature_dim == checkpoint_feature_dim(kind, tiny_dirs[kind]) == want
    assert feature_spec(kind).feature_dim == want


@pytest.fixture(scope="module")
def whisper_80(tiny_dirs, tmp_path_factory) -> Path:
    """The tiny Whisper with 80 mel bins (tiny.en's input), conv1 cut to 80 input channels; config.json leaves
    num_mel_bins out, as transformers writes it for its default of 80."""
    folder = tmp_path_factory.mktemp("whisper80")
    cfg = json.loads((tiny_dirs["whisper"] / "config.json").read_text())
    del cfg["num_mel_bins"]
    (folder / "config.json").write_text(json.dumps(cfg))
    state = load_file(tiny_dirs["whisper"] / "model.safetensors")
    state["model.encoder.conv1.weight"] = state["model.encoder.conv1.weight"][:, :80].contiguous()
    save_file(state, folder / "model.safetensors")
    return folder


def test_whisper_80_mel_bins_end_to_end(whisper_80):
    assert checkpoint_feature_dim("whisper", whisper_80) == 80
    enc = load_encoder("whisper", whisper_80, ENCODERS["whisper"].tiny_layers, hidden_size=16)
    assert enc.feature_dim == 80
    wave = Waveform(torch.randn(16000 * 3, generator=torch.Generator().manual_seed(0)).numpy() * 0.1, 16000)
    f = collate("whisper", [extract_features("whisper", wave, feature_dim=enc.feature_dim)])
    states, lens = enc(f.values, f.lens)
    assert f.values.shape == (1, 3000, 80) and states.shape == (2, 1, 150, 16) and lens.tolist() == [150]


def test_a_shorter_audio_context_encodes_windows_of_its_own_length(tiny_dirs, tmp_path):
    """max_source_positions 500 (10 s): the 3000-frame pieces are encoded as 1000-frame windows, each exactly as
    the HF encoder encodes that window alone; a clip's windows past its length are skipped."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    folder = tmp_path / "w10"
    folder.mkdir()
    cfg = json.loads((tiny_dirs["whisper"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "max_source_positions": 500}))
    state = load_file(tiny_dirs["whisper"] / "model.safetensors")
    state["model.encoder.embed_positions.weight"] = state["model.encoder.embed_positions.weight"][:500].clone()
    save_file(state, folder / "model.safetensors")
    enc = load_encoder("whisper", folder, [1, 2], hidden_size=16)
    assert enc.chunk == 1000
    wave = Waveform(torch.randn(16000 * 13, generator=torch.Generator().manual_seed(0)).numpy() * 0.1, 16000)
    f = collate("whisper", [extract_features("whisper", wave)])
    states, lens = enc(f.values, f.lens)
    assert f.values.shape[1] == 3000 and states.shape == (2, 1, 650, 16) and lens.tolist() == [650]
    hf = enc.model
    assert isinstance(hf, WhisperEncoder)
    for w in range(2):
        alone = hf(f.values[:, 1000 * w : 1000 * (w + 1)].transpose(1, 2), output_hidden_states=True).hidden_states
        torch.testing.assert_close(states[0, :, 500 * w : 500 * (w + 1)], alone[1][:, : 650 - 500 * w], rtol=1e-4, atol=1e-5)
    cfg["max_source_positions"] = 700
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatch, match="1400-frame windows, which do not divide"):
        load_encoder("whisper", folder, [1, 2])


def test_wrong_mel_count_is_rejected_with_the_fix(whisper_80, encoders):
    enc80 = load_encoder("whisper", whisper_80, ENCODERS["whisper"].tiny_layers)
    wave = Waveform(np.zeros(16000, dtype=np.float32), 16000)
    f128 = collate("whisper", [extract_features("whisper", wave)])  # large-v3's 128 bins
    f80 = collate("whisper", [extract_features("whisper", wave, feature_dim=80)])
    expects = r"whisper encoder expects features \(B, T, 80\), found \(1, 3000, 128\); "
    fix = r"its checkpoint takes 80-wide features: extract them with extract_features\('whisper', .*feature_dim="
    with pytest.raises(ValueError, match=expects + fix):
        enc80(f128.values, f128.lens)
    with pytest.raises(ValueError, match=r"expects features \(B, T, 128\), found \(1, 3000, 80\)"):
        encoders["whisper"](f80.values, f80.lens)
    with pytest.raises(ValueError, match=r"expects features \(B, T, 80\), found \(1, 3000\)$"):
        enc80(f80.values[..., 0], f80.lens)  # wrong rank: no width hint


# ---------------------------------------------------------------------------------------------------------------
# frozen


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_and_eval_even_after_train(encoders, kind):
    enc = encoders[kind]
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    with torch.enable_grad():
        states, _ = enc(*batch(kind, [0.3]))
    assert not states.requires_grad and not states.is_inference()  # usable as input to trainable adapters


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoints


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_build_is_deterministic(tmp_path, kind):
    build_tiny(kind, tmp_path / "a", 0)
    build_tiny(kind, tmp_path / "b", 0)
    build_tiny(kind, tmp_path / "c", 1)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "config.json" in names and "model.safetensors" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a != (tmp_path / "c" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_spec_matches_its_checkpoint(encoders, kind):
    spec = ENCODERS[kind]
    meta = build_encoder_meta(kind, tiny=True)
    loaded = encoders[kind]
    assert meta.layers == loaded.layers == spec.tiny_layers and loaded.chunk == spec.chunk
    shapes = {k: v.shape for k, v in loaded.state_dict().items()}
    assert {k: v.shape for k, v in meta.state_dict().items()} == shapes


def test_whisper_model_folder_without_the_conditional_generation_prefix_loads(tmp_path, tiny_dirs, encoders):
    # a WhisperModel checkpoint names the encoder "encoder.*" instead of "model.encoder.*"
    folder = tmp_path / "whisper_model"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_dirs["whisper"] / "config.json").read_bytes())
    state = load_file(tiny_dirs["whisper"] / "model.safetensors")
    save_file({k.removeprefix("model."): v for k, v in state.items()}, folder / "model.safetensors")
    enc = load_encoder("whisper", folder, ENCODERS["whisper"].tiny_layers)
    feats, lens = batch("whisper", [10.0])
    torch.testing.assert_close(enc(feats, lens)[0], encoders["whisper"](feats, lens)[0])


# ---------------------------------------------------------------------------------------------------------------
# load errors


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match="nowhere") as e:
        load_encoder("whisper", missing, [1])
    assert not isinstance(e.value, CheckpointMismatch)
    assert "config.json" in str(e.value) and "model.safetensors" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_weight_file(tmp_path, tiny_dirs, kind):
    folder = tmp_path / kind
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_dirs[kind] / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors") as e:
        load_encoder(kind, folder, ENCODERS[kind].tiny_layers)
    assert not isinstance(e.value, CheckpointMismatch) and str(folder) in str(e.value)


def test_missing_config(tmp_path, tiny_dirs):
    folder = tmp_path / "noconfig"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny_dirs["sslam"] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="config.json"):
        load_encoder("sslam", folder, [0])


def test_unreadable_weight_file(tmp_path, tiny_dirs):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_dirs["muq"] / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_encoder("muq", folder, [1])


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_hidden_size(tiny_dirs, kind):
    with pytest.raises(CheckpointMismatch, match="hidden_size") as e:
        load_encoder(kind, tiny_dirs[kind], ENCODERS[kind].tiny_layers, real_facts(kind)[0])
    assert str(tiny_dirs[kind]) in str(e.value) and "16" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_index_out_of_range(tiny_dirs, kind):
    n_states = max(ENCODERS[kind].tiny_layers) + 1  # tiny layers tap up to the last hidden state
    with pytest.raises(CheckpointMismatch, match=rf"{n_states} hidden states") as e:
        load_encoder(kind, tiny_dirs[kind], [0, n_states])
    assert str(tiny_dirs[kind]) in str(e.value) and f"encoders.{kind}.layers" in str(e.value)


def _rewrite(src: Path, dst: Path, edit) -> None:
    dst.mkdir()
    for p in src.iterdir():
        if p.name != "model.safetensors":
            (dst / p.name).write_bytes(p.read_bytes())
    save_file(edit(load_file(src / "model.safetensors")), dst / "model.safetensors")


def _used_key(state: dict, kind: str) -> str:
    marks = {"whisper": "encoder.layers.1.fc1.weight", "w2vbert": "encoder.layers.0.ffn1.output_dense.weight",
             "muq": "model.conformer.layers.1.conv_module.depthwise_conv.weight",
             "sslam": "model.blocks.1.mlp.fc1.weight"}
    return next(k for k in sorted(state) if k.endswith(marks[kind]))


@pytest.mark.parametrize("kind", KINDS)
def test_renamed_key(tmp_path, tiny_dirs, kind):
    def rename(state):
        key = _used_key(state, kind)
        state[key.replace("weight", "wieght")] = state.pop(key)
        return state

    _rewrite(tiny_dirs[kind], tmp_path / "renamed", rename)
    with pytest.raises(CheckpointMismatch, match="wieght") as e:
        load_encoder(kind, tmp_path / "renamed", ENCODERS[kind].tiny_layers)
    assert "unexpected" in str(e.value) and str(tmp_path / "renamed") in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_key(tmp_path, tiny_dirs, kind):
    def drop(state):
        state.pop(_used_key(state, kind))
        return state

    _rewrite(tiny_dirs[kind], tmp_path / "dropped", drop)
    with pytest.raises(CheckpointMismatch, match="missing") as e:
        load_encoder(kind, tmp_path / "dropped", ENCODERS[kind].tiny_layers)
    assert "weight" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_shape(tmp_path, tiny_dirs, kind):
    def widen(state):
        key = _used_key(state, kind)
        state[key] = torch.cat([state[key], state[key]], dim=0)
        return state

    _rewrite(tiny_dirs[kind], tmp_path / "wide", widen)
    with pytest.raises(CheckpointMismatch, match="shape") as e:
        load_encoder(kind, tmp_path / "wide", ENCODERS[kind].tiny_layers)
    assert _used_key(load_file(tiny_dirs[kind] / "model.safetensors"), kind) in str(e.value)


def test_unknown_encoder_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown encoder 'beats'; valid: whisper, w2vbert, muq, sslam"):
        load_encoder("beats", tmp_path, [1])


# ---------------------------------------------------------------------------------------------------------------
# full-size architectures (meta device, no files)

PARAMS_M = {"whisper": (600, 670), "w2vbert": (550, 610), "muq": (280, 340), "sslam": (85, 91)}


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_encoder_builds_on_meta(kind):
    spec = ENCODERS[kind]
    enc = build_encoder_meta(kind, spec.layers)
    assert all(p.is_meta for p in enc.parameters())
    n = sum(p.numel() for p in enc.parameters()) / 1e6
    lo, hi = PARAMS_M[kind]
    assert lo <= n <= hi, f"{kind}: {n:.1f}M parameters"
    assert enc.layers == spec.layers and not enc.training


@pytest.mark.parametrize("kind", KINDS)
def test_record_facts_agree_with_the_real_config(kind):
    spec = ENCODERS[kind]
    hidden, n_states = real_facts(kind)
    assert (hidden, n_states) == {"whisper": (1280, 33), "w2vbert": (1024, 25), "muq": (1024, 13),
                                  "sslam": (768, 12)}[kind]
    assert max(spec.layers) < n_states
    assert spec.chunk / spec.input_rate == pytest.approx({"sslam": 10.24}.get(kind, 30.0))
    assert spec.sample_rate == (24000 if kind == "muq" else 16000)
    assert spec.tiny_config.get(checkpoint_format(kind)[1].hidden) == 16


def test_meta_build_rejects_out_of_range_layers():
    with pytest.raises(CheckpointMismatch, match="33 hidden states"):
        build_encoder_meta("whisper", [7, 33])
