"""Strict checkpoint loading shared by every encoder family, and the helpers that write tiny checkpoints.

    enc = load_encoder("whisper", folder, layers=[7, 15, 23, 31], hidden_size=1280)

Loading reads a local folder in the published checkpoint's own format (no hub access, no `trust_remote_code`) and
refuses anything that does not match key by key. Each family states its format in a `CheckpointFormat` (how to
build the module from config.json, which checkpoint key feeds which parameter); its `build_tiny` writes a
random-weight checkpoint in the same format (hidden 16, 2 layers) with `random_state` and `write_folder`, so that
the same loader serves tests and the `tiny` preset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alarm.encoders import EncoderFamily, family
from alarm.encoders.base import freeze
from alarm.errors import CheckpointError, CheckpointMismatch

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class CheckpointFormat:
    """How a family's published checkpoint is laid out: config.json fields and weight names."""

    build: Callable[[dict, list[int]], nn.Module]  # config.json dict, layers -> the frozen wrapper
    key: Callable[[str], str | None]  # checkpoint key -> parameter name, None = not used by the encoder
    hidden: str  # config.json field holding D
    depth: str  # config.json field holding the layer count
    states_per_depth: int  # hidden states = depth + this (embedding output counted or not)
    model_type: str | None  # required config.json model_type, if the format has one
    features: str | None  # config.json field holding F of the (B, T, F) inputs; None for raw waveforms
    optional: tuple[str, ...] = ("num_batches_tracked",)  # may be absent from a checkpoint (zero-filled)
    defaults: dict[str, Any] = field(default_factory=dict)  # the config class defaults a config.json may omit


def checkpoint_format(kind: str) -> tuple[EncoderFamily, CheckpointFormat]:
    """The record and the checkpoint format of family `kind` (ConfigError listing the valid names if unknown)."""
    fam = family(kind)
    return fam, fam.code().FORMAT


