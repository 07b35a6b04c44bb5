"""The values of one source row, checked: its id, its audio (a path/URI, bytes, {bytes, path}, {array,
sampling_rate}), its given prompt, its describer family and its metadata fields. Each returns the value and,
instead of raising, the message that flags the row."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import soundfile as sf

from alarm.config import Family
from alarm.corpus.locations import resolve

if TYPE_CHECKING:
    from alarm.corpus.manifest import Spec

SUPPORTED_VALUES = (
    "str, int, float, bool, null, or a list of those (and `turns` as a list of {speaker, start, end, text})"
)


def checked_id(value: Any, column: str) -> tuple[str | None, str | None]:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 12.0 from a float column -> "12"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    if _missing(value):
        return None, f"missing id (column {column!r} is empty)"
    return None, f"id in column {column!r} is a {type(value).__name__}; expected a string or an integer"


def audio_of(value: Any, column: str, base: str) -> tuple[str | None, bytes | None, str | None]:
    """(uri, bytes, error) from a path/URI string, raw bytes (or a list of byte values), {bytes, path} or
    {array, sampling_rate}."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return None, bytes(value["bytes"]), None
        if value.get("path"):
            return audio_of(value["path"], column, base)
        if value.get("array") is not None:
            return _encode_array(value.get("array"), value.get("sampling_rate"), column)
        return None, None, f"missing audio (column {column!r} holds neither bytes, a path nor an array)"
    if isinstance(value, bytes | bytearray) and value:
        return None, bytes(value), None
    if isinstance(value, list) and value and all(isinstance(v, int) and 0 <= v < 256 for v in value[:64]):
        try:  # a Sequence(uint8) column of encoded file bytes (older hub exports)
            return None, bytes(value), None
        except (ValueError, TypeError):
            return None, None, f"audio in column {column!r} is a list that is not bytes (0-255)"
    if isinstance(value, str) and value.strip():
        return resolve(base, value.strip()), None, None
    if _missing(value) or isinstance(value, bytes | bytearray):
        return None, None, f"missing audio (column {column!r} is empty)"
    found = type(value).__name__
    return None, None, f"audio in column {column!r} is a {found}; expected a path or URI string"


def _encode_array(array: Any, rate: Any, column: str) -> tuple[None, bytes | None, str | None]:
    x = np.asarray(array, dtype=np.float64)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        return None, None, f"audio array in column {column!r} has sampling_rate {rate!r}; expected an int > 0"
    if x.size == 0 or x.ndim not in (1, 2):
        return None, None, f"audio array in column {column!r} has shape {x.shape}; expected (N,) or (C, N)"
    if not np.isfinite(x).all() or np.abs(x).max() > 1.0:
        return None, None, f"audio array in column {column!r} has NaN/inf or samples outside [-1, 1]"
    buf = io.BytesIO()
    sf.write(buf, x.T if x.ndim == 2 else x, rate, format="FLAC", subtype="PCM_24")  # (C, N) -> (N, C)
    return None, buf.getvalue(), None


def prompt_of(values: dict, spec: Spec) -> tuple[str | None, str | None]:
    if spec.prompt_column is None:
        return None, None
    value = values.get(spec.prompt_column)
    if isinstance(value, str) and value.strip():
        return value, None
    if not _missing(value):
        return None, f"prompt in column {spec.prompt_column!r} is a {type(value).__name__}; expected a string"
    if spec.instruction:
        return None, f"missing prompt (column {spec.prompt_column!r} is empty); instruction rows need one"
    return None, None


def family_of(values: dict, spec: Spec) -> tuple[str, str | None]:
    if spec.family_column is None:
        return spec.family, None
    value = values.get(spec.family_column)
    families = get_args(Family)
    if value not in families:
        return spec.family, (f"family {value!r} in column {spec.family_column!r} is not a describer; expected one "
                             f"of {', '.join(families)}")
    return value, None


def metadata_of(values: dict, skip: set, class_labels: dict,
              columns: tuple[tuple[str, str], ...] | None = None) -> tuple[dict, list[str]]:
    """Supported values in column order, or in `columns` order under their field names (None/NaN/empty left
    out), and one error per unsupported value."""
    if columns is not None:
        items = [(key, col, values.get(col)) for key, col in columns]
    else:
        items = [(key, key, value) for key, value in values.items() if key not in skip]
    metadata, errors = {}, []
    for key, col, value in items:
        if col in class_labels:
            value = class_label(value, class_labels[col])
        if _missing(value):
            continue
        err = _unsupported(key, value)
        if err:
            errors.append(f"column {col!r}: {err}; supported: {SUPPORTED_VALUES}")
        else:
            metadata[key] = list(value) if isinstance(value, tuple) else value
    return metadata, errors


def _unsupported(key: str, value: Any) -> str | None:
    """Why `value` cannot go into metadata, or None if it can."""
    if _scalar(value):
        return None
    if isinstance(value, float):
        return f"non-finite number {value}"
    if isinstance(value, list | tuple):
        if key == "turns" and value and all(isinstance(v, dict) for v in value):
            return _bad_turns(value)
        bad = [v for v in value if not (_scalar(v) or v is None)]
        if not bad:
            return None
        return f"a list holding {bad[0]!r}" if isinstance(bad[0], float) else f"a list of {type(bad[0]).__name__}"
    if isinstance(value, dict):
        return "a nested mapping"
    return f"unsupported type {type(value).__name__}"


def _bad_turns(turns: list[dict]) -> str | None:
    for i, turn in enumerate(turns):
        for k, v in turn.items():
            if not (_scalar(v) or v is None or (isinstance(v, list) and all(_scalar(x) for x in v))):
                return f"turns[{i}].{k} is a {type(v).__name__}"
        start, end = turn.get("start"), turn.get("end")
        if not (_number(start) and _number(end) and start <= end):
            return f"turns[{i}] needs numeric start <= end (seconds), found start={start!r}, end={end!r}"
    return None


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | bool) or (isinstance(v, float) and math.isfinite(v))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def class_label(value: Any, names: list[str]) -> Any:
    """ClassLabel int -> name (-1, the datasets 'no label', -> None); lists map element-wise."""
    if isinstance(value, list):
        return [class_label(v, names) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None
    return value
