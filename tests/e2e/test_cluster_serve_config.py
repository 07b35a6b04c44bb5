"""The rendered serveConfigV2 runs: the `tiny` cluster preset's Serve config, moved to loopback and free ports, is
deployed with `serve run` (what KubeRay does through the head's dashboard, minus Kubernetes) and answers over gRPC.

Starts its own local Ray cluster in a subprocess: run it alone (`python -m pytest -m slow tests/e2e`), not in
parallel with another Ray test (a Ray node's ports are fixed, so two clusters on one machine collide).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def local_serve_config(http_port: int, grpc_port: int) -> tuple[dict, dict[str, str]]:
    """The tiny preset's serveConfigV2 on 127.0.0.1 and the given ports, and the Serve env of its pods."""
    from alarm.cluster import render

    doc = yaml.safe_load(render("tiny")["rayservice.yaml"])
    cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    cfg["http_options"].update(host="127.0.0.1", port=http_port)
    cfg["grpc_options"]["port"] = grpc_port
    (app,) = cfg["applications"]
    # the application's own config says the same (build_app reads host and ports from it)
    app["args"]["overrides"] += ["host=127.0.0.1", f"http_port={http_port}", f"grpc_port={grpc_port}"]
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"]}
    return cfg, env


def test_the_rendered_serve_config_serves_grpc(tmp_path):
    from alarm.client import AlarmClient

    http_port, grpc_port = free_port(), free_port()
    cfg, pod_env = local_serve_config(http_port, grpc_port)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local cluster, never a shared one
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAY_SERVE_GRPC_MAX_MESSAGE_SIZE=pod_env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"],
               VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", HF_HUB_OFFLINE="1")
    serve_exe = shutil.which("serve") or str(Path(sys.executable).parent / "serve")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([serve_exe, "run", str(path)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tail = lambda: (tmp_path / "serve.log").read_text()[-4000:]  # noqa: E731
    target = f"127.0.0.1:{grpc_port}"
    try:
        with AlarmClient(target, timeout_s=300) as client:
            t0 = time.monotonic()
            while True:
                assert proc.poll() is None, f"`serve run` exited with {proc.returncode}:\n{tail()}"
                try:
                    if client.health(timeout_s=5) == "SERVING":
                        break
                except Exception:
                    pass  # the proxy or the ingress replica is not up yet
                assert time.monotonic() - t0 < READY_TIMEOUT_S, f"not SERVING after {READY_TIMEOUT_S} s:\n{tail()}"
                time.sleep(1.0)
            reply = client.generate(wav(), "What do you hear?", max_tokens=16)
            assert reply.usage.total_tokens > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        try:  # whatever `serve run` left in its session (its local Ray's processes)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        log.close()
