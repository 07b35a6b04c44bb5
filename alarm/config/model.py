"""The model schema: encoders and their adapters, fusion, the frozen LLM, audio limits (`ModelConfig`).

The `kind` literals of the adapter and fusion unions are the keys of the registries in alarm.model.adapters and
alarm.model.fusion.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from alarm.config.base import Strict
from alarm.config.keys import Names
from alarm.encoders import FAMILIES


def _encoder_name(name: Any) -> Any:
    """An encoder family name, checked against the registry (`alarm.encoders`) when validated, so a family
    registered at run time is accepted; the error reads as pydantic's for a Literal."""
    if not isinstance(name, str) or name not in FAMILIES:
        names = [repr(n) for n in FAMILIES]
        expected = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


# An encoder family name (a key of alarm.encoders.FAMILIES).
EncoderKind = Annotated[str, BeforeValidator(_encoder_name), Names(lambda: tuple(FAMILIES))]
# The default system turn at inference (serving, alarm.embed); training uses none.
DEFAULT_SYSTEM_PROMPT = "You are an audio-understanding model."


class AudioConfig(Strict):
    max_duration_s: float = Field(
        60.0, gt=0, description="Clips at or above this many seconds are rejected (the paper drops >= 60 s; "
        "at 25 tokens/s longer clips overflow the LLM context)."
    )
    resample_quality: Literal["high", "fast"] = Field(
        "high", description="Polyphase FIR length: 'high' (Kaiser beta 8.6, 64 zero crossings) or 'fast' (16)."
    )


class DownsampleAdapterConfig(Strict):
    kind: Literal["downsample"] = "downsample"
    width: int = Field(1024, gt=0, description="Conv body width; an input projection is added when D_enc != width.")
    norm: Literal["batch", "layer"] = Field("layer", description="BatchNorm1d (Whisper) or channel LayerNorm.")


class MLPAdapterConfig(Strict):
    kind: Literal["mlp"] = "mlp"
    width: int = Field(1024, gt=0, description="MLP width (MuQ: already 25 Hz, so no downsampling).")


class IdentityAdapterConfig(Strict):
    kind: Literal["identity"] = "identity"


AdapterConfig = Annotated[
    DownsampleAdapterConfig | MLPAdapterConfig | IdentityAdapterConfig, Field(discriminator="kind")
]


class EncoderConfig(Strict):
    checkpoint: str = Field(
        description="Local folder, hub id (org/name), s3://bucket/prefix, or tiny://<encoder> (built locally)."
    )
    revision: str | None = Field(None, description="Hub revision (commit sha) to pin; required for hub ids.")
    hidden_size: int = Field(gt=0, description="D_enc; checked against the checkpoint's config on load.")
    layers: list[int] = Field(
        min_length=1, description="Indices into the hidden-states tuple to tap (0 = embedding output, where any)."
    )
    adapter: AdapterConfig = Field(description="The trainable adapter on this encoder's states.")
    adapter_init: str | None = Field(
        None, description="Adapter checkpoint (folder or s3://) to load this encoder's adapter from."
    )
    adapter_frozen: bool = Field(
        False, description="Freeze this adapter (weights and normalisation statistics), e.g. for fusion training."
    )

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if len(set(self.layers)) != len(self.layers) or any(i < 0 for i in self.layers):
            raise ValueError(f"layers must be distinct non-negative indices, got {self.layers}")
        if self.adapter_frozen and self.adapter_init is None:
            raise ValueError("adapter_frozen=true needs adapter_init (a trained adapter to freeze)")
        return self


class SumFusionConfig(Strict):
    kind: Literal["sum"] = "sum"


class CrossAttentionFusionConfig(Strict):
    kind: Literal["cross_attention"] = "cross_attention"
    main: EncoderKind = Field("whisper", description="The stream that queries; output length follows it.")
    order: list[EncoderKind] = Field(
        ["w2vbert", "muq", "sslam"], description="Conditional streams, one decoder layer each, applied in order."
    )
    d_model: int = 1024
    num_heads: int = 16
    ffn_dim: int = 4096
    dropout: float = Field(0.1, ge=0, lt=1)


class PerceiverFusionConfig(Strict):
    kind: Literal["perceiver"] = "perceiver"
    main: EncoderKind = Field("whisper", description="The stream passed through after the latents.")
    order: list[EncoderKind] = Field(
        ["w2vbert", "muq", "sslam"], description="Conditional streams, one Perceiver each, latents in this order."
    )
    num_latents: int = Field(20, gt=0, description="Latents per conditional stream.")
    latent_dim: int = 768
    cross_heads: int = 4
    self_heads: int = 4
    self_layers: int = Field(6, gt=0, description="Self-attention layers per block.")
    self_repeats: int = Field(3, gt=0, description="Times the block is applied, weights shared.")
    dropout: float = Field(0.0, ge=0, lt=1)
    init_std: float = 0.02


FusionConfig = Annotated[
    SumFusionConfig | CrossAttentionFusionConfig | PerceiverFusionConfig, Field(discriminator="kind")
]


