"""JSON Lines: every string round-trips (all of Python's line boundaries), a crash's torn last line is dropped
or refused as asked, and a bad line is an error naming the file and the line."""

from __future__ import annotations

import json

import pytest

from alarm import jsonl

# every character str.splitlines() splits on, and CRLF
BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def records() -> list[dict]:
    return [{"id": f"r{i}", "text": f"before{b}after", "nested": [b, {"k": b * 2}]} for i, b in enumerate(BREAKS)]


def test_every_line_break_round_trips(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl.dumps(records()), encoding="utf-8")
    assert jsonl.read(path) == records()
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(BREAKS)  # escaped: even splitlines() readers see one record a line
    assert [json.loads(line) for line in text.splitlines()] == records()
    assert jsonl.dumps([{"t": "é 音"}]) == '{"t": "é 音"}\n'  # other text stays readable


def test_raw_separators_written_by_other_tools_are_read(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # raw, as json.dumps(ensure_ascii=False) writes it
    assert jsonl.read(path) == records()


def test_append_round_trips_and_is_durable(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    for r in records():
        jsonl.append(path, r)
    assert jsonl.read(path) == records()


def test_torn_last_line(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": "\xe9\xb3')  # cut inside the record, inside a UTF-8 character
    with pytest.raises(jsonl.JsonlError, match=r"log.jsonl: line 3 is not valid UTF-8.*crash while writing"):
        jsonl.read(path)
    assert jsonl.read(path, torn="drop") == [{"a": 1}, {"a": 2}]
    assert "leaving out an incomplete last line 3" in capsys.readouterr().err
    jsonl.append(path, {"a": 3})  # cuts the torn line off first
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert "cutting off an incomplete last line" in capsys.readouterr().err


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')  # e.g. written by hand
    assert jsonl.read(path) == [{"a": 1}, {"a": 2}]
    jsonl.append(path, {"a": 3})
    assert jsonl.read(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n')
    for torn in ("error", "drop"):
        with pytest.raises(jsonl.JsonlError, match=r"log.jsonl: line 3 is not valid JSON"):
            jsonl.read(path, torn=torn)
    assert list(jsonl.lines('{"a": 1}\n\n{"a": 3}\n')) == [(1, {"a": 1}), (3, {"a": 3})]