def hf_fields(cfg: dict) -> dict:
    """config.json without the fields a transformers config class sets itself."""
    return {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version")}


def _check_layers(kind: str, layers: list[int], n_states: int, where: str) -> None:
    bad = [i for i in layers if not 0 <= i < n_states]
    if not layers or bad:
        raise CheckpointMismatch(
            f"{where}: {kind} has {n_states} hidden states (indices 0..{n_states - 1}), but "
            f"layers={list(layers)} taps {bad or 'nothing'}; fix encoders.{kind}.layers"
        )


def build_encoder_meta(kind: str, layers: list[int] | None = None, tiny: bool = False) -> nn.Module:
    """The full-size (or tiny) encoder on the meta device from the record's config, without any files."""
    fam, fmt = checkpoint_format(kind)
    cfg = fam.tiny_config if tiny else fam.real_config
    layers = list(layers if layers is not None else (fam.tiny_layers if tiny else fam.layers))
    where = f"{kind} record ({'tiny' if tiny else 'real'})"
    _check_layers(kind, layers, int(cfg[fmt.depth]) + fmt.states_per_depth, where)
    with torch.device("meta"):
        return fmt.build(cfg, layers).to("meta")  # .to: a few legacy constructors ignore the device context


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_encoder(
    kind: str,
    folder: str | Path,
    layers: list[int],
    hidden_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load a frozen encoder from a local folder in the published checkpoint's format.

    Args:
        kind: a registered family ("whisper", "w2vbert", "muq", "sslam").
        folder: config.json + weights (model.safetensors, a sharded index, or pytorch_model.bin).
        layers: hidden-state indices to return, in this order.
        hidden_size: expected D (config `encoders.<kind>.hidden_size`); checked when given.
        device, dtype: where and in which float type the weights live.

    Raises:
        CheckpointError: the folder, its config.json or its weight files are missing or unreadable.
        CheckpointMismatch: hidden size, layer indices, or any weight name or shape differs from what the
            config.json architecture needs.
    """
    folder = Path(folder)
    cfg, fmt = _load_config(kind, folder), checkpoint_format(kind)[1]
    found_d = cfg.get(fmt.hidden)
    if hidden_size is not None and found_d != hidden_size:
        raise CheckpointMismatch(
            f"{folder}/config.json: {fmt.hidden}={found_d}, but encoders.{kind}.hidden_size={hidden_size}; "
            f"set hidden_size to {found_d} or use a checkpoint of width {hidden_size}"
        )
    _check_layers(kind, list(layers), int(cfg[fmt.depth]) + fmt.states_per_depth, str(folder))
    with torch.device("meta"):
        module = fmt.build(cfg, list(layers))
    tensors, origin = _read_weights(kind, folder, fmt.key)
    _assign(module, tensors, origin, folder, kind, fmt.optional, dtype)
    return freeze(module.to(device))


def checkpoint_feature_dim(kind: str, folder: str | Path) -> int | None:
    """F of the `(B, T, F)` features the checkpoint in `folder` takes (None: raw waveform), from config.json
    alone: what `load_encoder(kind, folder, ...).feature_dim` is, for processes that extract features without
    loading the encoder (the training data pipeline).

    Raises:
        CheckpointError, CheckpointMismatch: as `load_encoder` for the folder and its config.json.
    """
    cfg, fmt = _load_config(kind, Path(folder)), checkpoint_format(kind)[1]
    return None if fmt.features is None else int(cfg[fmt.features])


def _load_config(kind: str, folder: Path) -> dict:
    """config.json over the format's defaults, with the model_type checked."""
    fam, fmt = checkpoint_format(kind)
    cfg = {**fmt.defaults, **_read_config(kind, folder, fam)}
    if fmt.model_type is not None and cfg.get("model_type", fmt.model_type) != fmt.model_type:
        raise CheckpointMismatch(
            f"{folder}/config.json: expected model_type {fmt.model_type!r} for the {kind} encoder, found "
            f"{cfg.get('model_type')!r}; point encoders.{kind}.checkpoint at a {fam.checkpoint} checkpoint"
        )
    return cfg


def _read_config(kind: str, folder: Path, fam: EncoderFamily) -> dict:
    fix = f"download {fam.checkpoint} there, or point encoders.{kind}.checkpoint at tiny://{kind} (random weights)"
    if not folder.is_dir():
        raise CheckpointError(
            f"{kind} checkpoint folder {folder} does not exist; expected config.json and one of "
            f"{list(_WEIGHT_FILES)} in it; {fix}"
        )
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{kind} checkpoint {folder} has no config.json (expected {path}); {fix}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config.json ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    # PyTorchModelHubMixin (MuQ) writes the `config` init argument flat; accept a nested one too
    return cfg["config"] if set(cfg) == {"config"} and isinstance(cfg["config"], dict) else cfg


def _weight_files(kind: str, folder: Path) -> list[Path]:
    for name in _WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{path}: unreadable shard index ({e!r})") from e
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{path} lists shards missing from {folder}: {missing}")
            return [folder / s for s in shards]
    raise CheckpointError(
        f"{kind} checkpoint {folder} has no weights: expected one of {list(_WEIGHT_FILES)}, found "
        f"{sorted(p.name for p in folder.iterdir())}"
    )


def _read_weights(
    kind: str, folder: Path, key: Callable[[str], str | None]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors this encoder uses, by parameter name, and each name's original checkpoint key."""
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for path in _weight_files(kind, folder):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    for k in f.keys():
                        if (name := key(k)) is not None:
                            tensors[name], origin[name] = f.get_tensor(k), k
            else:
                for k, v in torch.load(path, map_location="cpu", weights_only=True, mmap=True).items():
                    if (name := key(k)) is not None:
                        tensors[name], origin[name] = v, k
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable weight file ({e})") from e
    return tensors, origin


def _assign(module: nn.Module, tensors: dict[str, Tensor], origin: dict[str, str], folder: Path, kind: str,
            optional: tuple[str, ...], dtype: torch.dtype) -> None:
    """Load `tensors` into the meta-device `module` key by key, or raise CheckpointMismatch naming the key."""
    expected = module.state_dict()
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointMismatch(
            f"{folder}: unexpected {kind} weight {origin[unexpected[0]]!r} ({len(unexpected)} in all: "
            f"{[origin[k] for k in unexpected[:5]]}); the config.json architecture has no such parameter — "
            "is this the right checkpoint and config?"
        )
    missing = [k for k in expected if k not in tensors and not k.endswith(optional)]
    if missing:
        raise CheckpointMismatch(
            f"{folder}: {kind} weight {missing[0]!r} is missing ({len(missing)} in all: {missing[:5]}); "
            "expected by the config.json architecture — the weight file is incomplete or renamed"
        )
    for k, ref in expected.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(ref.shape):
            raise CheckpointMismatch(
                f"{folder}: {kind} weight {origin[k]!r} has shape {tuple(tensors[k].shape)}, expected "
                f"{tuple(ref.shape)} from config.json; config and weights disagree"
            )
    state = {}
    for k, ref in expected.items():
        t = tensors.get(k, torch.zeros(ref.shape, dtype=ref.dtype))
        state[k] = t.to(dtype) if t.is_floating_point() else t
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    assert not left, f"{kind}: tensors left on the meta device after loading: {left[:5]}"


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoints (random weights, real on-disk formats)


def random_state(shapes: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Deterministic random tensors for a state dict layout (norm scales near 1, weights ~ 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape, dtype = tuple(shapes[name].shape), shapes[name].dtype
        if not dtype.is_floating_point:
            t = torch.zeros(shape, dtype=dtype)
        elif name.endswith("running_var"):
            t = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif len(shape) <= 1 and name.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) <= 1:
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[name] = t.to(torch.float32 if dtype.is_floating_point else dtype).contiguous()
    return out


def write_folder(out_dir: Path, config: dict, tensors: dict[str, Tensor]) -> None:
    """config.json (sorted keys) and model.safetensors, as the published checkpoints hold them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
