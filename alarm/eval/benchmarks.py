"""The four MCQA benchmarks as data: a spec table, metadata loaders and the normalised `Item`.

    items = load_items("mmau", ["mmau-test-mini.json"])      # list[Item], metadata order
    items = load_items("mmar", ["MMAR-meta.json", "MMAR-meta.jsonl"])  # merged by id, order of the first

Field names, quirks and audio layouts follow the official repositories (docs/evaluation.md). Every row is validated
here, at the edge: a malformed file or row raises `BenchmarkDataError` naming the file, the row and the field.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alarm import jsonl
from alarm.errors import AlarmError

LETTERS = "ABCD"


class BenchmarkDataError(AlarmError, ValueError):
    """A benchmark metadata file or row that does not have the documented structure."""


@dataclass(frozen=True, eq=False)
class Item:
    """One multiple-choice question, normalised across benchmarks.

    Attributes:
        id: The benchmark's id as a string (AIR-Bench `uniq_id`, MMSU `id` may be integers in the file).
        question: The question text.
        choices: The options in file order (MMSU/AIR-Bench: choice_a, choice_b, ...).
        gold: Index of the first choice equal to the gold answer, None when the answer is not among the
            choices (MMAR-meta.json has 6 such items) or withheld.
        gold_text: The gold answer as written in the file; None where answers are withheld (MMAU test).
        groups: Grouping fields as strings (MMAU's list-valued `category` is joined with "+").
        audio: Audio path relative to the benchmark's audio root (posix, no leading "./" or "/").
        row: Position in the (first) metadata file.
        record: The metadata row as read; submission files copy it and the official scorers read it.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    gold: int | None
    gold_text: str | None
    groups: Mapping[str, str]
    audio: str
    row: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Static facts about one benchmark (docs/evaluation.md).

    Attributes:
        name: Registry key, the value of `benchmark`.
        version: The version this harness reproduces (stated in every report).
        native_answer: What the benchmark's own prompt asks for: the choice `text` or its `letter`.
        official_groups: The group fields the official scorer aggregates by (in its print order).
        prediction_keys: Fields the submission file carries the prediction in.
        submission: File name of the submission file; `{suffix}` is the first metadata file's suffix.
        read_row: Builds an Item from one validated row.
    """

    name: str
    version: str
    native_answer: Literal["text", "letter"]
    official_groups: tuple[str, ...]
    prediction_keys: tuple[str, ...]
    submission: str
    read_row: Callable[[Row], Item]


# -- row validation ------------------------------------------------------------------------------------------


class Row:
    """One metadata row with typed accessors whose errors name the file, the row, the id and the field."""

    def __init__(self, path: Path, index: int, record: Any, id_key: str):
        self.path, self.index = path, index
        if not isinstance(record, dict):
            raise BenchmarkDataError(
                f"{path}: row {index}: expected a JSON object, found {type(record).__name__}")
        self.record = record
        self.id = ""
        self.id = self.scalar(id_key)

    def fail(self, key: str, problem: str) -> BenchmarkDataError:
        where = f"{self.path}: row {self.index}" + (f" (id {self.id!r})" if self.id else "")
        return BenchmarkDataError(f"{where}: field {key!r} {problem}")

    def get(self, key: str, optional: bool = False) -> Any:
        if key not in self.record or (optional and self.record[key] is None):
            if optional:
                return None
            raise self.fail(key, f"is missing (the row has {sorted(self.record)}); "
                                 "is this the right benchmark=?")
        return self.record[key]

    def text(self, key: str, optional: bool = False) -> str | None:
        value = self.get(key, optional)
        if not isinstance(value, str) and not (optional and value is None):
            raise self.fail(key, f"must be a string, found {type(value).__name__} {value!r}")
        return value

    def scalar(self, key: str, optional: bool = False) -> str | None:
        """A string, or an integer/float written as its str() (ids and some choices are numbers)."""
        value = self.get(key, optional)
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, f"must be a string or a number, found {type(value).__name__} {value!r}")
        return str(value)

    def group(self, key: str, optional: bool = False) -> str | None:
        """A grouping field: a string, or a list of strings joined with '+' (MMAU's list `category`)."""
        value = self.get(key, optional)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return "+".join(value)
        if not isinstance(value, str) and not (optional and value is None):
            raise self.fail(key, f"must be a string (or a list of strings), "
                                 f"found {type(value).__name__} {value!r}")
        return value

    def choice_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if not isinstance(value, list) or len(value) < 2:
            raise self.fail(key, f"must be a list of at least 2 options, found {value!r}")
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, str | int | float)]
        if bad:
            raise self.fail(key, f"must hold strings, found {bad[0]!r}")
        return tuple(str(v) for v in value)

    def lettered_choices(self) -> tuple[str, ...]:
        """choice_a, choice_b (required), then choice_c, choice_d while present (null = absent)."""
        choices = [self.scalar("choice_a"), self.scalar("choice_b")]
        for letter in "cd":
            value = self.scalar(f"choice_{letter}", optional=True)
            if value is None:
                break
            choices.append(value)
        if self.record.get("choice_d") is not None and len(choices) < 4:
            raise self.fail("choice_c", "is missing while choice_d is set; the letters would not match")
        return tuple(choices)

    def audio_path(self, key: str) -> str:
        return relative_audio(self.text(key), self, key)


