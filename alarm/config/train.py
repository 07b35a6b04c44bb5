"""The adapter-training schema (`python -m alarm.train`): optimizer, batching, the Ray Train workers, the encoder
actors and Ray (`TrainConfig`)."""

from __future__ import annotations

import importlib.util
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from alarm.config.base import RAY_RENAMED, JobStorageConfig, RayConfig, Strict, WithModel
from alarm.config.model import ModelConfig


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
        "epoch (small corpora: the states of all clips must fit; the encoder actors are released before training). "
        "The train and validation splits are encoded in one pass, by one set of encoder actors."
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


# tracking.backend -> (the module it imports, the pip package that provides it)
TRACKING_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


class TrackingConfig(Strict):
    """Where rank 0 also sends the run's metrics: TensorBoard event files in the run folder (`tensorboard --logdir
    <run>` while it trains), and optionally Weights & Biases or MLflow through Ray Train's integrations."""

    tensorboard: bool = Field(True, description="Write TensorBoard event files to <run>/tensorboard.")
    backend: Literal["none", "wandb", "mlflow"] = Field(
        "none", description="Also log to W&B (setup_wandb) or MLflow (setup_mlflow); the package must be installed."
    )
    project: str = Field("alarm", description="W&B project / MLflow experiment the run is logged under.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (e.g. file:///data/mlruns or http://host:5000); default: MLflow's "
        "(MLFLOW_TRACKING_URI). Ignored by W&B (WANDB_* variables and `wandb login` configure it).")

    @field_validator("backend")
    @classmethod
    def _installed(cls, backend: str) -> str:
        if backend in TRACKING_PACKAGES:
            module, package = TRACKING_PACKAGES[backend]
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"{backend} needs the {package!r} package, which is not installed: "
                                 f"pip install {package} (on every node of the cluster), or set tracking.backend=none")
        return backend


class TrainConfig(WithModel):
    renamed: ClassVar[dict[str, str]] = RAY_RENAMED

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
    log_every: int = Field(10, gt=0, description="Optimizer steps between progress lines and TensorBoard/tracker "
                           "records (rank 0).")
    report_every: int | None = Field(
        None, gt=0, description="Optimizer steps between metrics-only reports to Ray Train (what UserCallbacks and "
        "Result.metrics see); None: report only with each validation and checkpoint. Every report waits for the "
        "Train controller to collect the previous one, which it does once per health check "
        "(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default): reporting every 5 steps of 0.2 s doubled the toy's "
        "training time.")
    workers: TrainWorkersConfig = Field(default_factory=TrainWorkersConfig)
    encoders: EncoderPoolConfig = Field(default_factory=EncoderPoolConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: JobStorageConfig = Field(default_factory=JobStorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        per_step = self.batch.per_worker * max(self.workers.num_workers, 1)
        if self.batch.effective % per_step:
            raise ValueError(
                f"batch.effective={self.batch.effective} must be a multiple of batch.per_worker x workers "
                f"= {per_step} (gradient accumulation takes whole micro-batches)"
            )
        return self

    def node_paths(self) -> dict[str, str]:
        """The paths this job's driver and workers open, by dotted key (`storage.shared` is about these)."""
        paths = {"output": self.output, "corpus": self.corpus, "init_adapter": self.init_adapter,
                 "model.llm.checkpoint": self.model.llm.checkpoint}
        for name, e in self.model.encoders.items():
            paths |= {f"model.encoders.{name}.checkpoint": e.checkpoint,
                      f"model.encoders.{name}.adapter_init": e.adapter_init}
        return {k: v for k, v in paths.items() if v}

    @property
    def grad_accum(self) -> int:
        return self.batch.effective // (self.batch.per_worker * max(self.workers.num_workers, 1))
