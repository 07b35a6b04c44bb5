"""The corpus-generation schema (`python -m alarm.generate`): sources, the vLLM engine, the generate / rephrase /
prompt / leak / filter stages, the split, the worker actors and Ray (`CorpusConfig`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote

from pydantic import Field, field_validator, model_validator

from alarm.config.base import RAY_RENAMED, JobStorageConfig, RayConfig, Strict
from alarm.config.loader import PRESETS_DIR, deep_merge, read_preset
from alarm.errors import ConfigError

# The system turn of self-generation (R0); instruction sources get none.
GENERATION_SYSTEM_PROMPT = (
    "You are an audio-understanding model. You receive audio enclosed in <start_audio> and <end_audio> "
    "together with a prompt. Listen to the audio and respond directly to the prompt."
)

Family = Literal["transcript", "caption", "labels", "speaker", "turns", "quality", "music", "spoof", "generic"]


# hf://datasets/OWNER/NAME@REVISION/PATH: the form huggingface_hub's HfFileSystem reads, revision pinned.
HF_URI = re.compile(r"^hf://datasets/(?P<repo>[^/@]+/[^/@]+)@(?P<revision>[^/]+)/(?P<path>.+)$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def pinned(path: str) -> str:
    """`path` if it is not hf://, or is hf:// pinned to a commit.

    A branch or tag is refused: HfFileSystem resolves it again at every listing and open, so a branch that moves
    during a run would give workers different files, and a rerun (resume) other rows under the same keys.
    """
    if not path.startswith("hf://"):
        return path
    m = HF_URI.match(path)
    if m is None:
        raise ValueError(f"{path!r} is not hf://datasets/OWNER/NAME@REVISION/PATH; pin the dataset's revision "
                         "(a commit sha) after '@' so every run reads the same files")
    if not COMMIT.match(m["revision"]):
        branch = unquote(m["revision"])
        raise ValueError(
            f"{path!r} names revision {m['revision']!r}, a branch or tag, not a commit: it can move during a run "
            "or between runs. Pin the commit: its 40-hex sha after '@', or `revision: SHA` on a parquet source or "
            f"recipe ({{recipe: NAME, revision: SHA}}); huggingface_hub's HfApi().dataset_info({m['repo']!r}, "
            f"revision={branch!r}).sha is the commit that branch is at now"
        )
    return path


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

    _pinned = field_validator("path")(pinned)


class HFDatasetSourceConfig(Strict):
    kind: Literal["hf_dataset"] = "hf_dataset"
    name: str
    path: str = Field(description="A dataset saved with datasets.save_to_disk (local folder).")
    split: str | None = Field(None, description="Split to read when the folder holds a DatasetDict.")
    family: Family = "generic"
    id_column: str | None = Field(None, description="Unique id column; default: the row index.")
    audio_column: str = "audio"
    limit: int | None = Field(None, gt=0)


class ParquetSourceConfig(Strict):
    kind: Literal["parquet"] = "parquet"
    name: str = Field(description="Source name: the first part of every row key (default: the recipe's name).")
    recipe: str | None = Field(None, description="The recipe (alarm/presets/sources/NAME.yaml) this source "
                               "was expanded from; informational once expanded.")
    path: str = Field(description="Parquet files: a file, a folder, or a glob; local, s3://bucket/..., or "
                      "hf://datasets/OWNER/NAME@REVISION/path/*.parquet (a Hugging Face dataset, revision pinned).")
    family: Family = Field("generic", description="Describer for the metadata fields (alarm.corpus.describe).")
    family_column: str | None = Field(None, description="Optional column naming each row's describer.")
    id_column: str | None = Field(None, description="Unique item id column; None: the row number (stable for a "
                                  "pinned revision).")
    audio_column: str = Field("audio", description="Audio: a {bytes, path} struct (the hub's Parquet exports), "
                              "bytes, or a path/URI string (relative to the Parquet file's folder).")
    prompt_column: str | None = Field(None, description="Optional column with a given prompt (instruction data).")
    instruction: bool = Field(False, description="Instruction data: the prompt is given, R0 is not rephrased.")
    columns: dict[str, str] | None = Field(
        None, description="Metadata fields the describer sees: {field: source column}, in this order; None = "
        "every column other than id/audio/prompt/family. Integer class labels are rendered as their names when "
        "the file carries the `datasets` features.")
    limit: int | None = Field(None, gt=0, description="Read at most this many rows, in file order (smoke runs).")
    revision: str | None = Field(
        None, pattern=COMMIT.pattern, description="For an hf:// path: the commit sha to read, in place of the "
        "revision the path names (a recipe that names a branch is refused without it).")

    @model_validator(mode="before")
    @classmethod
    def _set_revision(cls, data: Any) -> Any:
        rev, path = (data.get("revision"), data.get("path")) if isinstance(data, dict) else (None, None)
        if not (isinstance(rev, str) and COMMIT.match(rev)):
            return data  # absent, or refused by its pattern
        m = HF_URI.match(path) if isinstance(path, str) else None
        if m is None:
            raise ValueError(f"revision={rev!r} applies to an hf://datasets/OWNER/NAME@REVISION/PATH path; "
                             f"path is {path!r}: drop the revision or point path at the hub")
        return {**data, "path": f"hf://datasets/{m['repo']}@{rev}/{m['path']}"}

    _pinned = field_validator("path")(pinned)


SourceConfig = Annotated[
    SyntheticSourceConfig | ManifestSourceConfig | HFDatasetSourceConfig | ParquetSourceConfig,
    Field(discriminator="kind"),
]
RECIPES_DIR = PRESETS_DIR / "sources"
# Keys of a recipe file that describe the dataset (licence, what was verified) rather than configure the source.
RECIPE_NOTES = ("about",)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def read_recipe(name: str) -> dict:
    """A recipe's raw mapping (its source settings plus `about`); a name or a path to a .yaml file."""
    if not isinstance(name, str):
        raise ConfigError(f"a source recipe is a name, found {name!r}; valid recipes: {', '.join(recipe_names())}")
    return read_preset("sources", name)


