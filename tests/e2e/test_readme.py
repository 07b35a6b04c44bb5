"""README.md as a user runs it: every fenced bash block, in order, exactly as written (the setup block aside: CI runs
it, `.ci/run`), in a fresh copy of the repository, so a README that drifts from the code fails here. The path it
covers: generate, train, embed with the trained adapter, the toy world (`--size small`), evaluation, the Ray job,
serve + client, cluster render.

A `python -m alarm.serve` line runs until stopped, as in a terminal of its own: it starts in the background, the rest
of its block runs once the server reports SERVING, then it gets SIGTERM. Slow (about half an hour on 2 cores); it
starts Ray on the default ports and serves on 9000, so run it alone, under the lock the other Ray tests take:
`python -m pytest -m slow tests/e2e/test_readme.py`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.e2e.test_readme_cluster_path import NOT_READY, ROOT, bash, copy_repository, shell_env
from tests.e2e.test_serve_command import wait_serving

pytestmark = pytest.mark.slow
SETUP = "scripts/setup.sh"
SERVE = re.compile(r"^python -m alarm\.serve(?! --write-serve-config)")
TOY_TARGETS_MISSED = 2  # `python -m alarm.toy` exits 2 when the small run misses the full run's targets
BLOCK_TIMEOUT_S = 1800


def readme_blocks() -> list[str]:
    """README.md's bash blocks in order, dedented (some sit in list items), the setup block left out."""
    found = re.findall(r"^([ \t]*)```bash\n(.*?)^\1```", (ROOT / "README.md").read_text(), re.M | re.S)
    return [textwrap.dedent(body) for _, body in found if SETUP not in body]


def run_block(block: str, repo: Path, environ: dict) -> subprocess.CompletedProcess:
    done = bash(block, repo, environ, BLOCK_TIMEOUT_S)
    lines = block.splitlines()
    if NOT_READY in done.stdout + done.stderr:  # what README says to do when the head is still starting
        submit = next(i for i, line in enumerate(lines) if line.startswith("ray job submit"))
        again = "\n".join([*(line for line in lines if line.startswith("export ")), *lines[submit:]])
        done = bash(again, repo, environ, BLOCK_TIMEOUT_S)
    if done.returncode == TOY_TARGETS_MISSED and "python -m alarm.toy" in block:
        assert (repo / "runs" / "toy" / "report.json").is_file(), done.stderr[-3000:]
        return subprocess.CompletedProcess(done.args, 0, done.stdout, done.stderr)
    return done


def run_serving_block(block: str, repo: Path, environ: dict, log: Path) -> subprocess.CompletedProcess:
    """The `python -m alarm.serve` line in the background until SERVING, then the block's other lines."""
    lines = block.splitlines()
    at = next(i for i, line in enumerate(lines) if SERVE.match(line))
    serve_line, rest = lines[at], "\n".join(lines[:at] + lines[at + 1:])
    with open(log, "w") as out:
        server = subprocess.Popen(["bash", "-c", f"exec {serve_line}"], cwd=repo, env=environ, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_serving("127.0.0.1:9000", server, 900)
        except BaseException:
            print(log.read_text()[-3000:])  # shown with the failure
            raise
        return bash(rest, repo, environ, 600)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            assert server.wait(120) == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise


def test_readme_blocks_run_in_order_as_written(tmp_path):
    blocks = readme_blocks()
    assert sum(bool(SERVE.search(b)) for b in blocks) == 1, "README should start the server in one block"
    repo, home = copy_repository(tmp_path / "repo"), tmp_path / "home"
    home.mkdir()
    environ = shell_env(home)  # a HOME of its own: nothing written into the user's ~/.ray
    outputs = []
    try:
        for i, block in enumerate(blocks):
            serving = any(SERVE.match(line) for line in block.splitlines())
            done = (run_serving_block(block, repo, environ, tmp_path / f"serve-{i}.log") if serving
                    else run_block(block, repo, environ))
            outputs.append(done)
            assert done.returncode == 0, f"README block {i} failed:\n{block}\n{done.stdout[-3000:]}\n" \
                                         f"{done.stderr[-4000:]}"
    finally:
        subprocess.run(["ray", "stop", "--force"], cwd=repo, env=environ, capture_output=True, timeout=120)
    runs = repo / "runs"
    assert json.loads((runs / "tiny-corpus" / "manifest.json").read_text())["complete"] is True
    assert (runs / "tiny-train" / "adapter").is_dir() and (runs / "toy" / "report.json").is_file()
    assert json.loads((runs / "eval" / "toy" / "report.json").read_text())["items"]["answered"] > 0
    assert (repo / "cluster" / "rendered" / "alarm-ca" / "rayservice.yaml").is_file()
    asked = next(o for o in outputs if "alarm.client" in " ".join(map(str, o.args)))
    assert "[STOP;" in asked.stderr and "audio)" in asked.stderr, asked.stderr[-2000:]
