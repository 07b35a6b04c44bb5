"""The serving commands as a user runs them, each on its own Ray: `python -m alarm.serve` and `serve run` of the
config `python -m alarm.serve --write-serve-config` writes. Slow (a Ray start, a vLLM engine start and a Serve
shutdown each); run with `python -m pytest -m slow`, never next to the integration tests' cluster."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_file(tmp_path: Path) -> Path:
    t = np.arange(2 * 22050) / 22050
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050, format="FLAC")
    path = tmp_path / "clip.flac"
    path.write_bytes(buf.getvalue())
    return path


def env() -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(32 * 2**20), "PYTHONPATH": str(ROOT)}


def wait_serving(target: str, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    from alarm.client import AlarmClient

    t0 = time.monotonic()
    with AlarmClient(target) as client:
        while time.monotonic() - t0 < timeout_s:
            assert proc.poll() is None, f"the server exited with {proc.returncode}"
            try:
                if client.health(timeout_s=3) == "SERVING":
                    return
            except Exception:
                pass
            time.sleep(1)
    pytest.fail(f"{target} not SERVING after {timeout_s} s")


def ask(target: str, audio: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alarm.client", str(audio), "--prompt", "What do you hear?",
                           "--target", target, "--reasoning"], capture_output=True, text=True, timeout=120,
                          env=env(), cwd=ROOT)


def stop(proc: subprocess.Popen, timeout_s: float = 120) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_python_m_alarm_serve(tmp_path):
    grpc_port, http_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "alarm.serve", f"grpc_port={grpc_port}", f"http_port={http_port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    try:
        target = f"127.0.0.1:{grpc_port}"
        wait_serving(target, proc)
        out = ask(target, wav_file(tmp_path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip(), "no answer streamed"
        assert "[STOP;" in out.stderr and "audio)" in out.stderr
    finally:
        rc = stop(proc)
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_serve_run_of_the_generated_config(tmp_path):
    import yaml

    grpc_port, http_port = free_port(), free_port()
    config = tmp_path / "serve.yaml"
    subprocess.run([sys.executable, "-m", "alarm.serve", "--write-serve-config", str(config),
                    f"grpc_port={grpc_port}", f"http_port={http_port}"], check=True, env=env(), cwd=ROOT)
    data = yaml.safe_load(config.read_text())
    assert data["grpc_options"]["port"] == grpc_port and data["http_options"]["port"] == http_port
    log = open(tmp_path / "serve.log", "w")
    serve = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen([str(serve), "run", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env(),
                            cwd=tmp_path)
    try:
        target = f"127.0.0.1:{grpc_port}"
        wait_serving(target, proc)
        out = ask(target, wav_file(tmp_path))
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
    finally:
        stop(proc)