class SummaryConfig(Strict):
    tokens: int = Field(
        0, ge=0, description="Clip-level tokens appended to each audio block, before its end vector: learned queries "
        "attend over the clip's fused frames (valid ones only), so what belongs to the whole clip (level, length, "
        "how many events) reaches the LLM in a few positions. 0: none, the paper's layout."
    )
    heads: int = Field(4, gt=0, description="Attention heads of the summary queries; must divide llm.hidden_size.")
    reads: str = Field(
        "fused", description="What the summary queries attend over: `fused` (the frames the LLM gets, after the "
        "adapters and the fusion) or the name of an encoder, whose layer-mixed states they read before its adapter "
        "(full frame rate and width): what a downsampler learns to drop for the frames, such as the level, can "
        "still reach the summary."
    )
    count: bool = Field(
        False, description="One more clip-level token, after the summary tokens, that adds instead of averaging: a "
        "width-3 convolution over what the queries read (the states of `reads`) fires per frame, and its output, "
        "summed over the clip's valid frames, is projected to the LLM's width. Attention averages, so it can tell "
        "how much of a clip is a beep, not how many beeps there are; a sum of onsets can. Needs `tokens` >= 1."
    )
    count_head: Literal["norm", "mlp"] = Field(
        "norm", description="How `count`'s summed output becomes its token: `norm`, LayerNorm then Linear (the "
        "first design; a LayerNorm is scale-invariant, so a sum that grows with the number of events reaches the LLM "
        "only through ratios between its parts), or `mlp`, Linear-GELU-Linear, which keeps the magnitude: thresholds "
        "on the sum map 1, 2, 3 events to different directions. Adapters trained with one do not load with the other."
    )
    drop_frames: float = Field(
        0.0, ge=0.0, lt=1.0, description="Training only: the probability that a training clip's frames are zeroed "
        "(its positions kept), so that the LLM gets that clip through its summary tokens alone and learns to read "
        "them, not only the frames, for what belongs to the whole clip (a count, a level). Inference never drops. "
        "0: off. Needs `tokens` >= 1."
    )

    @property
    def total(self) -> int:
        """LLM positions the summary adds per clip."""
        return self.tokens + int(bool(self.tokens and self.count))


class LLMConfig(Strict):
    checkpoint: str = Field(description="Frozen reasoning LLM: local folder, hub id, s3:// or tiny://qwen3.")
    revision: str | None = None
    hidden_size: int = Field(gt=0, description="D_llm; every adapter projects to it.")
    vocab_size: int = Field(gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


class ModelConfig(Strict):
    name: str
    llm: LLMConfig
    encoders: dict[EncoderKind, EncoderConfig] = Field(min_length=1)
    fusion: FusionConfig = Field(default_factory=SumFusionConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    separator_init_std: float = Field(
        1.0, gt=0, description="Init std of the learned audio start/end vectors (reference: randn, std 1)."
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT, description="Default system turn at inference (none in training)."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.summary.tokens and self.llm.hidden_size % self.summary.heads:
            raise ValueError(f"summary.heads={self.summary.heads} must divide llm.hidden_size="
                             f"{self.llm.hidden_size}; change summary.heads")
        if self.summary.count and not self.summary.tokens:
            raise ValueError("summary.count adds to the summary tokens; set summary.tokens >= 1 or count: false")
        if self.summary.drop_frames and not self.summary.tokens:
            raise ValueError("summary.drop_frames leaves a clip its summary tokens alone; set summary.tokens >= 1 or "
                             "drop_frames: 0")
        if self.summary.reads not in ("fused", *self.encoders):
            raise ValueError(f"summary.reads must be 'fused' or one of the encoders {sorted(self.encoders)}, found "
                             f"{self.summary.reads!r}; fix summary.reads")
        names = set(self.encoders)
        f = self.fusion
        identity = {k for k, e in self.encoders.items() if e.adapter.kind == "identity"}
        if f.kind == "sum":
            if identity:
                raise ValueError(
                    f"fusion.kind=sum needs every adapter to project to the LLM; encoders.{sorted(identity)[0]}"
                    ".adapter.kind=identity is only valid with fusion.kind=perceiver"
                )
            return self
        if f.main in f.order or len(set(f.order)) != len(f.order):
            raise ValueError(f"fusion.order {f.order} must be distinct and must not contain fusion.main={f.main!r}")
        if {f.main, *f.order} != names:
            raise ValueError(
                f"fusion.main + fusion.order = {sorted({f.main, *f.order})} must name exactly the configured "
                f"encoders {sorted(names)}; fix fusion.order or the encoders section"
            )
        if f.kind == "cross_attention" and identity:
            raise ValueError(f"fusion.kind=cross_attention needs projecting adapters; {sorted(identity)} are identity")
        if f.kind == "perceiver":
            if f.main in identity:
                raise ValueError(f"encoders.{f.main}.adapter must project to the LLM (it is fusion.main)")
            if set(f.order) - identity:
                raise ValueError(
                    f"fusion.kind=perceiver feeds native features: encoders {sorted(set(f.order) - identity)} "
                    "need adapter.kind=identity"
                )
        return self
