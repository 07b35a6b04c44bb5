r"""JSON Lines that round-trip any string: one value per line, lines ended by "\n" and split on "\n" only.

    atomic_write(path, dumps(records))          # a whole file
    append(path, record)                        # one line added to a log, fsync'd (predictions.jsonl)
    records = read(path, torn="drop")           # [value, ...]; JsonlError names the file and the line
    for n, record in lines(data, "name"): ...   # with line numbers, for errors of the caller's own

JSON escapes "\n", "\r" and the other ASCII line breaks inside strings, but not U+2028, U+2029 or U+0085, which
`str.splitlines()` also splits on: a reader that uses it cuts such a record in two. The reader here splits on
"\n" only; the writer escapes those three characters too, so the files survive other tools that split on Unicode
line breaks. A crash while appending leaves a last line without "\n": readers with `torn="drop"` leave it out
with a warning and `append` cuts it off before writing (an append-only log loses only the record that was being
written); `torn="error"` refuses it. A bad line anywhere else is an error naming the file and the line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from alarm.errors import AlarmError

_UNSAFE = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}
_UNSAFE_TABLE = str.maketrans(_UNSAFE)


class JsonlError(AlarmError, ValueError):
    """A JSON Lines file with a line that is not one JSON value (or not the value the reader expects)."""


def dumps_line(value: Any) -> str:
    """One JSON value as one line, "\\n" included; non-ASCII text stays readable, line separators escaped."""
    return json.dumps(value, ensure_ascii=False).translate(_UNSAFE_TABLE) + "\n"


def dumps(values: Iterable[Any]) -> str:
    """A whole JSON Lines file."""
    return "".join(dumps_line(v) for v in values)


def append(path: str | Path, value: Any) -> None:
    """Add one line to `path` (created with its folders) and fsync it: the line is on disk when this returns.

    A last line left without its "\\n" by a crash is completed first when it is valid JSON, else cut off with a
    warning (it is the record that was being written), so the new line never runs into it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                _seal(f, path)
        f.write(dumps_line(value).encode())
        f.flush()
        os.fsync(f.fileno())


def _seal(f, path: Path) -> None:
    f.seek(0)
    data = f.read()
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
        f.write(b"\n")  # "a" mode: writes go to the end whatever the position
    except ValueError:  # JSONDecodeError or UnicodeDecodeError: a line cut short
        print(f"warning: {path}: cutting off an incomplete last line ({len(data) - cut} bytes, a crash while "
              "writing?)", file=sys.stderr)
        f.truncate(cut)


def lines(data: bytes | str, where: str = "<jsonl>",
          torn: Literal["error", "drop"] = "error") -> Iterator[tuple[int, Any]]:
    """(line number, value) for every non-blank line of a JSON Lines text. `where` names the file in errors.

    Raises:
        JsonlError: a line that is not valid UTF-8 or JSON; with torn="error" also a last line without "\\n"
            that is not valid (with torn="drop" that line is left out with a warning).
    """
    rows = data.split(b"\n" if isinstance(data, bytes) else "\n")
    last = rows.pop()  # empty when the text ends with "\n"; otherwise a line cut short or without its "\n"
    for n, line in enumerate(rows, 1):
        if line.strip():
            yield n, _value(line, n, where)
    if last.strip():
        n = len(rows) + 1
        try:
            value = _value(last, n, where)
        except JsonlError as e:
            if torn == "error":
                raise JsonlError(f"{e} (the file ends inside that line: a crash while writing?)") from None
            print(f"warning: {where}: leaving out an incomplete last line {n} ({len(last)} bytes, a crash while "
                  "writing?)", file=sys.stderr)
            return
        yield n, value


def loads(data: bytes | str, where: str = "<jsonl>", torn: Literal["error", "drop"] = "error") -> list[Any]:
    """The values of a JSON Lines text, in order (see `lines`)."""
    return [v for _, v in lines(data, where, torn)]


def read(path: str | Path, torn: Literal["error", "drop"] = "error") -> list[Any]:
    """The values of the JSON Lines file `path` (see `lines`)."""
    return loads(Path(path).read_bytes(), str(path), torn)


def _value(line: bytes | str, n: int, where: str) -> Any:
    try:
        return json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except UnicodeDecodeError as e:
        raise JsonlError(f"{where}: line {n} is not valid UTF-8 ({e.reason}); fix or remove that line") from None
    except json.JSONDecodeError as e:
        raise JsonlError(f"{where}: line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
