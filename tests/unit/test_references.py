"""Everything the repository tells its readers to read is in the repository: no pointer to notes kept outside it
(the maintainers' private reference notes, a `../shared` folder beside the checkout). Public sources are cited by
name; facts a maintainer needs go into docs/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTES = ("serving", "method", "benchmarks", "reference-impl", "style")
# a note's file name (docs/evaluation.md is ours), "../shared", "shared/reference", "shared/ext" and the section
# sign the notes were cited with
PRIVATE = re.compile(rf"\b(?:{'|'.join(NOTES)})\.md\b|\.\./shared\b|\bshared/(?:reference|ext)\b|\u00a7")


def repository_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_reference_to_notes_outside_the_repository():
    hits = []
    for path in repository_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        hits += [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
                 for n, line in enumerate(text.split("\n"), 1) if PRIVATE.search(line)]
    assert not hits, "references to notes outside the repository:\n" + "\n".join(hits)


def test_the_pattern_catches_each_kind():
    for line in ("see serving.md §2.9", "(method.md)", "benchmarks.md", "reference-impl.md", "style.md",
                 "../shared/ext/kuberay-crds", "in shared/reference", "§8"):
        assert PRIVATE.search(line), line
    for line in ("docs/evaluation.md", "docs/deploy.md", "vllm issue #56655", "shared memory"):
        assert not PRIVATE.search(line), line
