"""Adapter checkpoints: only the AudioAdapter's weights, in a folder that describes itself.

    folder/adapter.safetensors   every AudioAdapter tensor (no pickles: safe to load from anywhere)
    folder/model_config.json     the ModelConfig it was trained with
    folder/meta.json             format version, parameter count, sha256 of adapter.safetensors

Writes are atomic (a temporary sibling folder renamed into place). Loads check every key and shape and name each
mismatch. s3:// folders are resolved to a local folder by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from alarm.config import ModelConfig, dump_config, validate
from alarm.errors import CheckpointError, CheckpointMismatch, ConfigError
from alarm.files import fsync_path, replace_folder, staged_folder
from alarm.model.audio_adapter import AudioAdapter, build_audio_adapter

FORMAT_VERSION = 1
WEIGHTS, CONFIG, META = "adapter.safetensors", "model_config.json", "meta.json"


# ---------------------------------------------------------------------------------------------------------------
# saving


def save_adapter(adapter: AudioAdapter, cfg: ModelConfig, folder: str | Path, overwrite: bool = False) -> Path:
    """Write `adapter` and `cfg` to `folder` atomically.

    Args:
        adapter: the module to save (all of its parameters and buffers).
        cfg: the ModelConfig it was built from.
        folder: the checkpoint folder (local; created with its parents).
        overwrite: replace an existing, different checkpoint there.

    Returns:
        The folder.

    Raises:
        CheckpointError: the folder is an s3:// URI, a non-empty folder that is not a checkpoint, or a different
            checkpoint while `overwrite` is False.
    """
    folder = _local(folder)
    with staged_folder(folder) as tmp:
        state = {k: v.detach().to("cpu").contiguous() for k, v in adapter.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "num_parameters": sum(p.numel() for p in adapter.parameters()),
            "num_tensors": len(state),
            "sha256": _sha256(tmp / WEIGHTS),
        }
        _write_text(tmp / CONFIG, dump_config(cfg))
        _write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
        fsync_path(tmp / WEIGHTS)
        _install(tmp, folder, meta["sha256"], dump_config(cfg), overwrite)
    return folder


def _install(tmp: Path, folder: Path, sha: str, config_text: str, overwrite: bool) -> None:
    """Rename `tmp` onto `folder`; an existing checkpoint is replaced only if identical or `overwrite`."""
    if folder.exists():
        if not (folder / META).exists():
            if any(folder.iterdir()):
                raise CheckpointError(
                    f"{folder} exists and is not an adapter checkpoint (no {META}); refusing to replace it. "
                    "Choose an empty or new folder"
                )
            folder.rmdir()
        else:
            same = _read_meta(folder).get("sha256") == sha and (folder / CONFIG).read_text() == config_text
            if same:
                return
            if not overwrite:
                raise CheckpointError(
                    f"{folder} already holds a different adapter checkpoint; pass overwrite=True to replace it "
                    "or choose another folder"
                )
    replace_folder(tmp, folder)


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_adapter(
    folder: str | Path, cfg: ModelConfig | None = None, strict: bool = True
) -> tuple[AudioAdapter, ModelConfig]:
    """Rebuild an AudioAdapter from a checkpoint folder and load its weights.

    Args:
        folder: a local checkpoint folder written by `save_adapter`.
        cfg: a config to build from instead of the stored one; its adapter-relevant parts (LLM width, encoders,
            tapped-layer counts, adapters, fusion) must match the stored config.
        strict: require exactly the same keys. Shapes must always match.

    Returns:
        The adapter (encoders with `adapter_frozen` frozen) and the config it was built from.

    Raises:
        CheckpointError: files missing.
        CheckpointMismatch: corrupted weights, an incompatible `cfg`, or missing / unexpected / mis-shaped keys.
    """
    folder = _local(folder)
    stored = _read_config(folder)
    if cfg is not None:
        check_fit(stored, cfg, f"checkpoint {folder} was trained with a different adapter configuration",
                  "use the stored model_config.json or fix these keys", rebuild=True)
    cfg = cfg or stored
    state = _read_weights(folder)
    adapter = build_audio_adapter(cfg)
    expected = adapter.state_dict()
    _check_state(folder, expected, state, strict)
    adapter.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=strict)
    for k, e in cfg.encoders.items():
        if e.adapter_frozen:
            adapter.freeze_adapter(k)
    return adapter, cfg


def read_adapter_config(folder: str | Path) -> ModelConfig:
    """The model config a checkpoint was trained with (reads model_config.json only, not the weights)."""
    return _read_config(_local(folder))


def load_encoder_adapter(adapter: AudioAdapter, enc: str, folder: str | Path, freeze: bool = False) -> None:
    """Load ONE encoder's layer mix and adapter from a (single-encoder) checkpoint into `adapter`.

    Used to start fusion training from trained single-encoder adapters (`encoders.<enc>.adapter_init`). The
    checkpoint's separators and fusion are ignored (separators are re-initialised every run, as in ALARM).

    Raises:
        CheckpointMismatch: the checkpoint has no `enc`, or its keys / shapes for `enc` differ.
    """
    folder = _local(folder)
    stored = _read_config(folder)
    if enc not in stored.encoders:
        raise CheckpointMismatch(
            f"checkpoint {folder} has encoders {sorted(stored.encoders)}, not {enc!r}; fix encoders.{enc}.adapter_init"
        )
    prefixes = (f"mix.{enc}.", f"adapters.{enc}.")
    state = {k: v for k, v in _read_weights(folder).items() if k.startswith(prefixes)}
    expected = {k: v for k, v in adapter.state_dict().items() if k.startswith(prefixes)}
    _check_state(folder, expected, state, strict=True)
    adapter.load_state_dict(state, strict=False)
    if freeze:
        adapter.freeze_adapter(enc)


def load_encoder_adapters(
    adapter: AudioAdapter, cfg: ModelConfig, resolve: Callable[[str], Path] = Path
) -> list[str]:
    """Apply every `encoders.<enc>.adapter_init` (and `adapter_frozen`) of `cfg`; returns the encoders loaded.

    `resolve` turns a URI (folder or s3://) into a local folder; fetching is the caller's job.
    """
    loaded = []
    for k, e in cfg.encoders.items():
        if e.adapter_init is not None:
            load_encoder_adapter(adapter, k, resolve(e.adapter_init), freeze=e.adapter_frozen)
            loaded.append(k)
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# checks


def _check_state(folder: Path, expected: dict, found: dict, strict: bool) -> None:
    """Raise CheckpointMismatch naming every missing / unexpected key and every shape mismatch."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)} found {tuple(found[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(expected[k].shape) != tuple(found[k].shape)
    ]
    problems = []
    if missing and strict:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected and strict:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if shapes:
        problems.append("shape mismatches:\n    " + "\n    ".join(shapes))
    if problems:
        raise CheckpointMismatch(
            f"adapter checkpoint {folder} does not match the model built from the config:\n  "
            + "\n  ".join(problems)
        )


