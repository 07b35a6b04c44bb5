"""Typed configuration: pydantic models, YAML presets and dotted command-line overrides.

    cfg = load_config(ModelConfig, "tiny", ["fusion.kind=sum", "encoders.whisper.layers=[1,2]"])

Presets live in `alarm/presets/<section>/<name>.yaml` and may start from another preset with `base: <name>`,
holding only the deltas. Overrides are `a.b.c=value`, the value parsed as YAML. Unknown keys are rejected with the
list of valid keys at that level. Imports pydantic and yaml only (no torch), so `--help` and `--print-config` are
instant.
"""

from __future__ import annotations

import json
import os
import tempfile
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


CONFIG_SECTIONS: dict[str, type[BaseModel]] = {"model": ModelConfig}

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
    for item in overrides:
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
    out = dict(data)
    node = out
    for k in path[:-1]:
        child = node.get(k)
        node[k] = dict(child) if isinstance(child, dict) else {}
        node = node[k]
    if value is None:
        node.pop(path[-1], None)
    elif path[-1] == "kind" and node.get("kind") not in (None, value):
        node.clear()  # switching a component's kind drops the old kind's settings
        node["kind"] = value
    elif isinstance(value, dict) and isinstance(node.get(path[-1]), dict) and "kind" not in value:
        node[path[-1]] = deep_merge(node[path[-1]], value)
    else:
        node[path[-1]] = value
    return out


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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        f.write(dump_config(cfg))
    os.replace(tmp, folder / name)
    return folder / name


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
