"""Adapter checkpoints: bit-exact round trip, atomic writes, named mismatches, per-encoder loading and freezing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alarm.config import ModelConfig, SummaryConfig
from alarm.errors import CheckpointError, CheckpointMismatch
from alarm.model import checkpoint as ckpt
from alarm.model.audio_adapter import build_audio_adapter, encoder_frames
from alarm.model.checkpoint import load_adapter, load_encoder_adapter, load_encoder_adapters, save_adapter

torch.set_num_threads(1)

ENCODERS = {
    "whisper": {"checkpoint": "tiny://whisper", "hidden_size": 16, "layers": [1, 2],
                "adapter": {"kind": "downsample", "width": 32, "norm": "batch"}},
    "w2vbert": {"checkpoint": "tiny://w2vbert", "hidden_size": 24, "layers": [0, 1, 2],
                "adapter": {"kind": "downsample", "width": 24, "norm": "layer"}},
    "muq": {"checkpoint": "tiny://muq", "hidden_size": 24, "layers": [1, 2], "adapter": {"kind": "mlp", "width": 32}},
    "sslam": {"checkpoint": "tiny://sslam", "hidden_size": 16, "layers": [0, 1],
              "adapter": {"kind": "downsample", "width": 32, "norm": "layer"}},
}
FUSIONS = {
    "sum": {"kind": "sum"},
    "cross_attention": {"kind": "cross_attention", "d_model": 16, "num_heads": 2, "ffn_dim": 32},
    "perceiver": {"kind": "perceiver", "num_latents": 20, "latent_dim": 16, "cross_heads": 2, "self_heads": 2,
                  "self_layers": 2, "self_repeats": 2},
}


def cfg_for(fusion: str, encoders=("whisper", "w2vbert", "muq", "sslam"), **enc_overrides) -> ModelConfig:
    encs = {k: dict(ENCODERS[k]) for k in encoders}
    if fusion == "perceiver":
        for k in encoders[1:]:
            encs[k]["adapter"] = {"kind": "identity"}
    for k, extra in enc_overrides.items():
        encs[k] = {**encs[k], **extra}
    return ModelConfig.model_validate({
        "name": f"tiny-{fusion}", "llm": {"checkpoint": "tiny://qwen3", "hidden_size": 32, "vocab_size": 64},
        "encoders": encs, "fusion": FUSIONS[fusion],
    })


def trained(cfg: ModelConfig, seed: int = 0):
    """An adapter with non-initial weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    adapter = build_audio_adapter(cfg).train()
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
        g = torch.Generator().manual_seed(seed)
        states = {k: torch.randn(len(e.layers), 2, encoder_frames(k, 1.0), e.hidden_size, generator=g)
                  for k, e in cfg.encoders.items()}
        adapter(states, {k: torch.tensor([s.shape[2], s.shape[2] - 3]) for k, s in states.items()})
    return adapter.eval(), states