def fit_problems(adapter: ModelConfig, model: ModelConfig, *, rebuild: bool = False) -> list[str]:
    """Why an adapter trained with config `adapter` cannot run in the model `model` describes: one
    `key: checkpoint X, config Y` line per problem, none when it fits. The one rule of loading and serving.

    Always (the adapter reads what the model produces): the same LLM width; every encoder the adapter reads is
    one the model runs, with as many tapped layers of the same width. With `rebuild` (the adapter is built from
    `model`'s config instead of its own, as `load_adapter(folder, cfg)` does), also its structure: the same
    encoders, adapters, fusion (dropout aside: it changes no weights) and summary tokens (`drop_frames` aside:
    it acts in training only).
    """
    diffs = []

    def cmp(key: str, a, b) -> None:
        if a != b:
            diffs.append(f"{key}: checkpoint {a!r}, config {b!r}")

    cmp("llm.hidden_size", adapter.llm.hidden_size, model.llm.hidden_size)
    reads, runs = sorted(adapter.encoders), sorted(model.encoders)
    if reads != runs if rebuild else not set(reads) <= set(runs):
        diffs.append(f"encoders: checkpoint {reads!r}, config {runs!r}"
                     + ("" if rebuild else f" (the model does not run {sorted(set(reads) - set(runs))})"))
    for k in sorted(set(reads) & set(runs)):
        a, m = adapter.encoders[k], model.encoders[k]
        cmp(f"encoders.{k}.hidden_size", a.hidden_size, m.hidden_size)
        cmp(f"encoders.{k}.layers (count)", len(a.layers), len(m.layers))
        if rebuild:
            cmp(f"encoders.{k}.adapter", a.adapter.model_dump(), m.adapter.model_dump())
    if rebuild:
        af, mf = adapter.fusion.model_dump(), model.fusion.model_dump()
        for d in (af, mf):
            d.pop("dropout", None)
        cmp("fusion", af, mf)
        cmp("summary", adapter.summary.model_dump(exclude={"drop_frames"}),
            model.summary.model_dump(exclude={"drop_frames"}))
    return diffs


def check_fit(adapter: ModelConfig, model: ModelConfig, what: str, fix: str, *, rebuild: bool = False) -> None:
    """Raise CheckpointMismatch (`what`, every problem of `fit_problems`, then `fix`) unless the adapter fits."""
    diffs = fit_problems(adapter, model, rebuild=rebuild)
    if diffs:
        raise CheckpointMismatch(f"{what}:\n  " + "\n  ".join(diffs) + f"\n{fix}")


# ---------------------------------------------------------------------------------------------------------------
# files


def _local(folder: str | Path) -> Path:
    if str(folder).startswith("s3://"):
        raise CheckpointError(f"{folder}: resolve s3:// checkpoints to a local folder before loading or saving")
    return Path(folder)


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not an adapter checkpoint: {META} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointMismatch(f"{folder / META} is corrupted (not JSON: {e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatch(
            f"{folder}: checkpoint format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    return meta


def _read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG
    if not path.exists():
        raise CheckpointError(f"{folder} is not an adapter checkpoint: {CONFIG} is missing")
    try:
        return validate(ModelConfig, json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as e:
        raise CheckpointMismatch(f"{path} is corrupted or from an incompatible version: {e}") from None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    meta, path = _read_meta(folder), folder / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{folder} is not a complete adapter checkpoint: {WEIGHTS} is missing")
    sha = _sha256(path)
    if sha != meta.get("sha256"):
        raise CheckpointMismatch(
            f"{path} is corrupted: sha256 {sha} does not match {meta.get('sha256')} recorded in {META}; "
            "re-copy or re-save the checkpoint"
        )
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointMismatch(f"{path} is corrupted (unreadable safetensors: {e})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