def relative_audio(path: str, row: Row, key: str) -> str:
    """A metadata audio path made relative to the audio root: './a/b.wav' and '/a/b.wav' -> 'a/b.wav'."""
    norm = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
    if not norm or norm == "." or norm.split("/")[0] == "..":
        raise row.fail(key, f"is not a relative audio path under the audio root: {path!r}")
    return norm


def gold_index(choices: Sequence[str], answer: str | None) -> int | None:
    """The first choice exactly equal to the answer (the official AIR-Bench rule), else None."""
    return next((i for i, c in enumerate(choices) if c == answer), None)


# -- per-benchmark rows ---------------------------------------------------------------------------------


def _item(row: Row, question: str, choices: tuple[str, ...], answer: str | None, groups: dict,
          audio: str) -> Item:
    return Item(id=row.id, question=question, choices=choices, gold=gold_index(choices, answer),
                gold_text=answer, groups={k: v for k, v in groups.items() if v is not None}, audio=audio,
                row=row.index, record=row.record)


def read_mmau(row: Row) -> Item:
    groups = {"task": row.text("task"), "difficulty": row.text("difficulty"),
              "sub-category": row.text("sub-category", optional=True),
              "category": row.group("category", optional=True)}
    # `answer` is withheld in MMAU test (9k items, scored by the HF Space): those items get a submission only
    return _item(row, row.text("question"), row.choice_list("choices"), row.scalar("answer", optional=True),
                 groups, row.audio_path("audio_id"))


def read_mmar(row: Row) -> Item:
    groups = {"modality": row.text("modality"), "category": row.group("category", True),
              "sub-category": row.group("sub-category", True)}
    return _item(row, row.text("question"), row.choice_list("choices"), row.scalar("answer"), groups,
                 row.audio_path("audio_path"))


def read_mmsu(row: Row) -> Item:
    groups = {"category": row.text("category"), "sub-category": row.text("sub-category"),
              "task_name": row.text("task_name", optional=True)}
    return _item(row, row.text("question"), row.lettered_choices(), row.scalar("answer_gt"), groups,
                 row.audio_path("audio_path"))


