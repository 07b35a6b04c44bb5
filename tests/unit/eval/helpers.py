"""Helpers for the evaluation tests: where the local MMAU test-mini file is, synthetic rows of every
benchmark, a scripted Answerer."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# MMAU test-mini metadata (1000 questions with answers, no audio): mmau-test-mini.json of the public repository
# github.com/Sakshi113/MMAU. Tests that need it read the path in ALARM_MMAU_TEST_MINI (else a copy kept beside the
# checkout) and are skipped without it.
MMAU_MINI = Path(os.environ.get("ALARM_MMAU_TEST_MINI")
                 or ROOT.parent / "shared" / "ext" / "benchmarks" / "mmau" / "mmau-test-mini.json")


def mmau_row(i: int, answer: int = 0, **extra) -> dict:
    choices = [f"choice {c} of {i}" for c in "wxyz"]
    task = ("sound", "music", "speech")[i % 3]
    return {"id": f"q{i}", "audio_id": f"./test-mini-audios/q{i}.wav", "question": f"Question {i}?",
            "choices": choices, "answer": choices[answer], "task": task, "difficulty": "easy",
            "category": "Reasoning", "sub-category": f"sub {i % 2}", "split": "test-mini", **extra}


def mmsu_row(i: int, answer: str = "b", **extra) -> dict:
    row = {"id": i, "audio_path": f"/audio/{i}.wav", "question": f"Q{i}", "choice_a": f"a{i}",
           "choice_b": f"b{i}", "choice_c": f"c{i}", "choice_d": f"d{i}", "category": "Perception",
           "sub-category": "Phonology", "task_name": "t"}
    return {**row, "answer_gt": row[f"choice_{answer}"], **extra}


def air_row(i: int, task: str = "Speaker_Number_Verification", dataset: str = "VoxCeleb1", **extra) -> dict:
    return {"uniq_id": 100 + i, "path": f"clip{i}.wav", "task_name": task, "dataset_name": dataset,
            "question": f"Q{i}", "choice_a": "one", "choice_b": "two", "answer_gt": "two", **extra}


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ScriptedAnswerer:
    """An Answerer whose reply is `reply(prompt, system_prompt)`; records every call."""

    def __init__(self, reply, fail_on: set[str] = frozenset()):
        self.reply, self.fail_on, self.calls, self.closed = reply, fail_on, [], False

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        self.calls.append({"audio": audio, "prompt": prompt, "system": system_prompt, "seed": seed,
                           "max_thinking_tokens": max_thinking_tokens, "max_tokens": max_tokens})
        if any(f in prompt for f in self.fail_on):
            raise RuntimeError("scripted failure")
        return self.reply(prompt, system_prompt), "thinking...", "STOP"

    async def aclose(self):
        self.closed = True
