"""Typed configuration: pydantic models, YAML presets and dotted command-line overrides.

    cfg = load_config(ModelConfig, "tiny", ["fusion.kind=sum", "encoders.whisper.layers=[1,2]"])

Presets live in `alarm/presets/<section>/<name>.yaml` and may start from another preset with `base: <name>`,
holding only the deltas. Overrides are `a.b.c=value`, the value parsed as YAML. Unknown keys are rejected with the
list of valid keys at that level. Imports pydantic and yaml only (no torch), so `--help` and `--print-config` are
instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alarm.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"
ENCODER_KINDS = ("whisper", "w2vbert", "muq", "sslam")
EncoderKind = Literal["whisper", "w2vbert", "muq", "sslam"]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WithModel(Strict):
    """A config with a `model` section, which may be given as a model preset name (`model: tiny`)."""

    @model_validator(mode="before")
    @classmethod
    def _expand_model_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": read_preset("model", data["model"])}
        return data


# ---------------------------------------------------------------------------------------------------------------
# audio


class AudioConfig(Strict):
    max_duration_s: float = Field(
        60.0, gt=0, description="Clips at or above this many seconds are rejected (the paper drops >= 60 s; "
        "at 25 tokens/s longer clips overflow the LLM context)."
    )
    resample_quality: Literal["high", "fast"] = Field(
        "high", description="Polyphase FIR length: 'high' (Kaiser beta 8.6, 64 zero crossings) or 'fast' (16)."
    )


# ---------------------------------------------------------------------------------------------------------------
# adapters (one per encoder; the registry in alarm.model.adapters is keyed by the same `kind` literals)


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


# ---------------------------------------------------------------------------------------------------------------
# encoders


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


# ---------------------------------------------------------------------------------------------------------------
# fusion (registry in alarm.model.fusion keyed by the same `kind` literals)


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


# ---------------------------------------------------------------------------------------------------------------
# LLM and the whole model


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
    audio: AudioConfig = Field(default_factory=AudioConfig)
    separator_init_std: float = Field(
        1.0, gt=0, description="Init std of the learned audio start/end vectors (reference: randn, std 1)."
    )
    system_prompt: str | None = Field(
        "You are an audio-understanding model.", description="Default system turn at inference (none in training)."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
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


# ---------------------------------------------------------------------------------------------------------------
# corpus generation (python -m alarm.generate)

Family = Literal["transcript", "caption", "labels", "speaker", "turns", "quality", "music", "spoof", "generic"]


class SyntheticSourceConfig(Strict):
    kind: Literal["synthetic"] = "synthetic"
    name: str = Field("synthetic", description="Source name: the first part of every row key.")
    num_clips: int = Field(48, gt=0)
    seed: int = Field(0, description="Same seed -> the same clips, metadata and keys.")
    min_duration_s: float = Field(1.0, gt=0)
    max_duration_s: float = Field(8.0, gt=0)
    sample_rate: int = Field(16000, gt=0)


class ManifestSourceConfig(Strict):
    kind: Literal["manifest"] = "manifest"
    name: str = Field(description="Source name: the first part of every row key (e.g. esc50).")
    path: str = Field(description="JSONL, CSV or Parquet manifest, local or s3://.")
    family: Family = Field("generic", description="Describer for the metadata fields (method.md §2.1).")
    family_column: str | None = Field(
        None, description="Optional column naming each row's describer (a mixed manifest); overrides `family`."
    )
    id_column: str = Field("id", description="Unique item id within the source.")
    audio_column: str = Field("audio", description="Audio path or URI; relative paths resolve next to the manifest.")
    prompt_column: str | None = Field(None, description="Optional column with a given prompt (instruction data).")
    instruction: bool = Field(False, description="Instruction data: the prompt is given, R0 is not rephrased.")
    limit: int | None = Field(None, gt=0, description="Read at most this many rows (smoke runs).")


class HFDatasetSourceConfig(Strict):
    kind: Literal["hf_dataset"] = "hf_dataset"
    name: str
    path: str = Field(description="A dataset saved with datasets.save_to_disk (local folder).")
    split: str | None = Field(None, description="Split to read when the folder holds a DatasetDict.")
    family: Family = "generic"
    id_column: str | None = Field(None, description="Unique id column; default: the row index.")
    audio_column: str = "audio"
    limit: int | None = Field(None, gt=0)


SourceConfig = Annotated[
    SyntheticSourceConfig | ManifestSourceConfig | HFDatasetSourceConfig, Field(discriminator="kind")
]


class EngineConfig(Strict):
    """One vLLM engine per worker actor."""

    checkpoint: str = Field(description="Model for generation and rephrasing: hub id, folder, s3:// or tiny://.")
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(8192, gt=0)
    max_num_seqs: int = Field(256, gt=0, description="Sequences the engine batches at once.")
    enable_prefix_caching: bool = True
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile (faster start, CPU tests).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)
    seed: int | None = Field(None, description="Sampling seed; None = the recipe's unseeded sampling.")


class SamplingConfig(Strict):
    temperature: float = Field(0.6, ge=0, description="Qwen3-Thinking recommended sampling (0 = greedy).")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(20, ge=-1)


class GenerateStageConfig(Strict):
    max_tokens: int = Field(512, gt=0, description="R0 cap, thinking included (many R0 end mid-reasoning).")
    system_prompt: str | None = Field(
        "You are an audio-understanding model. You receive audio enclosed in <start_audio> and <end_audio> "
        "together with a prompt. Listen to the audio and respond directly to the prompt.",
        description="System turn for self-generation (none for instruction sources).",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class RephraseStageConfig(Strict):
    enabled: bool = True
    thinking_budget: int = Field(1536, gt=0, description="Phase-1 cap before the budget-forcing sentence.")
    max_tokens: int = Field(4096, gt=0, description="Cap on the answer after thinking (phase 2).")
    max_total_tokens: int = Field(
        4096, gt=0, description="Hard cap on phase 1 + phase 2 new tokens (the reference left it unbounded)."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class PromptStageConfig(Strict):
    mode: Literal["template", "llm"] = Field(
        "template", description="template: a deterministic pick from a pool per task family; llm: writer + checker."
    )
    candidates: int = Field(5, gt=0, description="LLM writer: candidate prompts per item.")
    max_tokens: int = Field(1024, gt=0, description="LLM writer/checker output cap.")


class LeakConfig(Strict):
    judge: bool = Field(False, description="Also ask the LLM judge (the published recipe ran without it).")
    max_tokens: int = Field(512, gt=0)


class FilterConfig(Strict):
    min_target_tokens: int = Field(100, ge=0, description="Targets shorter than this are flagged (over-shortened).")
    max_target_tokens: int = Field(612, gt=0, description="Targets longer are flagged (rephraser's own thinking).")
    max_duration_s: float = Field(60.0, gt=0, description="Clips at or above this are flagged.")
    drop_leaks: bool = Field(False, description="Flag rows whose target still trips the lexical leak detector.")


class SplitConfig(Strict):
    val_fraction: float = Field(0.1, ge=0, lt=1)
    salt: str = Field("123", description="Hash salt: the split is a pure function of (salt, key).")


class WorkersConfig(Strict):
    num_workers: int = Field(1, gt=0, description="vLLM worker actors (one engine each).")
    batch_size: int = Field(64, gt=0, description="Rows per call into a worker; the engine batches them.")
    num_gpus: float = Field(0, ge=0, description="GPUs per worker (0 on CPU).")
    num_cpus: float = Field(1, gt=0, description="Logical CPUs per worker.")
    max_restarts: int = Field(2, ge=0, description="Actor restarts after a crash before the job fails.")


class CorpusConfig(Strict):
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Output folder name; rerun to resume.")
    output: str = Field("runs", description="Local folder or s3://bucket/prefix; the run is written to output/run_id.")
    sources: list[SourceConfig] = Field(min_length=1)
    engine: EngineConfig
    prompts: PromptStageConfig = Field(default_factory=PromptStageConfig)
    generate: GenerateStageConfig = Field(default_factory=GenerateStageConfig)
    rephrase: RephraseStageConfig = Field(default_factory=RephraseStageConfig)
    leak: LeakConfig = Field(default_factory=LeakConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    shard_rows: int = Field(256, gt=0, description="Rows per committed Parquet shard.")
    ray_address: str | None = Field(None, description="Ray cluster address; None = connect if RAY_ADDRESS is set, else start locally.")
    ray_num_cpus: int | None = Field(None, gt=0, description="Logical CPUs for a locally started Ray (oversubscribe small machines).")

    @model_validator(mode="after")
    def _check(self) -> CorpusConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"sources: names must be unique (they prefix row keys), {dup} repeat")
        for i, s in enumerate(self.sources):
            if "/" in s.name:
                raise ValueError(f"sources.{i}.name={s.name!r} must not contain '/' (it prefixes row keys)")
            if isinstance(s, SyntheticSourceConfig) and s.min_duration_s > s.max_duration_s:
                raise ValueError(f"sources.{i}: min_duration_s > max_duration_s")
        if self.filters.min_target_tokens > self.filters.max_target_tokens:
            raise ValueError("filters.min_target_tokens must be <= filters.max_target_tokens")
        if self.rephrase.max_total_tokens < self.rephrase.thinking_budget:
            raise ValueError("rephrase.max_total_tokens must be >= rephrase.thinking_budget")
        need = self.generate.max_tokens + 1024
        if self.engine.max_model_len < need:
            raise ValueError(f"engine.max_model_len={self.engine.max_model_len} leaves no room: R0 alone can take "
                             f"generate.max_tokens={self.generate.max_tokens} plus the prompt (need >= {need})")
        return self


# ---------------------------------------------------------------------------------------------------------------
# adapter training (python -m alarm.train)


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0, description="AdamW peak learning rate (recipe: 1e-4).")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(1500, ge=0, description="Linear warmup, then cosine decay to 0 (optimizer steps).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")


class BatchConfig(Strict):
    per_worker: int = Field(4, gt=0, description="Examples per worker per micro-step.")
    effective: int = Field(64, gt=0, description="Examples per optimizer step (per_worker x workers x accum).")
    max_length: int = Field(4096, gt=0, description="LLM positions per example (model_max_length).")
    bucket_by_duration: bool = Field(True, description="Group clips of similar length to limit padding.")
    window_batches: int = Field(
        16, gt=0, description="Micro-batches' worth of streamed rows bucketed and shuffled together each epoch (held "
        "in the worker's memory). A window as large as the corpus gives every epoch a new order over all of it; "
        "smaller windows keep the stream's order between windows.")


class EncoderPoolConfig(Strict):
    actors: int = Field(1, gt=0, description="Encoder actors per encoder.")
    num_gpus: float = Field(0, ge=0, description="GPU fraction per encoder actor.")
    num_cpus: float = Field(0.5, gt=0)
    batch_size: int = Field(8, gt=0, description="Clips per encoder call.")
    cache: bool = Field(
        False, description="Encode every clip once, keep the states in the Ray object store and reuse them every "
        "epoch (small corpora: the states of all clips must fit; the encoder actors are released before training)."
    )
    cache_dir: str | None = Field(
        None, description="A local folder (on every node) holding each clip's states by a hash of the encoder and "
        "the clip: clips found there are not encoded again (ablations on one corpus, questions sharing a clip, "
        "reruns). float32 as encoded, about T x layers x width x 4 bytes per clip."
    )


class TrainWorkersConfig(Strict):
    num_workers: int = Field(1, ge=0, description="Ray Train workers (DDP); 0 = in-process local mode.")
    use_gpu: bool = False
    num_cpus: float = Field(1, gt=0)
    max_failures: int = Field(2, ge=0, description="Worker failures survived by restarting from the last checkpoint.")


class TrainConfig(WithModel):
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; rerun to resume.")
    output: str = Field("runs", description="Local folder or s3://bucket/prefix; the run goes to output/run_id.")
    corpus: str = Field(description="A corpus run folder written by alarm.generate (local or s3://).")
    model: ModelConfig = Field(description="The model (a model preset name is expanded).")
    init_adapter: str | None = Field(None, description="Start from this adapter checkpoint (folder or s3://).")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    epochs: float = Field(2, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Cap on the run's optimizer steps (shapes the schedule).")
    stop_after: int | None = Field(
        None, gt=0, description="End this invocation after this many steps (checkpointed), keeping the full run's "
        "schedule; rerun to continue (time-limited or preemptible jobs)."
    )
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU.")
    eval_every: int = Field(200, gt=0, description="Optimizer steps between validation passes.")
    eval_batches: int = Field(20, gt=0, description="Validation batches per pass (a fixed subset).")
    checkpoint_every: int = Field(200, gt=0, description="Optimizer steps between checkpoints.")
    num_to_keep: int = Field(2, gt=0, description="Checkpoints kept (the last ones).")
    log_every: int = Field(10, gt=0)
    workers: TrainWorkersConfig = Field(default_factory=TrainWorkersConfig)
    encoders: EncoderPoolConfig = Field(default_factory=EncoderPoolConfig)
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(None, gt=0)


    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        per_step = self.batch.per_worker * max(self.workers.num_workers, 1)
        if self.batch.effective % per_step:
            raise ValueError(
                f"batch.effective={self.batch.effective} must be a multiple of batch.per_worker x workers "
                f"= {per_step} (gradient accumulation takes whole micro-batches)"
            )
        return self

    @property
    def grad_accum(self) -> int:
        return self.batch.effective // (self.batch.per_worker * max(self.workers.num_workers, 1))


# ---------------------------------------------------------------------------------------------------------------
# serving (python -m alarm.serve; services/serve/app.py:build_app)


class AdapterSpec(Strict):
    checkpoint: str | None = Field(
        None, description="Adapter checkpoint written by alarm.train (folder or s3://). None = freshly initialised "
        "from `model` with `seed`: an untrained adapter, for demos and tests only."
    )
    seed: int = Field(0, description="Init seed when checkpoint is None.")


class AutoscalingSpec(Strict):
    """Ray Serve replica autoscaling for one deployment (serving.md §1.10)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2, gt=0, description="Requests in flight per replica to aim for.")
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(600, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must be <= max_replicas={self.max_replicas}")
        return self


class DeploymentSpec(Strict):
    """Resources, admission and scaling of one Serve deployment."""

    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    num_cpus: float = Field(1, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (fractions share one device).")
    memory_gb: float | None = Field(None, gt=0, description="Memory reserved per replica (scheduling only).")
    max_ongoing_requests: int = Field(16, gt=0, description="Requests a replica runs at once.")
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting per caller beyond that; more fail with RESOURCE_EXHAUSTED (-1 = no cap)."
    )
    graceful_shutdown_timeout_s: float = Field(
        20, ge=0, description="On downscale or upgrade, how long a replica may finish its requests before it is "
        "killed (long reasoning: set it to the client deadline)."
    )


class EncoderDeploymentSpec(DeploymentSpec):
    max_batch_size: int = Field(8, gt=0, description="@serve.batch: clips per encoder forward.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="@serve.batch: wait this long to fill a batch.")


class ServeDeploymentsConfig(Strict):
    ingress: DeploymentSpec = Field(default_factory=lambda: DeploymentSpec(num_cpus=0.5, max_ongoing_requests=64))
    encoder: EncoderDeploymentSpec = Field(
        default_factory=EncoderDeploymentSpec, description="Every encoder deployment, unless encoder_overrides names it."
    )
    encoder_overrides: dict[EncoderKind, EncoderDeploymentSpec] = Field(default_factory=dict)
    fusion: DeploymentSpec = Field(default_factory=DeploymentSpec)
    llm: DeploymentSpec = Field(default_factory=lambda: DeploymentSpec(max_ongoing_requests=64, max_queued_requests=128))

    def for_encoder(self, name: str) -> EncoderDeploymentSpec:
        return self.encoder_overrides.get(name, self.encoder)


class LLMServeConfig(Strict):
    """The LLM deployment's engine (one per replica)."""

    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="vllm: AsyncLLM with prompt_embeds (continuous batching); hf: transformers "
        "generate(inputs_embeds=...), one request at a time, for machines without vLLM."
    )
    max_model_len: int = Field(8192, gt=0, description="Prompt + new tokens per request.")
    max_num_seqs: int = Field(64, gt=0, description="Sequences the engine batches at once.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)
    enable_prefix_caching: bool = Field(
        False, description="Off: prompt-embedding masks are missing from prefix-cache keys in some vLLM versions "
        "(serving.md §2.9); enable only with the regression test passing."
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile (fast start; CPU).")


class RequestDefaults(Strict):
    """What a request's unset (0 / absent) fields mean."""

    max_thinking_tokens: int = Field(1024, gt=0)
    max_tokens: int = Field(8192, gt=0, description="Lowered to what fits the context when the request leaves it 0.")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(20, ge=0)


class ServeLimits(Strict):
    max_message_bytes: int = Field(
        32 * 2**20, gt=0, description="gRPC messages over this fail with RESOURCE_EXHAUSTED (Ray's default is 2 GiB)."
    )
    max_prompt_chars: int = Field(16384, gt=0)
    max_ensemble: int = Field(4, ge=2, description="Most adapters in one ALARM-E request.")
    audio_uri_prefixes: list[str] = Field(
        default_factory=list, description="audio_uri must start with one of these (e.g. s3://bucket/audio/); the "
        "server reads them with its own credentials, so list only what clients may read. Empty = audio_uri off."
    )


class ServeConfig(WithModel):
    name: str = Field("alarm", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="Serve application name.")
    model: ModelConfig = Field(description="Encoders, LLM and prompt format (a model preset name is expanded).")
    adapters: dict[str, AdapterSpec] = Field(
        min_length=1, description="Adapter id -> checkpoint; clients pick one with adapter_id (several = ALARM-E)."
    )
    default_adapter: str = Field(description="The adapter used when a request names none.")
    max_adapters_per_replica: int = Field(4, gt=0, description="@serve.multiplexed LRU size in the fusion replicas.")
    llm: LLMServeConfig = Field(default_factory=LLMServeConfig)
    defaults: RequestDefaults = Field(default_factory=RequestDefaults)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    deployments: ServeDeploymentsConfig = Field(default_factory=ServeDeploymentsConfig)
    host: str = Field("127.0.0.1", description="Proxy bind address (0.0.0.0 in containers).")
    grpc_port: int = Field(9000, gt=0, lt=65536)
    http_port: int = Field(8000, gt=0, lt=65536, description="Serve's HTTP proxy (KubeRay probes /-/healthz on it).")
    request_timeout_s: float | None = Field(None, gt=0, description="Server-side end-to-end limit per request.")
    ray_address: str | None = Field(None, description="Ray cluster; None = RAY_ADDRESS if set, else start locally.")
    ray_num_cpus: int | None = Field(None, gt=0, description="Logical CPUs of a locally started Ray.")


    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.default_adapter not in self.adapters:
            raise ValueError(
                f"default_adapter={self.default_adapter!r} is not one of adapters {sorted(self.adapters)}"
            )
        if self.grpc_port == self.http_port:
            raise ValueError(f"grpc_port and http_port must differ, both are {self.grpc_port}")
        bad = [p for p in self.limits.audio_uri_prefixes if not p.startswith("s3://") or p.count("/") < 3]
        if bad:
            raise ValueError(
                f"limits.audio_uri_prefixes {bad}: each must be an s3://bucket/ prefix (ending in a bucket or folder)"
            )
        return self


CONFIG_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig, "corpus": CorpusConfig, "train": TrainConfig, "serve": ServeConfig,
}

# ---------------------------------------------------------------------------------------------------------------
# loading

C = TypeVar("C", bound=BaseModel)


def preset_names(section: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS_DIR / section).glob("*.yaml"))


def read_preset(section: str, preset: str | Path, _seen: tuple = ()) -> dict:
    """A preset as a plain dict with its `base:` chain merged. `preset` is a name or a YAML path."""
    path = Path(preset)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = PRESETS_DIR / section / f"{preset}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown {section} preset {str(preset)!r}; valid presets: {', '.join(preset_names(section))} "
                "(or pass a path to a .yaml file)"
            )
    if path in _seen:
        raise ConfigError(f"preset base cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must hold a mapping at the top level, found {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    return deep_merge(read_preset(section, base, (*_seen, path)), data)


def deep_merge(base: dict, delta: dict) -> dict:
    """`delta` over `base`; mappings merge recursively, a `null` in delta deletes the key."""
    out = dict(base)
    for k, v in delta.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and "kind" not in v:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[C], preset: str | Path | None, overrides: list[str] = (), section: str = "model") -> C:
    """Validate `preset` (a name, a YAML path, or None for an empty mapping) plus dotted overrides into `cls`."""
    data = read_preset(section, preset) if preset is not None else {}
    if isinstance(data.get("model"), str) and "model" in getattr(cls, "model_fields", {}):
        data["model"] = read_preset("model", data["model"])  # `model: tiny` in a train preset
    for item in overrides:
        if item.startswith("model=") and "model" in getattr(cls, "model_fields", {}):
            data["model"] = read_preset("model", item.partition("=")[2].strip())
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        path = key.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {e}") from e
        check_path(cls, data, path)
        data = set_path(data, path, value)
    return validate(cls, data)


