"""The whole ALARM model in one process: waveform -> features -> frozen encoders -> AudioAdapter -> prompt embeds.

    model = AlarmModel.build(load_config(ModelConfig, "tiny"))
    prompt = model.prompt("What do you hear?", load_audio("clip.flac"))   # prompt.embeds (S, D_llm)

The services reuse the pieces (encoders as their own actors, the adapter in the fusion-compressor, the prompt
builder next to the LLM); this class wires them for tests, benchmarks, training workers and the in-process
baselines. The LLM itself is optional: serving hands `prompt.embeds` to vLLM and needs only the embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alarm.audio.features import collate, extract_features
from alarm.checkpoints import resolve_checkpoint
from alarm.config import ModelConfig
from alarm.encoders.checkpoint import load_encoder
from alarm.model.audio_adapter import AudioAdapter, build_audio_adapter
from alarm.model.checkpoint import load_adapter, load_encoder_adapters
from alarm.model.llm import load_embedding, load_llm, load_tokenizer, resolve_llm
from alarm.model.prompt import Prompt, PromptBuilder
from alarm.types import EncoderStates, Features, Waveform


def load_encoders(cfg: ModelConfig, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """Every configured encoder, frozen, from its checkpoint location (local, hub, s3:// or tiny://)."""
    out = {}
    for name, enc in cfg.encoders.items():
        folder = resolve_checkpoint(enc.checkpoint, enc.revision, expect=["config.json"])
        out[name] = load_encoder(name, folder, enc.layers, enc.hidden_size, device=device, dtype=dtype)
    return out


@dataclass
class AlarmModel:
    """Frozen encoders + the trainable AudioAdapter + prompt assembly (+ the frozen LLM when asked for)."""

    cfg: ModelConfig
    encoders: dict[str, nn.Module]
    adapter: AudioAdapter
    builder: PromptBuilder
    llm: nn.Module | None = None

    @classmethod
    def build(
        cls, cfg: ModelConfig, adapter: str | Path | None = None, *, with_llm: bool = False,
        with_encoders: bool = True, device: str = "cpu",
    ) -> AlarmModel:
        """Load everything `cfg` names.

        Args:
            adapter: a trained adapter checkpoint (folder or s3://). Without one the adapter is freshly
                initialised, and every `encoders.<enc>.adapter_init` is loaded (and frozen if `adapter_frozen`).
        """
        if adapter is not None:
            audio_adapter, cfg = load_adapter(resolve_checkpoint(str(adapter)), cfg)
        else:
            audio_adapter = build_audio_adapter(cfg)
            load_encoder_adapters(audio_adapter, cfg, resolve=lambda uri: resolve_checkpoint(uri))
        llm_dir = resolve_llm(cfg.llm)
        llm = load_llm(llm_dir, cfg.llm, device=device) if with_llm else None
        embed = llm.get_input_embeddings() if llm is not None else load_embedding(llm_dir, cfg.llm).to(device)
        builder = PromptBuilder(load_tokenizer(llm_dir), embed)
        encoders = load_encoders(cfg, device) if with_encoders else {}  # training workers get states from actors
        return cls(cfg, encoders, audio_adapter.to(device).eval(), builder, llm)

    @property
    def device(self) -> torch.device:
        return self.builder.embed_tokens.weight.device

    # -- stages ----------------------------------------------------------------------------------------------------

    def features(self, waves: list[Waveform]) -> dict[str, Features]:
        """Per-encoder padded front-end batches, each resampled from the original audio to that encoder's rate
        and as wide as its checkpoint takes (`feature_dim`: 80 mel bins for Whisper tiny.en, 128 for v3)."""
        q = self.cfg.audio.resample_quality
        return {name: collate(name, [extract_features(name, w, q, enc.feature_dim) for w in waves])
                for name, enc in self.encoders.items()}

    @torch.inference_mode()
    def encode(self, feats: dict[str, Features]) -> dict[str, EncoderStates]:
        out = {}
        for name, f in feats.items():
            states, lens = self.encoders[name](f.values.to(self.device), f.lens.to(self.device))  # (L, B, T, D)
            out[name] = EncoderStates(name, states, lens)
        return out

    def adapt(self, states: dict[str, EncoderStates]) -> list[torch.Tensor]:
        """Encoder states -> one `(S_i, D_llm)` audio block per clip, wrapped in the start/end vectors."""
        embeds, lens = self.adapter({k: s.states for k, s in states.items()}, {k: s.lens for k, s in states.items()})
        return self.adapter.split(embeds, lens)

    def audio_embeds(self, waves: list[Waveform]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return self.adapt(self.encode(self.features(waves)))

    def prompt(self, text: str, audio: Waveform | None = None, system: str | None = None) -> Prompt:
        block = self.audio_embeds([audio])[0] if audio is not None else None
        return self.builder.build(text, block, system)


def ensemble_prompt(models: list[AlarmModel], text: str, audio: Waveform, system: str | None = None) -> Prompt:
    """ALARM-E: each checkpoint builds its own audio block for the same clip; blocks are concatenated in one turn."""
    blocks = [m.audio_embeds([audio])[0] for m in models]
    return models[0].builder.build_ensemble(text, blocks, system)


def summarize_prompt(
    cfg: ModelConfig, audio: str, text: str, system: str | None, adapter: str | None, out: str | None
) -> dict:
    """Build the prompt for one clip and describe it (the `alarm.embed` command)."""
    from alarm.audio.decode import load_audio

    wave = load_audio(audio, max_duration_s=cfg.audio.max_duration_s)
    model = AlarmModel.build(cfg, adapter)
    p = model.prompt(text, wave, system if system is not None else cfg.system_prompt)
    (start, end), = p.audio_spans
    if out is not None:
        from safetensors.torch import save_file

        # The resolved config travels inside the file's metadata, next to the tensor it describes.
        save_file({"prompt_embeds": p.embeds.contiguous()}, out, metadata={"config": cfg.model_dump_json()})
    return {
        "model": cfg.name,
        "audio": {"duration_s": round(wave.duration_s, 3), "sample_rate": wave.sample_rate},
        "audio_positions": end - start,
        "prompt_positions": p.length,
        "embed_dim": p.embeds.shape[1],
        "saved": out,
    }
