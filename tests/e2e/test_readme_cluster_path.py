"""README's Ray-cluster path, exactly as README.md shows it: the bash block with `ray start --head` and `ray job
submit` is read from README.md itself (so the two cannot drift) and run in a fresh copy of the repository, with a
HOME of its own that holds a token file, as any earlier local ray.init() leaves one (the case that broke the old
commands); nothing is written into the user's ~/.ray. `ray stop` always runs at the end. Slow (a Ray start and a corpus job, about 1.5 minutes); starts Ray on the default ports, so run it alone,
under the lock the other Ray tests take: `python -m pytest -m slow tests/e2e/test_readme_cluster_path.py`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from alarm import env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
NOT_READY = "No available agent to submit job"  # the head is still starting: README says to run it again


def readme_block(*needles: str) -> str:
    """The fenced bash block of README.md holding every needle, dedented (it may sit in a list item)."""
    blocks = re.findall(r"^([ \t]*)```bash\n(.*?)^\1```", (ROOT / "README.md").read_text(), re.M | re.S)
    found = [textwrap.dedent(body) for _, body in blocks if all(n in body for n in needles)]
    assert len(found) == 1, f"README.md should have one bash block with {needles}, found {len(found)}"
    return found[0]


def copy_repository(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not yet committed), nothing that git ignores."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def shell_env(home: Path) -> dict:
    drop = {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "HOME": str(home),
            "ALARM_CACHE": str(env.cache_dir()),  # the tiny checkpoints already built, not a rebuild in HOME
            "RAY_USAGE_STATS_ENABLED": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def bash(script: str, cwd: Path, environ: dict, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-x", "-c", script], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=timeout_s)


def test_ray_start_and_job_submit_as_readme_shows_them(tmp_path):
    block = readme_block("ray start --head", "ray job submit")
    repo, home = copy_repository(tmp_path / "repo"), tmp_path / "home"
    home.mkdir()
    environ = shell_env(home)
    # a token file, as any earlier local ray.init() leaves one: what made `ray start` (token auth on by itself)
    # and `ray job submit` (off unless RAY_AUTH_MODE=token) disagree
    subprocess.run(["ray", "get-auth-token", "--generate"], env=environ, capture_output=True, check=True, timeout=60)
    assert (home / ".ray" / "auth_token").is_file()
    try:
        done = bash(block, repo, environ, 1500)
        lines = block.splitlines()
        submit = next(i for i, line in enumerate(lines) if line.startswith("ray job submit"))
        again = "\n".join([*(line for line in lines if line.startswith("export ")), *lines[submit:]])
        for _ in range(2):  # what README tells the user to do when the head is not ready yet
            if done.returncode == 0 or NOT_READY not in done.stdout + done.stderr:
                break
            done = bash(again, repo, environ, 1500)
        assert done.returncode == 0, f"README's block failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    finally:
        subprocess.run(["ray", "stop", "--force"], cwd=repo, env=environ, capture_output=True, timeout=120)
    manifest = json.loads((repo / "runs" / "tiny-corpus" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["shards"]
    stats = json.loads((repo / "runs" / "tiny-corpus" / "stats.json").read_text())
    assert stats["rows"] > 0