def validate(cls: type[C], data: Any) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(cls, data, e)) from None


def set_path(data: dict, path: list[str], value: Any) -> dict:
    """A copy of `data` with `value` at `path` (list elements by index: `sources.0.num_clips`)."""
    out = dict(data)
    node: Any = out
    for k in path[:-1]:
        if isinstance(node, list):
            i = _index(node, k, path)
            node[i] = _copy(node[i])
            node = node[i]
        else:
            node[k] = _copy(node.get(k)) if isinstance(node.get(k), (dict, list)) else {}
            node = node[k]
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    elif value is None:
        node.pop(last, None)
    elif last == "kind" and node.get("kind") not in (None, value):
        node.clear()  # switching a component's kind drops the old kind's settings
        node["kind"] = value
    elif isinstance(value, dict) and isinstance(node.get(last), dict) and "kind" not in value:
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = value
    return out


def _copy(x: Any) -> Any:
    return dict(x) if isinstance(x, dict) else list(x) if isinstance(x, list) else x


def _index(node: list, key: str, path: list[str]) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"{'.'.join(path)}: index {key} is out of range (the list has {len(node)} items)")
    return int(key)


def check_path(cls: type[BaseModel], data: Any, path: list[str]) -> None:
    """Raise ConfigError naming the valid keys if `path` does not exist in the schema of `cls`."""
    tp: Any = cls
    node = data
    for depth, key in enumerate(path):
        tp = _unwrap(tp, node)
        here = ".".join(path[:depth]) or "<top level>"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if key not in tp.model_fields:
                raise ConfigError(
                    f"unknown config key {'.'.join(path[: depth + 1])!r}; valid keys under {here}: "
                    f"{', '.join(tp.model_fields)}"
                )
            tp = tp.model_fields[key].annotation
        elif get_origin(tp) is dict:
            key_tp, tp = get_args(tp)
            allowed = get_args(key_tp) if get_origin(key_tp) is Literal else ()
            if allowed and key not in allowed:
                raise ConfigError(
                    f"unknown key {'.'.join(path[: depth + 1])!r}; valid keys under {here}: {', '.join(allowed)}"
                )
        elif get_origin(tp) is list:
            if not key.isdigit():
                raise ConfigError(f"{here} is a list; index it with a number, not {key!r}")
            tp = get_args(tp)[0]
        else:
            raise ConfigError(f"{here} is a plain value and has no key {key!r}")
        node = node.get(key) if isinstance(node, dict) else None


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip Annotated/Optional and pick the discriminated-union member that `node['kind']` selects."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
            members = [a for a in get_args(tp) if a is not type(None)]
            kind = node.get("kind") if isinstance(node, dict) else None
            chosen = [m for m in members if _kind_of(m) == kind] or members[:1]
            tp = chosen[0]
        else:
            return tp


