"""Typed configuration: one pydantic schema module per command (model, corpus, train, serve, cluster), the shared
sections (`base`), and the loader of presets and dotted overrides (`loader`, `keys`).

    from alarm.config import ModelConfig, load_config
    cfg = load_config(ModelConfig, "tiny", ["fusion.kind=sum"])

Imports pydantic and yaml only (no torch), so `--help` and `--print-config` are instant.
"""

from alarm.config.base import JobStorageConfig, RayConfig, Strict, WithModel
from alarm.config.cluster import ClusterConfig
from alarm.config.corpus import (
    GENERATION_SYSTEM_PROMPT,
    CorpusConfig,
    EngineConfig,
    Family,
    FilterConfig,
    GenerateStageConfig,
    HFDatasetSourceConfig,
    LeakConfig,
    ManifestSourceConfig,
    ParquetSourceConfig,
    PromptStageConfig,
    RephraseStageConfig,
    SamplingConfig,
    SourceConfig,
    SplitConfig,
    SyntheticSourceConfig,
    WorkersConfig,
)
from alarm.config.eval import EvalConfig, ScoreConfig
from alarm.config.loader import (
    PRESETS_DIR,
    deep_merge,
    dump_config,
    format_validation_error,
    load_config,
    preset_names,
    read_preset,
    validate,
    write_config,
)
from alarm.config.model import (
    DEFAULT_SYSTEM_PROMPT,
    AdapterConfig,
    AudioConfig,
    CrossAttentionFusionConfig,
    DownsampleAdapterConfig,
    EncoderConfig,
    EncoderKind,
    FusionConfig,
    IdentityAdapterConfig,
    LLMConfig,
    MLPAdapterConfig,
    ModelConfig,
    PerceiverFusionConfig,
    SumFusionConfig,
    SummaryConfig,
)
from alarm.config.serve import (
    GRPC_MAX_MESSAGE_ENV,
    GRPC_SERVICE,
    AdapterSpec,
    AutoscalingSpec,
    DeploymentSpec,
    EncoderDeploymentSpec,
    LLMServeConfig,
    RequestDefaults,
    ServeArgs,
    ServeConfig,
    ServeDeploymentsConfig,
    ServeLimits,
)
from alarm.config.train import (
    BatchConfig,
    EncoderPoolConfig,
    OptimConfig,
    TrackingConfig,
    TrainConfig,
    TrainWorkersConfig,
)
from alarm.errors import ConfigError

__all__ = [
    "DEFAULT_SYSTEM_PROMPT", "GENERATION_SYSTEM_PROMPT", "GRPC_MAX_MESSAGE_ENV", "GRPC_SERVICE",
    "PRESETS_DIR", "AdapterConfig", "AdapterSpec", "AudioConfig", "AutoscalingSpec", "BatchConfig", "ClusterConfig",
    "ConfigError", "CorpusConfig", "CrossAttentionFusionConfig", "DeploymentSpec", "DownsampleAdapterConfig",
    "EncoderConfig", "EncoderDeploymentSpec", "EvalConfig", "EncoderKind", "EncoderPoolConfig", "EngineConfig", "Family",
    "FilterConfig", "FusionConfig", "GenerateStageConfig", "HFDatasetSourceConfig", "IdentityAdapterConfig",
    "LLMConfig", "LLMServeConfig", "LeakConfig", "MLPAdapterConfig", "ManifestSourceConfig", "ModelConfig",
    "JobStorageConfig", "OptimConfig", "ParquetSourceConfig", "PerceiverFusionConfig", "PromptStageConfig", "RayConfig", "RephraseStageConfig",
    "RequestDefaults", "SamplingConfig", "ScoreConfig", "ServeArgs", "ServeConfig", "ServeDeploymentsConfig", "ServeLimits", "SourceConfig",
    "SplitConfig", "Strict", "SumFusionConfig", "SummaryConfig", "SyntheticSourceConfig", "TrackingConfig", "TrainConfig", "TrainWorkersConfig",
    "WithModel", "WorkersConfig", "deep_merge", "dump_config", "format_validation_error", "load_config",
    "preset_names", "read_preset", "validate", "write_config",
]
