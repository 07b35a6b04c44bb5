"""Loading a config: YAML presets with `base:` chains, dotted command-line overrides, validation errors that name
the key, and the resolved config written back out.

    cfg = load_config(ModelConfig, "tiny", ["fusion.kind=sum", "encoders.whisper.layers=[1,2]"])

Presets live in `alarm/presets/<section>/<name>.yaml` and may start from another preset with `base: <name>`,
holding only the deltas. Overrides are `a.b.c=value`, the value parsed as YAML. Unknown keys are rejected with the
list of valid keys at that level. Imports pydantic and yaml only (no torch), so `--help` and `--print-config` are
instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from alarm.config.keys import check_path, clean_loc
from alarm.errors import ConfigError
from alarm.files import atomic_write

PRESETS_DIR = Path(__file__).parent.parent / "presets"

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


def format_validation_error(cls: type[BaseModel], data: Any, err: ValidationError) -> str:
    """One line per error: the dotted key the user wrote (union tags dropped) and what is wrong with it."""
    lines = [f"invalid {cls.__name__}:"]
    for e in err.errors():
        loc = clean_loc(cls, data, e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            try:
                check_path(cls, data, [str(p) for p in loc])
            except ConfigError as ce:
                msg = str(ce)
        lines.append(f"  {'.'.join(str(p) for p in loc) or '<top level>'}: {msg}")
    return "\n".join(lines)


def dump_config(cfg: BaseModel) -> str:
    return json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n"


def write_config(cfg: BaseModel, folder: str | Path, name: str = "config.json") -> Path:
    """Write the resolved config atomically next to an output (`folder/config.json`)."""
    return atomic_write(Path(folder) / name, dump_config(cfg))