def read_airbench(row: Row) -> Item:
    task, dataset = row.text("task_name"), row.text("dataset_name")
    # The official layout (Inference_Foundation.py): Foundation/{task}_{dataset}/{path}; Audio_Grounding's
    # metadata names .wav files that are stored as .flac, so the last 3 characters become "flac".
    audio = relative_audio(f"Foundation/{task}_{dataset}/{row.text('path')}", row, "path")
    if task == "Audio_Grounding":
        audio = audio[:-3] + "flac"
    groups = {"task_id": f"{task}_{dataset}", "task_name": task, "dataset_name": dataset}
    return _item(row, row.scalar("question"), row.lettered_choices(), row.scalar("answer_gt"), groups, audio)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mmau": BenchmarkSpec("mmau", "MMAU v05.15.25", "text", ("task", "difficulty", "sub-category"),
                          ("model_output", "model_prediction"), "mmau-submission.json", read_mmau),
    "mmar": BenchmarkSpec("mmar", "MMAR", "text", ("modality", "category", "sub-category"),
                          ("answer_prediction", "model_prediction"), "mmar-submission{suffix}", read_mmar),
    "mmsu": BenchmarkSpec("mmsu", "MMSU", "letter", ("category", "category/sub-category"),
                          ("response",), "mmsu-submission.jsonl", read_mmsu),
    "airbench": BenchmarkSpec("airbench", "AIR-Bench Foundation", "letter", ("task_id",),
                              ("response",), "Foundation_result_modelx.jsonl", read_airbench),
}
ID_KEYS = {"mmau": "id", "mmar": "id", "mmsu": "id", "airbench": "uniq_id"}


def get_spec(benchmark: str) -> BenchmarkSpec:
    if benchmark not in BENCHMARKS:
        raise BenchmarkDataError(f"unknown benchmark {benchmark!r}; expected one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[benchmark]


# -- files ---------------------------------------------------------------------------------------------------


def read_records(path: str | Path) -> list[Any]:
    """A JSON list (.json) or JSON lines (.jsonl), chosen by suffix as the official MMAR scorer does."""
    path = Path(path)
    if path.suffix not in (".json", ".jsonl"):
        raise BenchmarkDataError(
            f"{path}: expected a .json (JSON list) or .jsonl file, found suffix {path.suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchmarkDataError(f"{path}: cannot read the metadata file: {e.strerror or e}") from None
    if path.suffix == ".jsonl":
        try:
            return jsonl.loads(text, str(path))
        except jsonl.JsonlError as e:
            raise BenchmarkDataError(str(e)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkDataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of questions, found a {type(data).__name__}")
    return data


def load_file(benchmark: str, path: str | Path) -> list[Item]:
    spec, path = get_spec(benchmark), Path(path)
    items = [spec.read_row(Row(path, i, rec, ID_KEYS[benchmark])) for i, rec in enumerate(read_records(path))]
    if not items:
        raise BenchmarkDataError(f"{path}: the file holds no questions")
    seen: dict[str, int] = {}
    for it in items:
        if it.id in seen:
            raise BenchmarkDataError(f"{path}: rows {seen[it.id]} and {it.row} have the same id {it.id!r}")
        seen[it.id] = it.row
    return items


def load_items(benchmark: str, paths: Sequence[str | Path]) -> list[Item]:
    """Items of one or more metadata files of the same benchmark, merged by id (never by position).

    With several files (e.g. MMAR-meta.json then MMAR-meta.jsonl, whose row orders differ), the order is the
    first file's and each item's fields come from the last file that has it; the id sets must be equal.
    """
    if not paths:
        raise BenchmarkDataError("no metadata file given (meta=[...])")
    base = load_file(benchmark, paths[0])
    for path in paths[1:]:
        other = {it.id: it for it in load_file(benchmark, path)}
        ids = {it.id for it in base}
        if ids != set(other):
            only_a, only_b = sorted(ids - set(other))[:3], sorted(set(other) - ids)[:3]
            raise BenchmarkDataError(
                f"{path}: cannot merge with {paths[0]} by id: ids only in the first: {only_a}, only in "
                f"{path}: {only_b}; merge only versions of the same benchmark split"
            )
        base = [Item(**{**vars(other[it.id]), "row": it.row}) for it in base]
    return base