def rewrite_weights(folder: Path, edit) -> None:
    """Edit the stored tensors and re-sign meta.json so only the key/shape checks can catch the change."""
    state = load_file(str(folder / "adapter.safetensors"))
    edit(state)
    save_file(state, str(folder / "adapter.safetensors"))
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = ckpt._sha256(folder / "adapter.safetensors")
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fusion", ["sum", "cross_attention", "perceiver"])
def test_round_trip_is_bit_exact(tmp_path, fusion):
    cfg = cfg_for(fusion)
    adapter, states = trained(cfg)
    folder = save_adapter(adapter, cfg, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "meta.json", "model_config.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["num_parameters"] == sum(p.numel() for p in adapter.parameters())
    loaded, loaded_cfg = load_adapter(folder)
    assert loaded_cfg == cfg
    a, b = adapter.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lens = {k: torch.tensor([s.shape[2], s.shape[2] - 3]) for k, s in states.items()}
    with torch.no_grad():
        assert torch.equal(adapter(states, lens)[0], loaded.eval()(states, lens)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left behind


def test_save_refuses_to_replace_a_different_checkpoint(tmp_path):
    cfg = cfg_for("sum", encoders=("whisper",))
    first, _ = trained(cfg, seed=0)
    second, _ = trained(cfg, seed=1)
    folder = save_adapter(first, cfg, tmp_path / "ckpt")
    save_adapter(first, cfg, folder)  # identical: a no-op
    with pytest.raises(CheckpointError, match="overwrite=True"):
        save_adapter(second, cfg, folder)
    assert torch.equal(load_adapter(folder)[0].audio_start, first.audio_start)
    save_adapter(second, cfg, folder, overwrite=True)
    assert torch.equal(load_adapter(folder)[0].audio_start, second.audio_start)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an adapter checkpoint"):
        save_adapter(first, cfg, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "other"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    cfg = cfg_for("sum", encoders=("whisper",))
    adapter, _ = trained(cfg)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_text", boom)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(adapter, cfg, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    cfg = cfg_for("cross_attention")
    adapter, _ = trained(cfg)
    good = save_adapter(adapter, cfg, tmp_path / "good")

    def variant(name, edit):
        folder = save_adapter(adapter, cfg, tmp_path / name)
        rewrite_weights(folder, edit)
        return folder

    missing = variant("missing", lambda s: s.pop("fusion.out_proj.bias"))
    with pytest.raises(CheckpointMismatch, match=r"missing keys: fusion\.out_proj\.bias") as e:
        load_adapter(missing)
    assert str(missing) in str(e.value)
    extra = variant("extra", lambda s: s.update({"fusion.surprise": torch.zeros(3)}))
    with pytest.raises(CheckpointMismatch, match=r"unexpected keys: fusion\.surprise"):
        load_adapter(extra)
    shaped = variant("shaped", lambda s: s.update({"adapters.whisper.llm_proj.weight": torch.zeros(32, 16)}))
    with pytest.raises(CheckpointMismatch, match=r"adapters\.whisper\.llm_proj\.weight: expected \(32, 32\) "
                                                 r"found \(32, 16\)"):
        load_adapter(shaped)
    # non-strict tolerates missing/extra keys but never a wrong shape
    loaded, _ = load_adapter(extra, strict=False)
    assert torch.equal(loaded.fusion.out_proj.weight, adapter.fusion.out_proj.weight)
    with pytest.raises(CheckpointMismatch, match="llm_proj"):
        load_adapter(shaped, strict=False)
    load_adapter(good)


def test_corrupted_weights_are_detected(tmp_path):
    cfg = cfg_for("sum", encoders=("whisper",))
    adapter, _ = trained(cfg)
    folder = save_adapter(adapter, cfg, tmp_path / "ckpt")
    raw = bytearray((folder / "adapter.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (folder / "adapter.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointMismatch, match="corrupted"):
        load_adapter(folder)


def test_missing_files_and_s3(tmp_path):
    with pytest.raises(CheckpointError, match="model_config.json is missing"):
        load_adapter(tmp_path)
    with pytest.raises(CheckpointError, match="s3://"):
        load_adapter("s3://bucket/ckpt")


def test_incompatible_config_names_the_dotted_key(tmp_path):
    cfg = cfg_for("sum", encoders=("whisper",))
    adapter, _ = trained(cfg)
    folder = save_adapter(adapter, cfg, tmp_path / "ckpt")
    other = cfg_for("sum", encoders=("whisper",), whisper={"layers": [1, 2, 3]})
    with pytest.raises(CheckpointMismatch, match=r"encoders\.whisper\.layers \(count\): checkpoint 2, config 3"):
        load_adapter(folder, other)
    same_shape = cfg_for("sum", encoders=("whisper",), whisper={"layers": [5, 6], "checkpoint": "elsewhere"})
    loaded, used = load_adapter(folder, same_shape)
    assert used is same_shape and torch.equal(loaded.mix["whisper"].logits, adapter.mix["whisper"].logits)


def test_load_encoder_adapter_into_a_fusion_model_and_freeze(tmp_path):
    single_cfg = cfg_for("sum", encoders=("whisper",))
    single, _ = trained(single_cfg, seed=3)
    folder = save_adapter(single, single_cfg, tmp_path / "al-whisper")
    fusion_cfg = cfg_for("cross_attention", whisper={"adapter_init": str(folder), "adapter_frozen": True})
    fusion = build_audio_adapter(fusion_cfg)
    start_before = fusion.audio_start.detach().clone()
    assert load_encoder_adapters(fusion, fusion_cfg) == ["whisper"]
    for k, v in single.state_dict().items():
        if k.startswith(("mix.whisper.", "adapters.whisper.")):
            assert torch.equal(fusion.state_dict()[k], v), k
    assert torch.equal(fusion.audio_start, start_before)  # separators are not carried over
    assert "whisper" in fusion.frozen and not fusion.train().adapters["whisper"].training
    assert all(not p.requires_grad for p in fusion.adapters["whisper"].parameters())
    # a full fusion checkpoint freezes the same encoders on load
    saved = save_adapter(fusion, fusion_cfg, tmp_path / "alarm-ca")
    reloaded, _ = load_adapter(saved)
    assert reloaded.frozen == {"whisper"} and not reloaded.train().adapters["whisper"].training


def test_load_encoder_adapter_mismatches(tmp_path):
    single_cfg = cfg_for("sum", encoders=("whisper",))
    folder = save_adapter(trained(single_cfg)[0], single_cfg, tmp_path / "al-whisper")
    fusion = build_audio_adapter(cfg_for("cross_attention"))
    with pytest.raises(CheckpointMismatch, match=r"not 'muq'.*encoders\.muq\.adapter_init"):
        load_encoder_adapter(fusion, "muq", folder)
    wide = cfg_for("cross_attention", whisper={"adapter": {"kind": "downsample", "width": 16, "norm": "batch"}})
    with pytest.raises(CheckpointMismatch, match=r"adapters\.whisper\.conv1\.weight: expected \(32, 16, 3\)"):
        load_encoder_adapter(build_audio_adapter(wide), "whisper", folder)


def test_one_fit_rule_for_loading_and_serving():
    served = cfg_for("cross_attention")
    single = cfg_for("sum", encoders=("whisper",))
    assert ckpt.fit_problems(single, served) == []  # serving: a single-encoder adapter on a four-encoder server
    assert ckpt.fit_problems(single, served, rebuild=True) == [  # rebuilding it from the fusion config: no
        "encoders: checkpoint ['whisper'], config ['muq', 'sslam', 'w2vbert', 'whisper']",
        "fusion: checkpoint {'kind': 'sum'}, config " + repr({k: v for k, v in served.fusion.model_dump().items()
                                                                  if k != "dropout"}),
    ]
    wider = served.model_copy(update={"llm": served.llm.model_copy(update={"hidden_size": 48})})
    assert ckpt.fit_problems(single, wider) == ["llm.hidden_size: checkpoint 32, config 48"]
    narrow = cfg_for("sum", encoders=("whisper", "muq"))
    assert ckpt.fit_problems(narrow, single) == [
        "encoders: checkpoint ['muq', 'whisper'], config ['whisper'] (the model does not run ['muq'])"]
    layer_norm = cfg_for("sum", encoders=("whisper",), whisper={"adapter": {"kind": "downsample", "width": 32,
                                                                           "norm": "layer"}})
    assert ckpt.fit_problems(single, layer_norm) == []  # serving builds the adapter from its own config
    assert [p.split(":")[0] for p in ckpt.fit_problems(single, layer_norm, rebuild=True)] == ["encoders.whisper.adapter"]


@pytest.mark.parametrize("reads", ["fused", "whisper"])
def test_summary_tokens_round_trip_and_must_match_when_rebuilt(tmp_path, reads):
    summary = SummaryConfig(tokens=2, heads=2, reads=reads)
    cfg = cfg_for("sum", encoders=("whisper",)).model_copy(update={"summary": summary})
    adapter, states = trained(cfg)
    folder = save_adapter(adapter, cfg, tmp_path / "ckpt")
    loaded, loaded_cfg = load_adapter(folder)  # its own config: the summary comes with the checkpoint
    assert loaded_cfg.summary.tokens == 2 and torch.equal(loaded.summary.queries, adapter.summary.queries)
    lens = {k: torch.tensor([s.shape[2], s.shape[2] - 3]) for k, s in states.items()}
    with torch.no_grad():
        assert torch.equal(adapter(states, lens)[0], loaded.eval()(states, lens)[0])
    plain = cfg_for("sum", encoders=("whisper",))
    assert ckpt.fit_problems(cfg, plain) == []  # serving builds the adapter from its own config
    dropped = cfg.model_copy(update={"summary": summary.model_copy(update={"drop_frames": 0.5})})
    assert ckpt.fit_problems(dropped, cfg, rebuild=True) == []  # trained dropping frames: the same weights
    assert ckpt.fit_problems(cfg, plain, rebuild=True) == [
        f"summary: checkpoint {{'tokens': 2, 'heads': 2, 'reads': {reads!r}, 'count': False, 'count_head': 'norm'}}, "
        "config {'tokens': 0, 'heads': 4, 'reads': 'fused', 'count': False, 'count_head': 'norm'}"]
    with pytest.raises(CheckpointMismatch, match="summary: checkpoint"):
        load_adapter(folder, plain)
