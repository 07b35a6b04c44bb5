"""The toy world's report: every figure against its target, per question type and over seeds, with 95% intervals.

    summary = summarize([seed_result, ...])    # one `alarm.toy` result per world seed
    print(render(summary))                      # exit 2 unless summary["targets_met"]

A seed result holds counts, not rates (`{"correct": k, "parsed": k, "n": n}` per evaluation run and question
type), so intervals and worst cases come from the items themselves.
"""

from __future__ import annotations

import math

TARGETS = {
    "audio_vs_teacher": 0.90,  # audio-only accuracy / the teacher's with the description, every type, worst seed
    "parsed": 0.99,  # audio-only answers that are one of the options
    "target_leak": 0.01,  # training targets after rephrasing, either judge
    "reasoning_leak": 0.02,  # the R-trained model's own reasoning at inference, either judge
    "teacher_reads": 1.0,  # the toy teacher's answers to its own held-out description questions, every type
}
MAIN = "R@256"  # the adapter trained on rephrased targets, thinking budget 256: the headline run
RUNS = {  # evaluation run -> what the report calls it
    "R@256": "adapter trained on R (rephrased), thinking budget 256",
    "R0@256": "adapter trained on R0 (not rephrased), thinking budget 256",
    "R@64": "adapter trained on R, thinking budget 64",
    "R@0": "adapter trained on R, thinking budget 0",
    "teacher": "teacher reading the description instead (text only, the upper bound)",
}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def _rate(c: dict, key: str = "correct") -> float:
    return c[key] / c["n"] if c["n"] else 0.0


def per_type(results: list[dict]) -> dict[str, dict]:
    """For each question type: the audio-only and teacher accuracy pooled over seeds (with intervals), and the
    audio / teacher ratio and parse rate per seed, their mean and their worst."""
    out = {}
    for q in results[0]["per_type"]:
        audio = [r["per_type"][q][MAIN] for r in results]
        teacher = [r["per_type"][q]["teacher"] for r in results]
        ratios = [_rate(a) / _rate(t) if t["correct"] else 0.0 for a, t in zip(audio, teacher, strict=True)]
        k, n = sum(a["correct"] for a in audio), sum(a["n"] for a in audio)
        kt, nt = sum(t["correct"] for t in teacher), sum(t["n"] for t in teacher)
        parsed = [_rate(a, "parsed") for a in audio]
        out[q] = {"n": n, "audio": k / n, "audio_ci": wilson(k, n), "teacher": kt / nt, "teacher_ci": wilson(kt, nt),
                  "ratio_mean": sum(ratios) / len(ratios), "ratio_worst": min(ratios),
                  "worst_seed": results[ratios.index(min(ratios))]["seed"], "parsed_worst": min(parsed)}
    return out


def runs(results: list[dict]) -> dict[str, dict]:
    """Each evaluation run over all types: accuracy and parse rate (mean, worst) and how often its reasoning
    talks about a text (either judge, mean and worst)."""
    out = {}
    for name in RUNS:
        acc = [_rate(r["runs"][name]) for r in results]
        parsed = [_rate(r["runs"][name], "parsed") for r in results]
        leak = [r["runs"][name]["leak"]["any"] for r in results]
        out[name] = {"accuracy": sum(acc) / len(acc), "accuracy_worst": min(acc),
                     "parsed": sum(parsed) / len(parsed), "parsed_worst": min(parsed),
                     "leak": sum(leak) / len(leak), "leak_worst": max(leak)}
    return out


def summarize(results: list[dict]) -> dict:
    """The report of one or more seeds: per type, per run, the targets (each with its worst value) and whether
    all are met."""
    types, by_run = per_type(results), runs(results)
    worst_type = min(types, key=lambda q: types[q]["ratio_worst"])
    target_leak = max(max(r["corpus"]["leak"]["R"].values()) for r in results)
    same = sum(r["text_identical"]["same"] for r in results)
    asked = sum(r["text_identical"]["n"] for r in results)
    checks = [
        ("audio_vs_teacher", f"audio-only accuracy / the teacher's, every question type (worst: {worst_type}, "
                             f"seed {types[worst_type]['worst_seed']})", types[worst_type]["ratio_worst"], ">="),
        ("parsed", "audio-only answers that are one of the options", by_run[MAIN]["parsed_worst"], ">="),
        ("target_leak", "targets after rephrasing that mention a text (either judge)", target_leak, "<="),
        ("reasoning_leak", "the R-trained model's own reasoning that mentions a text (either judge; R0-trained: "
                           f"{by_run['R0@256']['leak_worst']:.1%})", by_run[MAIN]["leak_worst"], "<="),
    ]
    if all(r.get("teacher_reading") for r in results):  # a teacher of ours (`--teacher`: not measured)
        seed, q, v = min(((r["seed"], q, v) for r in results for q, v in r["teacher_reading"].items()),
                         key=lambda x: x[2])
        checks.append(("teacher_reads", "the teacher's answers to its own held-out description questions, every "
                                        f"type (worst: {q}, seed {seed}): what its students can learn", v, ">="))
    targets = [{"name": name, "what": what, "value": v, "target": TARGETS[name], "op": op,
                "met": v >= TARGETS[name] if op == ">=" else v <= TARGETS[name]} for name, what, v, op in checks]
    targets.append({"name": "text_identical", "what": "text-only answers identical with and without the adapter",
                    "value": same / asked if asked else 0.0, "target": 1.0, "op": "==", "met": asked > 0 and
                    same == asked, "count": f"{same} of {asked}"})
    return {"seeds": [r["seed"] for r in results], "results": results, "per_type": types, "runs": by_run,
            "targets": targets, "targets_met": all(t["met"] for t in targets)}


