"""The light client as a user installs it: `pip install ./clients/python` into a fresh virtual environment pulls
only grpcio, grpcio-health-checking and protobuf (no torch, Ray, vLLM, transformers, numpy), and its `alarm-client`
command talks to a real gRPC server (our registration, a scripted servicer) with the audio bytes undecoded and the
bearer token. Slow (a pip install from the package registry); run with `python -m pytest -m slow`."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.proxy import add_alarm_service

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ALLOWED = {"alarm-client", "grpcio", "grpcio-health-checking", "protobuf", "typing-extensions",  # grpcio needs it
           "pip", "setuptools", "wheel"}
HEAVY = {"torch", "ray", "vllm", "transformers", "numpy", "soundfile", "scipy"}


class Scripted:
    """AlarmService answering from a script; records what it received."""

    def __init__(self):
        self.requests, self.metadata = [], []

    def _seen(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if dict(context.invocation_metadata()).get("authorization") != "Bearer tok":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not accepted by this server")

    def Generate(self, request, context):  # noqa: N802
        self._seen(request, context)
        return pb.GenerateResponse(answer="A tone.", request_id="r")

    def GenerateStream(self, request, context):  # noqa: N802
        self._seen(request, context)
        yield pb.GenerateStreamResponse(reasoning_delta="I hear a tone.")
        yield pb.GenerateStreamResponse(answer_delta="A tone.")
        yield pb.GenerateStreamResponse(final=pb.GenerateResponse(answer="A tone.", request_id="r"))

    def ListModels(self, request, context):  # noqa: N802
        self._seen(request, context)
        return pb.ListModelsResponse(models=[pb.Model(id="tiny", encoders=["whisper"], base_model="b",
                                                      is_default=True)])


@pytest.fixture(scope="module")
def light_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("light")
    source = shutil.copytree(ROOT / "clients" / "python", tmp / "src")  # the build writes beside its source
    env = tmp / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    run = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and ("Could not find a version" in run.stderr or "NewConnectionError" in run.stderr):
        pytest.skip(f"the package registry is not reachable: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr
    return env


def test_installs_only_what_the_client_needs(light_env):
    listed = subprocess.run([str(light_env / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=120, check=True)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert not names & HEAVY and names <= ALLOWED, names
    assert {"alarm-client", "grpcio", "protobuf"} <= names


def test_the_command_talks_to_a_server_with_a_token(light_env, tmp_path):
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_alarm_service(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        clip = tmp_path / "clip.flac"
        clip.write_bytes(b"fLaC-not-decoded-here")
        (tmp_path / "token").write_text("tok\n")
        cmd = [str(light_env / "bin" / "alarm-client"), "--target", f"127.0.0.1:{port}", "--timeout", "30"]
        ok = subprocess.run([*cmd, str(clip), "--prompt", "What is it?", "--reasoning", "--token-file",
                             str(tmp_path / "token")], capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and ok.stdout.strip() == "A tone." and "I hear a tone." in ok.stderr, ok.stderr
        assert servicer.requests[-1].audio_bytes == clip.read_bytes()  # sent as it is: the server decodes
        assert servicer.requests[-1].return_reasoning and servicer.requests[-1].prompt == "What is it?"
        models = subprocess.run([*cmd, "--models", "--token-file", str(tmp_path / "token")], capture_output=True,
                                text=True, timeout=120)
        assert models.returncode == 0 and models.stdout.startswith("tiny\twhisper\tb\tdefault"), models.stderr
        bad = subprocess.run([*cmd, str(clip), "--prompt", "x"], capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "ALARM_TOKEN": "wrong"})
        assert bad.returncode == 1 and "UNAUTHENTICATED" in bad.stderr
        assert servicer.metadata[-1]["authorization"] == "Bearer wrong"
    finally:
        server.stop(None)
