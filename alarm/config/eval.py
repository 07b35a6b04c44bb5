"""The evaluation schemas (`python -m alarm.eval`): a benchmark run through the serving path (`EvalConfig`) and the
rescoring of a finished run (`ScoreConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alarm.config.base import Strict
from alarm.config.serve import ServeArgs

Benchmark = Literal["mmau", "mmar", "mmsu", "airbench"]
PromptFormat = Literal["alarm", "native"]
ParseMode = Literal["standard", "reference"]
Fallback = Literal["none", "first", "random"]


class Scoring(Strict):
    """How answers are parsed and scored: the same keys for a run and for rescoring it."""

    scorer: Literal["official", "strict", "both"] = Field(
        "both", description="official: the benchmark's own scorer; strict: ours; both."
    )
    parse: ParseMode = Field(
        "standard", description="standard (ours) or reference (ALARM's int() parse / the official letter rule)."
    )
    fallback: Fallback = Field(
        "none", description="Unparsable answers: none = no option, scored wrong (the default, with every parse "
        "mode), first = option 0 (what ALARM did), random = seeded by `seed`."
    )
    seed: int | None = Field(None, description="Sampling seed of every request; also seeds the random fallback.")
    limit: int | None = Field(None, gt=0, description="Only the first N questions.")

    @property
    def scorers(self) -> tuple[str, ...]:
        return ("official", "strict") if self.scorer == "both" else (self.scorer,)


class EvalRun(Strict):
    """What to evaluate, and how the questions are asked."""

    benchmark: Benchmark = Field(description="MMAU, MMAR, MMSU or AIR-Bench Foundation.")
    meta: list[str] = Field(min_length=1, description="Metadata .json/.jsonl files (several: merged by id).")
    audio_root: str = Field(description="Folder or s3://bucket/prefix the metadata's audio paths are relative to.")
    out: str = Field(description="Results folder; rerun with the same one to resume.")
    target: str | None = Field(
        None, pattern=r"^(openai://)?[^/\s]+:\d+(/\S*)?$", description="A running server: host:port (ours, gRPC) or "
        "openai://host:port/v1 (any OpenAI-compatible chat server with audio input: ours, vllm serve, ...); None = "
        "the in-process pipeline."
    )
    model: str | None = Field(
        None, description="The adapter id (gRPC) or model name (openai://) to ask; None = the server's default (for "
        "openai://, the model GET /v1/models marks default, else its first)."
    )
    tls: bool = Field(False, description="Connect to target over TLS (https for openai://).")
    ca: str | None = Field(None, description="PEM file of the CA to trust for tls (None = the system's roots).")
    token_file: str | None = Field(
        None, description="File holding the bearer token the server requires; unset = $ALARM_TOKEN if set."
    )
    serve: ServeArgs = Field(
        default_factory=ServeArgs, description="The in-process serving pipeline (when target is unset): a serve "
        "preset and overrides, e.g. serve.overrides=[adapters.tiny.checkpoint=runs/x/adapter]."
    )
    format: PromptFormat = Field(
        "alarm", description="alarm (<answer> option ids) or native (the benchmark's own answer format)."
    )
    max_thinking_tokens: int = Field(
        8192, ge=-1, description="Thinking budget (paper: 8192; 0 = the server's default, -1 = unlimited)."
    )
    max_tokens: int = Field(
        0, ge=0, description="New tokens in all, thinking included (0 = the server's default, fitted to the context)."
    )
    temperature: float | None = Field(None, ge=0, description="Sampling temperature; None = the server's.")
    crop_audio_s: float | None = Field(
        None, gt=0, description="Send clips cut to their first N seconds (ALARM cropped AIR-Bench to 60 s; the "
        "server rejects clips at or over its audio.max_duration_s, so use e.g. 59.9)."
    )
    concurrency: int = Field(8, gt=0, description="Requests in flight.")
    max_errors: int = Field(10, ge=0, description="Stop after this many failed requests.")
    timeout_s: float = Field(900.0, gt=0, description="gRPC deadline per request, seconds.")


class EvalConfig(Scoring, EvalRun):  # (this base order lists the run's keys first)
    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.fallback == "random" and self.seed is None:
            raise ValueError("fallback=random needs seed (it seeds the random pick)")
        return self


class ScoreRun(Strict):
    """Rescoring a run folder; what is unset comes from its run.json."""

    out: str = Field(description="The run's results folder.")
    predictions: str | None = Field(None, description="Predictions file; None = OUT/predictions.jsonl.")
    benchmark: Benchmark | None = Field(None, description="None = the run's.")
    meta: list[str] = Field(default_factory=list, description="Metadata files; empty = the run's.")
    format: PromptFormat | None = Field(None, description="The prompt format of the run; None = the run's.")


class ScoreConfig(Scoring, ScoreRun):
    pass
