"""The gRPC service end to end on Ray Serve: a real channel to Serve's proxy, the tiny model behind it.

One application for the module (ports 8101/9101), with the random-weight tiny Qwen3 as the LLM so generations run
as long as asked (the scripted one stops after ~60 tokens). Covers: health before/after loading, reflection,
unary and streamed answers, the status-code table with the replicas still serving afterwards, cancellation and
deadlines freeing the engine slot, 16 concurrent requests, ALARM-E and adapter multiplexing, text-only parity
with the base LLM, and parity of the distributed path with the in-process pipeline.
"""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import soundfile as sf

from alarm.client import AlarmClient, make_request
from alarm.config import GRPC_SERVICE, ServeConfig, load_config

HTTP_PORT, GRPC_PORT = 8101, 9101
BUCKET = "serve-audio"
MAX_MESSAGE = 8 * 2**20  # RAY_SERVE_GRPC_MAX_MESSAGE_SIZE set by the ray_cluster fixture
OVERRIDES = ["model.llm.checkpoint=tiny://qwen3", "llm.max_model_len=2048", "defaults.max_tokens=64",
             "defaults.max_thinking_tokens=32",
             # a short LLM queue so a burst of 32 overflows it: 16 running + 8 waiting, then RESOURCE_EXHAUSTED.
             # 16 concurrent requests need the spare places: on a loaded machine Serve's router can still count a
             # finished request as running (with 2 places, 1 of 16 was refused)
             "deployments.llm.max_ongoing_requests=16", "deployments.llm.max_queued_requests=8",
             f"limits.audio_uri_prefixes=[s3://{BUCKET}/ok/]",
             "deployments.colocate=false"]  # one deployment per stage, as on clusters (test_serve_colocated.py: one)
GREEDY = dict(temperature=0.0)


def wav(seconds: float = 2.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def start_app(cfg: ServeConfig, http_port: int, grpc_port: int) -> tuple[AlarmClient, tuple[str, str]]:
    """Deploys cfg's application behind Serve's gRPC proxy on 127.0.0.1; returns a client once it reports SERVING
    and the first (readiness, liveness) it answered while loading."""
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from services.serve.app import GRPC_SERVICERS, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=GRPC_SERVICERS))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=False)
    client = AlarmClient(f"127.0.0.1:{grpc_port}", timeout_s=120)
    first, t0 = None, time.monotonic()
    while time.monotonic() - t0 < 600:
        try:
            status = client.health()
        except grpc.RpcError:
            time.sleep(0.2)  # the ingress replica is not up yet
            continue
        first = first or (status, client.health(""))
        if status == "SERVING":
            break
        time.sleep(0.5)
    else:
        pytest.fail("the application never reported SERVING")
    return client, first


@pytest.fixture(scope="module")
def served(ray_cluster):
    from ray import serve

    cfg = load_config(ServeConfig, "tiny", OVERRIDES, section="serve")
    client, first = start_app(cfg, HTTP_PORT, GRPC_PORT)
    llm = serve.get_deployment_handle("llm", app_name=cfg.name)
    yield SimpleNamespace(cfg=cfg, client=client, first=first, llm=llm, serve=serve)
    client.close()
    serve.shutdown()


def unfinished(served) -> int:
    return served.llm.num_unfinished.remote().result()


def wait_idle(served, timeout_s: float = 5.0) -> None:
    """The engine lets go of aborted requests within a few seconds; a 1900-token request left running would
    hold its slot for tens of seconds on this CPU, so a short timeout proves the abort."""
    t0 = time.monotonic()
    while unfinished(served) and time.monotonic() - t0 < timeout_s:
        time.sleep(0.1)
    assert unfinished(served) == 0, "the engine still holds the request: it was not aborted"


# Ray Serve 2.60's gRPC proxy passes a client's cancel of a stream on to the ingress only when it lands while the
# proxy awaits the ingress's next message. One that lands while the proxy writes a message out (a proxy that has
# fallen behind a fast stream, as on a loaded CI machine) drops the call without cancelling it, and the engine
# request runs to its max_tokens or the server's request_timeout_s. A copy of the proxy's generator chain over
# grpc.aio lost 22 of 50 cancels with a message always ready, none with 5 ms between messages. Our abort is proven
# when one of ABORT_TRIES cancels frees the slot; each try starts from an idle engine, so a lost cancel fails no
# other test.
ABORT_TRIES = 3