def expand_recipe(item: Any) -> Any:
    """`{recipe: NAME, ...overrides}` -> the recipe's parquet source with the overrides on top."""
    if not (isinstance(item, dict) and item.get("recipe")):
        return item
    base = {k: v for k, v in read_recipe(item["recipe"]).items() if k not in RECIPE_NOTES}
    return deep_merge({"name": item["recipe"], **base}, item)


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
    seed: int | None = Field(None, ge=0, description="Seed of each request's sampling; None: the engine's stream. "
                             "Rephrase retries set one per row and try (`rephrase.retries`).")


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
    retries: int = Field(
        0, ge=0, le=16, description="Rephrase a row again, sampled with `retry_sampling` and a seed of its own per "
        "row and try, while its rephrase cannot be parsed or earns a flag of its own that the filters drop: it "
        "names another option than R0 (`filters.drop_changed_answers`) or trips the lexical leak check "
        "(`filters.drop_leaks`); at most this many times. The first rephrase that passes is the row's; if none "
        "does, the last is kept and flagged. The LLM judge (`leak.judge`) is not retried. 0: the published recipe "
        "(one rephrase; rows it fails are dropped). Rows dropped this way are not a random sample: "
        "a rephraser that misreads one value drops the rows of one answer, and the student learns the other.")
    retry_sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                           description="Sampling of the retries (a greedy retry repeats the first).")

    @model_validator(mode="after")
    def _check_retry(self) -> RephraseStageConfig:
        if self.retries and self.retry_sampling.temperature == 0:
            raise ValueError("rephrase.retries needs rephrase.retry_sampling.temperature > 0: a greedy retry "
                             "writes the same rephrase again")
        return self


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
    drop_changed_answers: bool = Field(
        True, description="Flag rows of a multiple-choice prompt ('Options:' then '- option' lines, MMAU's native "
        "format) whose rephrased final answer no longer names the option R0's answer named: a rephrase must change "
        "wording, never the answer.")


class SplitConfig(Strict):
    val_fraction: float = Field(0.1, ge=0, lt=1)
    salt: str = Field("123", description="Hash salt: the split is a pure function of (salt, key).")


class WorkersConfig(Strict):
    num_workers: int = Field(1, gt=0, description="vLLM worker actors (one engine each).")
    engine: Literal["batch", "async"] = Field(
        "batch", description="batch: vLLM's LLM, one generate call per pass over a batch (every row of a batch "
        "waits for its slowest). async: each row starts its next pass as soon as its last one ends, up to "
        "engine.max_num_seqs rows in flight across batches; the engine is vLLM's own core stepped by a thread of the "
        "worker where the core runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the CPU default), else AsyncLLM "
        "(its core in a second process). Both write the same rows (greedy). bench/generate.py compares them on "
        "your hardware.")
    batch_size: int = Field(
        64, gt=0, description="Rows per call into a worker. With engine=async a worker takes enough calls at once "
        "to keep engine.max_num_seqs rows in flight.")
    num_gpus: float = Field(0, ge=0, description="GPUs per worker (0 on CPU).")
    num_cpus: float = Field(1, gt=0, description="Logical CPUs per worker.")
    engine_retries: int = Field(
        2, ge=0, description="engine=async: when a worker's vLLM engine dies, the worker builds a new one and reruns the rows "
        "that were in flight, each at most this many times; a row that meets a dead engine once more is flagged "
        "generate_failed.")


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
    storage: JobStorageConfig = Field(default_factory=JobStorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    def node_paths(self) -> dict[str, str]:
        """The paths this job's driver and workers open, by dotted key (`storage.shared` is about these): the
        output, the engine's checkpoint and each file source (read in Ray tasks, on any node). Audio files that
        local manifest rows name sit beside their manifest, so a manifest on a shared path covers them."""
        paths = {"output": self.output, "engine.checkpoint": self.engine.checkpoint}
        paths |= {f"sources.{i}.path": s.path for i, s in enumerate(self.sources) if getattr(s, "path", None)}
        return paths

    @model_validator(mode="before")
    @classmethod
    def _expand_recipes(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            data = {**data, "sources": [expand_recipe(s) for s in data["sources"]]}
        return data

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