def _kind_of(tp: Any) -> str | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "kind" in tp.model_fields:
        return tp.model_fields["kind"].default
    return None


def format_validation_error(cls: type[BaseModel], data: Any, err: ValidationError) -> str:
    lines = [f"invalid {cls.__name__}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = [str(p) for p in e["loc"][:-1] if not (isinstance(p, str) and p in _UNION_TAGS)]
            try:
                check_path(cls, data, [*parent, str(e["loc"][-1])])
            except ConfigError as ce:
                msg = str(ce)
        lines.append(f"  {loc or '<top level>'}: {msg}")
    return "\n".join(lines)


_UNION_TAGS = {"downsample", "mlp", "identity", "sum", "cross_attention", "perceiver"}


def dump_config(cfg: BaseModel) -> str:
    return json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n"


def write_config(cfg: BaseModel, folder: str | Path, name: str = "config.json") -> Path:
    """Write the resolved config atomically next to an output (`folder/config.json`)."""
    from alarm.files import atomic_write

    return atomic_write(Path(folder) / name, dump_config(cfg))


def main(argv: list[str] | None = None) -> None:
    """`python -m alarm.config [--preset NAME] [key=value ...]`: validate a model config and print it."""
    import argparse

    from alarm.cli import add_config_args, config_from_args

    parser = argparse.ArgumentParser(prog="python -m alarm.config", description=main.__doc__)
    add_config_args(parser, "model", "tiny")
    args = parser.parse_args(argv)
    args.print_config = True
    config_from_args(args, ModelConfig, "model")


if __name__ == "__main__":
    main()