def _ci(p: float, ci: tuple[float, float]) -> str:
    return f"{p:.1%} ({ci[0]:.0%}-{ci[1]:.0%})"


def _quota(size: dict) -> str:
    """The training questions of each type, as ' (150 per type; loudness 225)'; '' for results without them."""
    if "train_per_type" not in size:
        return ""
    own = "".join(f"; {q} {n}" for q, n in size.get("train_types", {}).items())
    return f" ({size['train_per_type']} per type{own})"


def render(s: dict) -> str:
    """The report as Markdown."""
    first = s["results"][0]
    seeds = ", ".join(str(x) for x in s["seeds"])
    lines = [
        "# ALARM toy world",
        "",
        f"World seed{'s' if len(s['seeds']) > 1 else ''} {seeds}: {first['size']['train_clips']} training clips -> "
        f"{first['corpus']['rows']} questions{_quota(first['size'])}; {first['eval']['items']} held-out questions "
        f"({first['eval']['per_type']} per type, each on its own clip); chance {first['eval']['chance']:.1%}.",
        "",
        "## Audio only, per question type (the adapter trained on R, thinking budget 256)",
        "",
        "| question type | audio only (95% CI) | teacher with the description | audio / teacher: mean | worst seed | "
        "answers parsed (worst) |",
        "|---|---|---|---|---|---|",
        *(f"| {q} | {_ci(t['audio'], t['audio_ci'])} | {_ci(t['teacher'], t['teacher_ci'])} | {t['ratio_mean']:.1%} "
          f"| {t['ratio_worst']:.1%} (seed {t['worst_seed']}) | {t['parsed_worst']:.1%} |"
          for q, t in s["per_type"].items()),
        "",
        "## The ablations, on the same held-out questions (mean over seeds; worst in brackets)",
        "",
        "| run | accuracy | answers parsed | reasoning that mentions a text |",
        "|---|---|---|---|",
        *(f"| {RUNS[name]} | {r['accuracy']:.1%} ({r['accuracy_worst']:.1%}) | {r['parsed']:.1%} "
          f"({r['parsed_worst']:.1%}) | {r['leak']:.1%} ({r['leak_worst']:.1%}) |" for name, r in s["runs"].items()),
        "",
        "## Targets",
        "",
        "| target | value (worst seed) | required | |",
        "|---|---|---|---|",
        *(f"| {t['what']} | {t.get('count') or format(t['value'], '.1%')} | {t['op']} {t['target']:.0%} | "
          f"{'met' if t['met'] else 'NOT met'} |" for t in s["targets"]),
        "",
        *_per_seed(s["results"]),
        "",
        f"Targets {'met' if s['targets_met'] else 'NOT met'}.",
    ]
    return "\n".join(lines)


def _per_seed(results: list[dict]) -> list[str]:
    stages = list(dict.fromkeys(k for r in results for k in r["seconds"]))
    head = " | ".join(f"seed {r['seed']}" for r in results)
    rows = [
        "## Per seed",
        "",
        f"| | {head} |",
        "|---|" + "---|" * len(results),
        "| corpus rows kept / distinct targets | " + " | ".join(
            f"{r['corpus']['kept']} / {r['corpus']['distinct_targets']}" for r in results) + " |",
        "| leak before rephrasing (lexical / held-out judge) | " + " | ".join(
            f"{r['corpus']['leak']['R0']['lexical']:.1%} / {r['corpus']['leak']['R0']['held_out']:.1%}"
            for r in results) + " |",
        "| leak after rephrasing (lexical / held-out judge) | " + " | ".join(
            f"{r['corpus']['leak']['R']['lexical']:.1%} / {r['corpus']['leak']['R']['held_out']:.1%}"
            for r in results) + " |",
        *(f"| adapter on {k}: steps, loss first -> last | " + " | ".join(
            f"{r['train'][k]['steps']}, {r['train'][k]['first_loss']:.3f} -> {r['train'][k]['last_loss']:.3f}"
            for r in results) + " |" for k in ("R", "R0")),
        "| text-only answers identical with / without the adapter | " + " | ".join(
            f"{r['text_identical']['same']} of {r['text_identical']['n']}" for r in results) + " |",
        *(f"| {k} | " + " | ".join(str(r["depends_on"].get(k, "")) for r in results) + " |"
          for k in results[0]["depends_on"]),
        *(f"| {k} (s) | " + " | ".join(f"{r['seconds'][k]:.1f}" if k in r["seconds"] else "" for r in results)
          + " |" for k in stages),
        "| total (s) | " + " | ".join(f"{sum(r['seconds'].values()):.1f}" for r in results) + " |",
    ]
    return rows
