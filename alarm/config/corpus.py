"""The corpus-generation schema (`python -m alarm.generate`): sources, the vLLM engine, the generate / rephrase /
prompt / leak / filter stages, the split, the worker actors and Ray (`CorpusConfig`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from alarm.config.base import RAY_RENAMED, RayConfig, Strict

# The system turn of self-generation (R0); instruction sources get none.
GENERATION_SYSTEM_PROMPT = (
    "You are an audio-understanding model. You receive audio enclosed in <start_audio> and <end_audio> "
    "together with a prompt. Listen to the audio and respond directly to the prompt."
)

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
    family: Family = Field("generic", description="Describer for the metadata fields (alarm.corpus.describe).")
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
        GENERATION_SYSTEM_PROMPT,
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


class CorpusConfig(Strict):
    renamed: ClassVar[dict[str, str]] = RAY_RENAMED

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
    ray: RayConfig = Field(default_factory=RayConfig)

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
