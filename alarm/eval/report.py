"""Score a run's predictions and write its outputs: report.json, report.md, scored.jsonl and the benchmark's
submission file (docs/evaluation.md), each written atomically (temporary file + os.replace).

    result = score_predictions(items, predictions, benchmark="mmau", fmt="alarm")
    write_outputs(out_dir, result, context={...})   # -> {"report.json": Path, ...}

Every report states what makes an MCQA number comparable (docs/evaluation.md): scorer, benchmark version, thinking budget, max_tokens, seed and the
parse-failure rate, next to the fallback mode that decided unparsable answers.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alarm import jsonl
from alarm.eval.benchmarks import Item, get_spec
from alarm.eval.parsing import Parsed, parse_answer
from alarm.eval.scoring import SCORERS, aggregate, official_verdicts, strict_keys, strict_verdicts
from alarm.files import atomic_write


@dataclass(frozen=True)
class ScoredRun:
    """Parsed predictions of one run and their scores. rows: (item, prediction record, parse) in metadata
    order, answered items only; report: the JSON-able report."""

    benchmark: str
    rows: list[tuple[Item, dict, Parsed]]
    verdicts: dict[str, dict[str, bool | None]]
    report: dict


def score_predictions(items: Sequence[Item], predictions: dict[str, dict], *, benchmark: str, fmt: str,
                      scorers: Sequence[str] = SCORERS, parse: str = "standard", fallback: str = "none",
                      seed: int | None = None) -> ScoredRun:
    """Parse every answered item and score it under each scorer. predictions: id -> record with `answer` (and
    optionally `reasoning`, `finish_reason`), as in predictions.jsonl; ids not among the items are ignored."""
    bad = [s for s in scorers if s not in SCORERS]
    if bad or not scorers:
        raise ValueError(f"unknown scorer(s) {bad}; expected some of {SCORERS}")
    rows = []
    for it in items:
        if it.id in predictions:
            rec = predictions[it.id]
            p = parse_answer(it, rec["answer"], fmt=fmt, benchmark=benchmark, mode=parse, fallback=fallback,
                             seed=seed, reasoning=rec.get("reasoning") or "")
            rows.append((it, rec, p))
    scores, verdicts = {}, {}
    answered = [it for it, _, _ in rows if it.gold_text is not None]  # MMAU test withholds its answers
    rows_scored = [(it, p) for it, _, p in rows if it.gold_text is not None]
    for name in scorers if answered else ():
        if name == "official":
            vs = official_verdicts(benchmark, [(it, p.submission) for it, p in rows_scored])
            keys = get_spec(benchmark).official_groups
        else:
            vs = strict_verdicts([(it, p.index) for it, p in rows_scored])
            keys = strict_keys(benchmark, answered)
        scores[name] = aggregate(vs, keys)
        verdicts[name] = {v.item.id: (v.correct if v.counted else None) for v in vs}
    n_fail = sum(not p.parse_ok for _, _, p in rows)
    report = {
        "benchmark": benchmark,
        "benchmark_version": get_spec(benchmark).version,
        "settings": {"format": fmt, "parse": parse, "fallback": fallback, "scorers": list(scorers)},
        "items": {"metadata": len(items), "answered": len(rows), "unanswered": len(items) - len(rows),
                  "answer_withheld": sum(it.gold_text is None for it in items),
                  "gold_not_in_choices": sum(it.gold is None and it.gold_text is not None for it in items)},
        "parse": {"ok": len(rows) - n_fail, "failed": n_fail,
                  "failure_rate": n_fail / len(rows) if rows else None,
                  "fallback_used": dict(Counter(p.fallback for _, _, p in rows if p.fallback)),
                  "notes": dict(Counter(p.note.split(":")[0] for _, _, p in rows if p.note).most_common(8))},
        "finish_reasons": dict(Counter(str(rec.get("finish_reason", "")) for _, rec, _ in rows)),
        "scores": scores,
        "notes": _notes(benchmark, scores) + ([] if answered or not rows else [
            "The metadata withholds the answers: nothing is scored here; submit the submission file to the "
            "benchmark's server (MMAU test: the HF Space sonalkum/MMAU-Eval)."]),
    }
    return ScoredRun(benchmark, rows, verdicts, report)


def _notes(benchmark: str, scores: dict) -> list[str]:
    notes = []
    if benchmark == "airbench" and "official" in scores:
        notes.append("The official AIR-Bench scorer prints per-task rows only; 'overall' here is their micro "
                     "mean and 'macro' the mean over task ids (close to, not exactly, the leaderboard "
                     "Average).")
    if benchmark in ("mmau", "mmar") and "official" in scores:
        notes.append("The official string_match credits a wrong choice with the same words as the answer "
                     "(a word-set match), so it can exceed the strict score.")
    if benchmark == "mmsu" and "official" in scores:
        notes.append("Official MMSU drops wrong-format responses from the denominator ('excluded') and "
                     "counts \"None\"/empty as wrong.")
    return notes


# -- files ---------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def submission_text(run: ScoredRun, suffix: str = ".json") -> tuple[str, str]:
    """(file name, content) of the submission file: the metadata rows of answered items, in metadata order,
    with the prediction in the benchmark's field(s) (MMAU model_output + model_prediction; MMAR
    answer_prediction + model_prediction; MMSU/AIR-Bench response). MMAR keeps the metadata's container."""
    spec = get_spec(run.benchmark)
    records = [{**it.record, **dict.fromkeys(spec.prediction_keys, p.submission)} for it, _, p in run.rows]
    name = spec.submission.format(suffix=suffix)
    if name.endswith(".jsonl"):
        return name, jsonl.dumps(records)
    return name, json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def write_outputs(out: str | Path, run: ScoredRun, context: dict | None = None,
                  meta_suffix: str = ".json") -> dict[str, Path]:
    """Write report.json, report.md, scored.jsonl and the submission file into `out`. context: run facts the
    report states (model, thinking budget, max_tokens, temperature, seed, metadata files)."""
    out = Path(out)
    report = {**run.report, "run": context or {}}
    scored = jsonl.dumps({
        "id": it.id, "index": p.index, "gold": it.gold, "parse_ok": p.parse_ok, "fallback": p.fallback,
        "submission": p.submission, "note": p.note, "finish_reason": rec.get("finish_reason"),
        **{f"correct_{s}": v.get(it.id) for s, v in run.verdicts.items()},
    } for it, rec, p in run.rows)
    name, sub = submission_text(run, meta_suffix)
    as_json = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    return {
        "report.json": atomic_write(out / "report.json", as_json),
        "report.md": atomic_write(out / "report.md", render_markdown(report)),
        "scored.jsonl": atomic_write(out / "scored.jsonl", scored),
        name: atomic_write(out / name, sub),
    }


