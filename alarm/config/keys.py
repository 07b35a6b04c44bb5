"""The dotted-key space of a config schema, read from the pydantic models themselves: checking an override's path,
the dotted key of a validation error, and the key table `--help` prints (so none of them can drift from the
schema).

Discriminated unions (`adapter`, `fusion`, `sources.N`) are walked through the member their `kind` selects.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from alarm.errors import ConfigError


@dataclass(frozen=True)
class Names:
    """`Annotated` metadata of a string type whose valid values are known only at run time (e.g. the encoder
    families of a registry): error messages and `--help` list `names()`."""

    names: Any  # () -> Sequence[str]


def allowed_names(tp: Any) -> tuple[str, ...]:
    """The values a dict key type accepts: a Literal's, or a `Names`-annotated string's (else none known)."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) is Annotated:
        return next((tuple(m.names()) for m in tp.__metadata__ if isinstance(m, Names)), ())
    return ()


def check_path(cls: type[BaseModel], data: Any, path: list[str]) -> None:
    """Raise ConfigError naming the valid keys if `path` does not exist in the schema of `cls`."""
    tp: Any = cls
    node = data
    for depth, key in enumerate(path):
        tp = _unwrap(tp, node)
        here = ".".join(path[:depth]) or "<top level>"
        if _is_model(tp):
            if key not in tp.model_fields:
                new = getattr(tp, "renamed", {}).get(key)
                if new is not None:
                    raise ConfigError(renamed_message(".".join(path[: depth + 1]), ".".join([*path[:depth], new])))
                raise ConfigError(
                    f"unknown config key {'.'.join(path[: depth + 1])!r}; valid keys under {here}: "
                    f"{', '.join(tp.model_fields)}"
                )
            tp = tp.model_fields[key].annotation
        elif get_origin(tp) is dict:
            key_tp, tp = get_args(tp)
            allowed = allowed_names(key_tp)
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
        if isinstance(node, dict):
            node = node.get(key)
        else:  # a list element ({kind: manifest, ...}) picks its union member too
            node = node[int(key)] if isinstance(node, list) and key.isdigit() and int(key) < len(node) else None


def renamed_message(old: str, new: str) -> str:
    """The error for a key that moved: the new dotted key, as an override and as it looks in a preset."""
    section, _, leaf = new.rpartition(".")
    where = f" (in a preset: `{section}: {{{leaf}: ...}}`)" if section else ""
    return f"config key {old!r} was renamed to {new!r}: write {new}=...{where}"


def clean_loc(cls: type[BaseModel], data: Any, loc: tuple) -> list:
    """A pydantic error location as the user's dotted key: the union tags pydantic inserts after a discriminated
    union (`fusion.cross_attention.d_modl`) are dropped where the schema has such a union."""
    out: list = []
    tp: Any = cls
    node = data
    for part in loc:
        members = union_members(tp)
        if members and isinstance(part, str) and part in members:
            tp = members[part]
            continue
        out.append(part)
        tp = _unwrap(tp, node)
        if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            tp = None
        node = node.get(part) if isinstance(node, dict) else node[part] if isinstance(node, list) and \
            isinstance(part, int) and part < len(node) else None
    return out


def union_members(tp: Any) -> dict[str, type[BaseModel]]:
    """{kind: member} of a discriminated union of models (`Annotated[A | B, Field(discriminator="kind")]`), else {}."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if not _is_union(tp):
        return {}
    members = [a for a in get_args(tp) if a is not type(None)]
    kinds = {_kind_of(m): m for m in members}
    return kinds if None not in kinds and len(members) > 1 else {}


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip Annotated/Optional and pick the discriminated-union member that `node['kind']` selects."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp):
            members = [a for a in get_args(tp) if a is not type(None)]
            kind = node.get("kind") if isinstance(node, dict) else None
            # no kind given: the first member with a field for every key the node has ({recipe: x} -> parquet)
            fits = [m for m in members if _is_model(m) and isinstance(node, dict) and set(node) <= set(m.model_fields)]
            chosen = [m for m in members if _kind_of(m) == kind] or (fits if kind is None else [])[:1] or members[:1]
            tp = chosen[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    origin = get_origin(tp)
    return origin is Union or origin is types.UnionType


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _kind_of(tp: Any) -> str | None:
    if _is_model(tp) and "kind" in tp.model_fields:
        return tp.model_fields["kind"].default
    return None


# ---------------------------------------------------------------------------------------------------------------
# the key table of --help


@dataclass(frozen=True)
class Key:
    """One settable leaf of a schema: dotted key (N = a list index, <a|b> = a map key), type, default, meaning.
    `when`: the union member it belongs to (`fusion.num_latents` exists only when fusion.kind=perceiver)."""

    key: str
    type: str
    default: str
    description: str
    when: str | None = None


def config_keys(cls: type[BaseModel], prefix: str = "", when: str | None = None) -> list[Key]:
    """Every leaf key of `cls`, depth first in field order."""
    out: list[Key] = []
    for name, field in cls.model_fields.items():
        out += _keys_of(field.annotation, f"{prefix}{name}", field, when)
    return out


def _keys_of(tp: Any, key: str, field: Any, when: str | None) -> list[Key]:
    members = union_members(tp)
    if members:
        default = field.get_default(call_default_factory=True) if field is not None else PydanticUndefined
        out = [Key(f"{key}.kind", "|".join(members), _show(getattr(default, "kind", PydanticUndefined)),
                   _describe(field), when)]
        segs = key.split(".")
        name = ".".join(segs[-2:]) if segs[-1] == "N" or segs[-1].startswith("<") else segs[-1]
        for k, m in members.items():
            out += [r for r in config_keys(m, f"{key}.", f"{name}.kind={k}") if r.key != f"{key}.kind"]
        return out
    inner = _strip(tp)
    if _is_model(inner):
        return config_keys(inner, f"{key}.", when)
    if get_origin(inner) is dict and _is_section(get_args(inner)[1]):
        key_tp, value = get_args(inner)
        label = "|".join(allowed_names(key_tp) or ["ID"])
        return _keys_of(value, f"{key}.<{label}>", None, when)
    if get_origin(inner) is list and _is_section(get_args(inner)[0]):
        return _keys_of(get_args(inner)[0], f"{key}.N", None, when)
    default = PydanticUndefined if field is None else field.get_default(call_default_factory=True)
    return [Key(key, _type_name(tp), _show(default), _describe(field), when)]


def _is_section(tp: Any) -> bool:
    return _is_model(_strip(tp)) or bool(union_members(tp))


def _strip(tp: Any) -> Any:
    """Annotated and Optional removed (a nullable section is still a section)."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp) and len([a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _describe(field: Any) -> str:
    return (field.description or "") if field is not None else ""


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if _is_union(tp):
        return "|".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value) if not isinstance(value, str) else value