def drain(served, timeout_s: float = 120.0) -> None:
    """Waits for the engine to finish what an earlier try left running (a 1900-token request: tens of seconds)."""
    t0 = time.monotonic()
    while unfinished(served) and time.monotonic() - t0 < timeout_s:
        time.sleep(0.5)
    assert unfinished(served) == 0, f"the engine still runs requests after {timeout_s:g} s"


def until_aborted(served, attempt) -> None:
    """Runs attempt() (start a long request, then cancel it or let its deadline pass) until the engine lets go of
    the request within wait_idle's 5 s, at most ABORT_TRIES times."""
    for _ in range(ABORT_TRIES):
        drain(served)
        attempt()
        try:
            return wait_idle(served)
        except AssertionError:
            continue
    pytest.fail(f"the engine held the request after each of {ABORT_TRIES} tries: it was not aborted")


def test_health_reports_loading_then_serving(served):
    readiness, liveness = served.first
    assert readiness == "NOT_SERVING", "readiness must be NOT_SERVING while the LLM loads"
    assert liveness == "SERVING"
    assert served.client.health() == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        served.client.health("no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    listed = health_pb2_grpc.HealthStub(served.client.channel).List(health_pb2.HealthListRequest(), timeout=10)
    assert {k: v.status for k, v in listed.statuses.items()} == {"": 1, GRPC_SERVICE: 1}


def test_reflection_lists_the_service(served):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    services = set(ProtoReflectionDescriptorDatabase(served.client.channel).get_services())
    assert {GRPC_SERVICE, "grpc.health.v1.Health"} <= services


def test_unary_answer_with_request_id(served):
    reply, call = served.client.generate_with_call(wav(), "What do you hear?", return_reasoning=True,
                                                   request_id="req-42", **GREEDY)
    assert reply.request_id == "req-42"
    assert dict(call.trailing_metadata())["request_id"] == "req-42"
    u = reply.usage
    assert u.audio_tokens == 2 * 25 + 2  # 2 s at 25 tokens/s, plus the start/end vectors
    assert u.prompt_tokens > u.audio_tokens and u.total_tokens == u.reasoning_tokens + u.answer_tokens > 0
    assert reply.finish_reason in (1, 2) and reply.timings.total_ms >= reply.timings.decode_ms > 0
    assert reply.timings.first_token_ms > 0 and reply.timings.encode_ms > 0
    assert reply.thinking_truncated == (u.reasoning_tokens >= 32 and reply.reasoning_complete)

    generated, call = served.client.generate_with_call(wav(), "What do you hear?", **GREEDY)
    assert generated.request_id and dict(call.trailing_metadata())["request_id"] == generated.request_id


def test_stream_deltas_add_up_to_the_unary_answer(served):
    kwargs = dict(return_reasoning=True, max_thinking_tokens=8, max_tokens=40, **GREEDY)
    reasoning, answer, finals = "", "", []
    for msg in served.client.stream(wav(freq=300), "Describe it.", **kwargs):
        kind = msg.WhichOneof("event")
        if kind == "reasoning_delta":
            reasoning += msg.reasoning_delta
        elif kind == "answer_delta":
            answer += msg.answer_delta
        else:
            finals.append(msg.final)
    assert len(finals) == 1
    final = finals[0]
    assert (reasoning, answer) == (final.reasoning, final.answer)
    unary = served.client.generate(wav(freq=300), "Describe it.", **kwargs)
    assert (unary.reasoning, unary.answer, unary.usage) == (final.reasoning, final.answer, final.usage)
    assert final.thinking_truncated  # an 8-token budget on a random model: the forcing sentence closed it


BAD = {
    "empty prompt": (dict(prompt=" "), "prompt is empty"),
    "undecodable audio": (dict(audio=b"not audio at all"), "cannot decode"),
    "empty audio": (dict(audio=wav(0.0)), "0 samples"),
    "audio too long": (dict(audio=wav(61.0, rate=8000)), "60"),
    "negative temperature": (dict(temperature=-1.0), "temperature"),
    "temperature over the engine's": (dict(temperature=2.5), "sampling.temperature must be a number in [0, 2]"),
    "huge temperature": (dict(temperature=1e30), "sampling.temperature must be a number in [0, 2]"),
    "negative seed": (dict(seed=-1), "sampling.seed must be in [0, "),
    "top_p zero": (dict(top_p=0.0), "top_p"),
    "negative top_k": (dict(top_k=-3), "top_k"),
    "negative max_tokens": (dict(max_tokens=-5), "max_tokens"),
    "bad thinking budget": (dict(max_thinking_tokens=-2), "max_thinking_tokens"),
    "unknown adapter": (dict(adapter_id="nope"), "unknown adapter 'nope'"),
    "ensemble of one": (dict(ensemble=["tiny"]), "at least 2"),
    "adapter and ensemble": (dict(adapter_id="tiny", ensemble=["tiny", "tiny-b"]), "not both"),
    "file uri": (dict(audio="file:///etc/passwd"), "allowed prefixes"),
    "sample rate too high": (dict(audio=wav(0.5, rate=384000)), "sample rate of 384000 Hz"),
    "long request id": (dict(request_id="x" * 200), "request_id"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_invalid_argument_and_the_service_keeps_serving(served, case):
    kwargs, needle = BAD[case]
    kwargs = {"audio": wav(), "prompt": "What is it?", **kwargs}
    audio, prompt = kwargs.pop("audio"), kwargs.pop("prompt")
    for call in (served.client.generate, lambda *a, **k: list(served.client.stream(*a, **k))):
        with pytest.raises(grpc.RpcError) as e:
            call(audio, prompt, **kwargs)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert needle in e.value.details() and "Traceback" not in e.value.details()
    assert served.client.generate(wav(), "Still there?", max_tokens=4).usage.total_tokens == 4


UNDECODABLE = {
    "invalid UTF-8 in a string": make_request(None, "hi").SerializeToString().replace(b"hi", b"\xff\xfe"),
    "corrupt message": b"\x1a\xff\xff",
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
def test_bytes_that_do_not_parse_are_invalid_argument_with_a_request_id(served, case):
    channel = served.client.channel
    unary = channel.unary_unary("/alarm.v1.AlarmService/Generate")  # raw bytes, no serializer
    with pytest.raises(grpc.RpcError) as e:
        unary(UNDECODABLE[case], timeout=60, metadata=[("request_id", f"bad-{len(case)}")])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "not a valid alarm.v1.GenerateRequest" in e.value.details()
    assert "DecodeError" not in e.value.details() and "<class" not in e.value.details()
    assert dict(e.value.trailing_metadata())["request_id"] == f"bad-{len(case)}"
    stream = channel.unary_stream("/alarm.v1.AlarmService/GenerateStream")
    with pytest.raises(grpc.RpcError) as e:
        list(stream(UNDECODABLE[case], timeout=60, metadata=[("request_id", "bad-stream")]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "[request_id=bad-stream]" in e.value.details()
    assert served.client.generate(wav(), "Still there?", max_tokens=4).usage.total_tokens == 4


def serve_logs() -> dict[str, str]:
    """Serve's log files of this cluster (replicas, proxies, controller): name -> text."""
    import ray

    folder = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return {f.name: f.read_text(errors="replace") for f in folder.glob("*.log")}


def test_client_errors_are_one_line_in_the_logs_and_only_internal_has_a_traceback(served):
    before = {name: text.count("Traceback") for name, text in serve_logs().items()}
    for i in range(3):  # a stream, a unary call, an over-range sampling value: plain client errors
        with pytest.raises(grpc.RpcError):
            list(served.client.stream(wav(), " ", request_id=f"log-probe-{i}"))
        with pytest.raises(grpc.RpcError):
            served.client.generate(wav(), "What?", temperature=9.0, request_id=f"log-probe-u{i}")
    time.sleep(2)  # Serve's log handlers write asynchronously
    logs = serve_logs()
    new_tracebacks = {n: t.count("Traceback") - before.get(n, 0) for n, t in logs.items()}
    assert not any(new_tracebacks.values()), new_tracebacks
    probes = [line for t in logs.values() for line in t.splitlines() if "log-probe-" in line]
    ours = [line for line in probes if ": INVALID_ARGUMENT: " in line]  # the ingress's one line per request
    assert len(ours) == 6 and all(line.startswith("INFO") for line in ours), ours
    assert not [line for line in probes if line.startswith("ERROR")]


def test_over_context_and_oversize_are_resource_exhausted(served):
    with pytest.raises(grpc.RpcError) as e:
        served.client.generate(wav(), "What is it?", max_tokens=4000)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2048" in e.value.details() and "Traceback" not in e.value.details()
    big = b"RIFF" + bytes(MAX_MESSAGE + 1024)
    with pytest.raises(grpc.RpcError) as e:
        served.client.generate(big, "What is it?")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.client.generate(wav(), "Still there?", max_tokens=4).usage.total_tokens == 4


@pytest.mark.parametrize("budget", [-1, 8], ids=["one phase", "in phase 2"])
def test_cancelled_stream_frees_its_engine_slot(served, budget):
    def attempt():
        call = served.client.stream(wav(), "Talk for a long time.", max_thinking_tokens=budget, max_tokens=1900,
                                    return_reasoning=True, **GREEDY)
        if budget < 0:
            got = [next(call) for _ in range(12)]
            assert all(m.WhichOneof("event") == "reasoning_delta" for m in got)
        else:  # read up to the forcing sentence: phase 2 (1892 tokens, tens of seconds here) starts right after it
            while "give the solution" not in next(call).reasoning_delta:
                pass
            t0 = time.monotonic()
            while unfinished(served) == 0 and time.monotonic() - t0 < 5:
                time.sleep(0.05)
        assert unfinished(served) == 1
        call.cancel()

    until_aborted(served, attempt)


def test_deadline_aborts_the_engine_request(served):
    def attempt():
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            served.client.generate(wav(), "Talk for a long time.", max_thinking_tokens=-1, max_tokens=1900,
                                   timeout_s=1.5, **GREEDY)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - t0 < 5

    # one try: a unary call's deadline reaches the proxy while it awaits the ingress's answer, its only wait
    drain(served)
    attempt()
    wait_idle(served)


def test_audio_uri_under_an_allowed_prefix(served, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for key in ("ok/a.wav", "secret/a.wav"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=wav())
    by_uri = served.client.generate(f"s3://{BUCKET}/ok/a.wav", "What is it?", max_tokens=8, **GREEDY)
    by_bytes = served.client.generate(wav(), "What is it?", max_tokens=8, **GREEDY)
    assert (by_uri.reasoning, by_uri.answer, by_uri.usage) == (by_bytes.reasoning, by_bytes.answer, by_bytes.usage)
    for uri in (f"s3://{BUCKET}/secret/a.wav", f"s3://{BUCKET}/ok/../secret/a.wav"):
        with pytest.raises(grpc.RpcError) as e:
            served.client.generate(uri, "What is it?")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "allowed prefixes" in e.value.details()


def test_sixteen_concurrent_requests_complete(served):
    """Every one of 16 concurrent requests gets its own full answer. How the encoders batch them depends on
    scheduling: bench/serve.py reports that distribution."""

    def one(i: int):
        return served.client.generate(wav(1.0 + i / 16, freq=200 + 50 * i), f"Question {i}?", max_tokens=16, seed=i)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(one, range(16)))
    assert len({r.request_id for r in replies}) == 16 and all(r.usage.total_tokens == 16 for r in replies)


def test_a_burst_over_the_queue_is_resource_exhausted(served):
    def one(i: int):
        try:
            served.client.generate(None, f"Count to {i}.", max_thinking_tokens=-1, max_tokens=400, **GREEDY)
            return "OK"
        except grpc.RpcError as e:
            assert "Traceback" not in e.details()
            return e.code().name

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(one, range(32)))
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes  # some admitted, the overflow refused at once
    wait_idle(served)
    assert served.client.generate(wav(), "Still there?", max_tokens=4).usage.total_tokens == 4


def test_ensemble_and_multiplexed_adapters(served):
    # sampled with one seed: the random tiny LLM's greedy text is blank whatever it hears, its samples are not
    one = served.client.generate(wav(), "What is it?", adapter_id="tiny", max_tokens=24, temperature=1.0, seed=7,
                                 return_reasoning=True)
    other = served.client.generate(wav(), "What is it?", adapter_id="tiny-b", max_tokens=24, temperature=1.0, seed=7,
                                   return_reasoning=True)
    assert one.usage.audio_tokens == other.usage.audio_tokens
    assert (one.reasoning, one.answer) != (other.reasoning, other.answer)  # another adapter, another hearing
    both = served.client.generate(wav(), "What is it?", ensemble=["tiny", "tiny-b"], max_tokens=24, **GREEDY)
    assert both.usage.audio_tokens == 2 * one.usage.audio_tokens
    assert both.usage.prompt_tokens > 2 * one.usage.audio_tokens


def test_text_only_equals_the_base_llm(served, tiny_qwen3):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alarm.llm.thinking import split_reasoning

    prompt, system = "Tell me about rain.", served.cfg.model.system_prompt
    reply = served.client.generate(None, prompt, max_thinking_tokens=-1, max_tokens=32, return_reasoning=True,
                                   **GREEDY)
    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3))
    llm = AutoModelForCausalLM.from_pretrained(str(tiny_qwen3), dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                                   tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    stop = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    with torch.no_grad():
        out = llm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False,
                           eos_token_id=stop, pad_token_id=stop[-1])
    new = out[0, ids.shape[1]:].tolist()
    reasoning, answer, _ = split_reasoning(tok.decode(new, skip_special_tokens=True))
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (ids.shape[1], len(new))
    assert (reply.reasoning, reply.answer) == (reasoning, answer)


def assert_same_as_in_process(client: AlarmClient, overrides: list[str]) -> None:
    """A greedy answer over gRPC equals the in-process pipeline's (services/serve/local.py) for the same config."""
    from alarm.client import make_request
    from services.serve.local import LocalPipeline

    kwargs = dict(return_reasoning=True, max_thinking_tokens=8, max_tokens=24, **GREEDY)
    remote = client.generate(wav(1.5, rate=44100, freq=500), "What is it?", **kwargs)
    cfg = load_config(ServeConfig, "tiny", [*overrides, "llm.backend=hf"], section="serve")

    async def local():
        pipe = await LocalPipeline.create(cfg)
        try:
            return await pipe.generate(make_request(wav(1.5, rate=44100, freq=500), "What is it?", **kwargs))
        finally:
            await pipe.aclose()

    mine = asyncio.run(local())
    assert (mine.reasoning, mine.answer, mine.usage) == (remote.reasoning, remote.answer, remote.usage)


def test_distributed_path_equals_the_in_process_pipeline(served):
    assert_same_as_in_process(served.client, OVERRIDES)


def scrape(done, timeout_s: float = 60.0) -> str:
    """The node's Prometheus text once `done(text)` holds, or the last scrape after timeout_s (Ray's metrics agent
    flushes every few seconds)."""
    import urllib.request

    import ray

    node = ray.nodes()[0]
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    t0, text = time.monotonic(), ""
    while time.monotonic() - t0 < timeout_s:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if done(text):
            break
        time.sleep(1)
    return text


def test_request_metrics_count_status_codes(served):
    """Serve's own metrics count a failed unary call as OK; ours carry the gRPC code."""
    with pytest.raises(grpc.RpcError):
        served.client.generate(wav(), " ")
    served.client.generate(wav(), "What is it?", max_tokens=2)
    text = scrape(lambda t: 'code="INVALID_ARGUMENT"' in t and 'code="OK"' in t)
    assert "alarm_requests" in text and 'code="INVALID_ARGUMENT"' in text and 'code="OK"' in text


def test_every_series_the_dashboard_queries_is_exported(served):
    """cluster/grafana/alarm.json queries nothing the server does not export: ours, vLLM's engine statistics (its
    Ray stat logger in the LLM replica) and Serve's, after a few requests (one per adapter, so the adapter cache
    sees a load), on the node's metrics endpoint."""
    from tests.unit.serve.test_metrics import dashboard_series

    for adapter in ("", "tiny-b", "tiny-b"):
        served.client.generate(wav(), "What is it?", max_tokens=4, adapter_id=adapter, **GREEDY)
    wanted = dashboard_series()

    def names(text: str) -> set[str]:
        return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}

    text = scrape(lambda t: wanted <= names(t) and 'result="miss"' in t and 'result="hit"' in t)
    assert not wanted - names(text), f"queried by the dashboard, not exported: {sorted(wanted - names(text))}"
    assert 'result="miss"' in text and 'result="hit"' in text  # tiny-b loaded once, then found in the LRU