# -- Markdown ------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def render_markdown(report: dict) -> str:
    run, st, items, parse = report.get("run", {}), report["settings"], report["items"], report["parse"]
    budget = run.get("max_thinking_tokens")
    max_tokens = run.get("max_tokens")
    lines = [
        f"# {report['benchmark_version']}: {st['format']} prompts", "",
        "| setting | value |", "|---|---|",
        f"| benchmark | {report['benchmark_version']} ({_meta(run)}) |",
        f"| model | {run.get('model', 'unknown')} |",
        f"| prompt format | {st['format']} |",
        f"| parse / fallback | {st['parse']} / {st['fallback']} |",
        f"| thinking budget (max_thinking_tokens) | {_server_default(budget, 'unlimited')} |",
        f"| max_tokens | {_server_default(max_tokens)} |",
        f"| temperature | {_or(run.get('temperature'), 'server default')} |",
        f"| seed | {_or(run.get('seed'), 'none')} |",
        f"| audio crop | {_or(run.get('crop_audio_s'), 'none')} (seconds sent of each clip) |",
        f"| items answered | {items['answered']} / {items['metadata']} |",
        f"| parse failures | {parse['failed']} ({_pct(parse['failure_rate'])}); fallback used: "
        f"{_counts(parse['fallback_used']) or 'none'} |",
        f"| finish reasons | {_counts(report['finish_reasons']) or 'n/a'} |",
        "", "## Scores", "",
        "| scorer | accuracy | correct / counted | excluded | macro |", "|---|---|---|---|---|",
    ]
    for name, s in report["scores"].items():
        o, m = s["overall"], s["macro"]
        macro = f"{_pct(m['accuracy'])} over {m['key']}" if m else "n/a"
        lines.append(f"| {name} | {_pct(o['accuracy'])} | {o['correct']} / {o['total']} | {s['excluded']} "
                     f"| {macro} |")
    for name, s in report["scores"].items():
        for key, groups in s["groups"].items():
            lines += ["", f"### {name}: per {key}", "", f"| {key} | accuracy | correct / total |",
                      "|---|---|---|"]
            lines += [f"| {g} | {_pct(c['accuracy'])} | {c['correct']} / {c['total']} |"
                      for g, c in groups.items()]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _meta(run: dict) -> str:
    metas = run.get("meta") or []
    named = ", ".join(f"{Path(m['path']).name} sha256 {m['sha256'][:12]}" for m in metas)
    return named or "metadata not recorded"


def _or(value, default: str):
    return default if value is None else value


def _server_default(value: int | None, minus_one: str = "") -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "0 (server default)"
    return f"{value} ({minus_one})" if value == -1 and minus_one else str(value)


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items())
