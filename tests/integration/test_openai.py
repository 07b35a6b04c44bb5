"""The OpenAI-compatible HTTP API, ListModels, bearer tokens and a TLS front, end to end on Ray Serve: the official
`openai` client and the gRPC client against one application (ports 8117/9117) that requires a token, with the
random-weight tiny Qwen3 as the LLM so generations run as long as asked.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from functools import partial
from types import SimpleNamespace

import grpc
import httpx
import openai
import pytest

from alarm.client import AlarmClient
from alarm.config import ServeConfig, load_config
from services.serve.chat import FINISH
from tests.certs import make_certs
from tests.integration.conftest import ROOT
from tests.integration.test_serve import wav

HTTP_PORT, GRPC_PORT = 8117, 9117
TOKEN = "s3cret-token-for-tests"
# one `audio` deployment for the encoders and the fusion (deployments.colocate): the API is the same whatever the
# layout (test_serve.py covers the one-per-stage one), and three replicas start in about 20 s less than seven
OVERRIDES = ["model.llm.checkpoint=tiny://qwen3", "llm.max_model_len=2048", "defaults.max_tokens=64",
             "defaults.max_thinking_tokens=32", "deployments.colocate=true"]
GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from services.serve.app import GRPC_SERVICERS, build_app

    token_file = tmp_path_factory.mktemp("auth") / "tokens"
    token_file.write_text(f"other-token\n{TOKEN}\n")
    cfg = load_config(ServeConfig, "tiny", [*OVERRIDES, f"auth.token_file={token_file}"], section="serve")
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT},
                grpc_options=gRPCOptions(port=GRPC_PORT, grpc_servicer_functions=GRPC_SERVICERS))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=False)
    client = AlarmClient(f"127.0.0.1:{GRPC_PORT}", timeout_s=120, token=TOKEN)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        try:
            if client.health() == "SERVING":
                break
        except grpc.RpcError:
            pass  # the ingress replica is not up yet
        time.sleep(0.5)
    else:
        pytest.fail("the application never reported SERVING")
    llm = serve.get_deployment_handle("llm", app_name=cfg.name)
    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{HTTP_PORT}/v1", api_key=TOKEN, max_retries=0, timeout=120)
    yield SimpleNamespace(cfg=cfg, client=client, llm=llm, oai=oai)
    client.close()
    serve.shutdown()


def unfinished(served) -> int:
    return served.llm.num_unfinished.remote().result()


def wait_idle(served, timeout_s: float = 5.0) -> None:
    """A 1900-token request left running would hold the engine for tens of seconds here: 5 s proves the abort."""
    t0 = time.monotonic()
    while unfinished(served) and time.monotonic() - t0 < timeout_s:
        time.sleep(0.1)
    assert unfinished(served) == 0, "the engine still holds the request: it was not aborted"


def audio_part(data: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


def ask(prompt: str, data: bytes | None) -> list[dict]:
    content = [{"type": "text", "text": prompt}, *([audio_part(data)] if data else [])]
    return [{"role": "system", "content": "You are an audio-understanding model."},
            {"role": "user", "content": content}]


def test_openai_client_answers_as_grpc_does(served):
    clip = wav(1.5, rate=44100, freq=500)
    kw = dict(max_thinking_tokens=8, max_tokens=24, seed=3, **GREEDY)
    ref = served.client.generate(clip, "What is it?", system_prompt="You are an audio-understanding model.",
                                 return_reasoning=True, **kw)
    out = served.oai.chat.completions.create(
        model=served.cfg.default_adapter, messages=ask("What is it?", clip), max_completion_tokens=24, seed=3,
        temperature=0.0, extra_body={"thinking_token_budget": 8})
    msg = out.choices[0].message
    assert (msg.content, msg.reasoning) == (ref.answer, ref.reasoning) and ref.answer + ref.reasoning
    assert out.usage.completion_tokens == ref.usage.total_tokens
    finish = FINISH[ref.finish_reason]
    assert out.usage.prompt_tokens == ref.usage.prompt_tokens and out.choices[0].finish_reason == finish

    stream = served.oai.chat.completions.create(
        model=served.cfg.default_adapter, messages=ask("What is it?", clip), max_completion_tokens=24, seed=3,
        temperature=0.0, extra_body={"thinking_token_budget": 8}, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.answer
    assert "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks) == ref.reasoning
    assert chunks[-1].choices[0].finish_reason == finish
    assert chunks[-1].usage.completion_tokens == ref.usage.total_tokens


def test_models_over_http_and_grpc_agree(served):
    grpc_models = served.client.list_models()
    http_models = served.oai.models.list().data
    assert [m.id for m in http_models] == [m.id for m in grpc_models] == sorted(served.cfg.adapters)
    assert {m.base_model for m in grpc_models} == {"tiny://qwen3"}
    assert [m.id for m in grpc_models if m.is_default] == [served.cfg.default_adapter]


def test_errors_are_openai_bodies_with_the_table_codes_and_request_ids(served):
    url = f"http://127.0.0.1:{HTTP_PORT}/v1/chat/completions"
    auth = {"authorization": f"Bearer {TOKEN}"}
    cases = [({"messages": [{"role": "user", "content": " "}]}, 400, "INVALID_ARGUMENT", "prompt is empty"),
             ({"model": "nope", "messages": ask("Hi", wav())}, 400, "INVALID_ARGUMENT", "unknown adapter"),
             ({"messages": ask("Hi", None), "max_completion_tokens": 5000}, 429, "RESOURCE_EXHAUSTED", "context")]
    with httpx.Client(timeout=60) as http:
        for body, status, code, needle in cases:
            r = http.post(url, json=body, headers={**auth, "x-request-id": f"req-{status}"})
            err = r.json()["error"]
            assert (r.status_code, err["code"]) == (status, code) and needle in err["message"], r.text
            assert r.headers["x-request-id"] == f"req-{status}"
        r = http.get(f"http://127.0.0.1:{HTTP_PORT}/v1/nowhere", headers=auth)
        assert r.status_code == 404 and "error" in r.json()
    with pytest.raises(openai.BadRequestError):
        served.oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=2)


def test_tokens_are_required_on_both_protocols_but_not_for_health(served):
    for token in (None, "wrong"):
        bare = AlarmClient(f"127.0.0.1:{GRPC_PORT}", timeout_s=30, token=token)
        try:
            for call in (partial(bare.generate, None, "Hi"), bare.list_models):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert bare.health() == "SERVING"  # probes carry no secret
        finally:
            bare.close()
        r = httpx.get(f"http://127.0.0.1:{HTTP_PORT}/v1/models", timeout=30,
                      headers={"authorization": f"Bearer {token}"} if token else {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{HTTP_PORT}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401 and e.value.body["code"] == "UNAUTHENTICATED"


def test_a_dropped_http_stream_aborts_the_engine_request(served):
    body = {"messages": ask("Talk for a long time.", wav()), "stream": True, "max_completion_tokens": 1900,
            "thinking_token_budget": -1, "temperature": 0.0}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"http://127.0.0.1:{HTTP_PORT}/v1/chat/completions", json=body,
                         headers={"authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status_code == 200
            events = (line for line in r.iter_lines() if line.startswith("data: "))
            got = [json.loads(next(events)[6:]) for _ in range(12)]
            assert all("reasoning" in g["choices"][0]["delta"] for g in got[1:])
            assert unfinished(served) == 1
    wait_idle(served)  # the connection is closed: Serve cancels the ingress, which aborts the engine request


# -- TLS through a real nginx -----------------------------------------------------------------------------------


def trust(ca) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture
def tls_front(served, tmp_path):
    """nginx on a free 127.0.0.1 port terminating TLS for both of Serve's proxies, from alarm.front's template."""
    from alarm.front import Front, nginx_conf
    from tests.conftest import _free_port

    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.path.exists(p)), None)
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light); the TLS front test needs it")
    ca, cert, key = make_certs(tmp_path)
    port = _free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(Front(listen=f"127.0.0.1:{port}", grpc=f"127.0.0.1:{GRPC_PORT}",
                                     http=f"127.0.0.1:{HTTP_PORT}", cert=str(cert), key=str(key),
                                     state_dir=str(tmp_path), user="root" if os.geteuid() == 0 else None)))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(f"https://127.0.0.1:{port}/-/healthz", verify=trust(ca), timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield SimpleNamespace(port=port, ca=ca)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tls_front_with_tokens(served, tls_front):
    target = f"127.0.0.1:{tls_front.port}"
    for token in (None, "wrong"):
        c = AlarmClient(target, ca=tls_front.ca, token=token, timeout_s=60)
        try:
            with pytest.raises(grpc.RpcError) as e:
                c.generate(wav(), "What is it?", max_tokens=8)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            c.close()
        r = httpx.post(f"https://{target}/v1/chat/completions", verify=trust(tls_front.ca), timeout=60,
                       json={"messages": ask("Hi", None)}, headers={"authorization": f"Bearer {token}"} if token else {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    with AlarmClient(target, ca=tls_front.ca, token=TOKEN, timeout_s=60) as c:
        reply = c.generate(wav(), "What is it?", max_tokens=8, max_thinking_tokens=4, **GREEDY)
        assert reply.usage.total_tokens > 0 and reply.request_id
        assert [m.id for m in c.list_models()] == sorted(served.cfg.adapters)
    oai = openai.OpenAI(base_url=f"https://{target}/v1", api_key=TOKEN, max_retries=0,
                        http_client=httpx.Client(verify=trust(tls_front.ca), timeout=60))
    out = oai.chat.completions.create(model=served.cfg.default_adapter, messages=ask("What is it?", wav()),
                                      max_completion_tokens=8, temperature=0.0)
    assert out.usage.completion_tokens > 0
    # the CLI as a user runs it: --tls --ca --token-file
    token_file = tls_front.ca.parent / "token"
    token_file.write_text(TOKEN + "\n")
    run = subprocess.run([sys.executable, "-m", "alarm.client", "--models", "--target", target, "--ca",
                          str(tls_front.ca), "--token-file", str(token_file)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and served.cfg.default_adapter in run.stdout, run.stderr


def test_eval_scores_our_http_endpoint_as_an_openai_target(served, tmp_path, monkeypatch):
    """alarm.eval target=openai://... against our own HTTP API: the same items, predictions and report as gRPC."""
    from alarm.eval.__main__ import main
    from tests.unit.eval.helpers import mmau_row, write_json

    audio = tmp_path / "audio" / "test-mini-audios"
    audio.mkdir(parents=True)
    for i in range(3):
        (audio / f"q{i}.wav").write_bytes(wav(1.0, freq=300 + 100 * i))
    meta = write_json(tmp_path / "mmau.json", [mmau_row(i) for i in range(3)])
    common = ["benchmark=mmau", f"meta=[{meta}]", f"audio_root={tmp_path / 'audio'}", "max_thinking_tokens=4",
              "max_tokens=12", "temperature=0.0", "seed=1", "concurrency=2"]
    monkeypatch.setenv("ALARM_TOKEN", TOKEN)
    runs = {}
    for name, target in (("http", f"openai://127.0.0.1:{HTTP_PORT}/v1"), ("grpc", f"127.0.0.1:{GRPC_PORT}")):
        out = tmp_path / name
        assert main([*common, f"out={out}", f"target={target}"]) == 0
        runs[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert json.loads((out / "report.json").read_text())["items"]["answered"] == 3
    key = lambda rows: sorted((r["id"], r["answer"], r["reasoning"]) for r in rows)  # noqa: E731
    assert key(runs["http"]) == key(runs["grpc"])
