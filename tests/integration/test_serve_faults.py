"""The serving path under overload and replica loss, on its own Serve application (ports 8102/9102): a flood past
the queue limits, the LLM replica killed (readiness, in-flight and new calls), the ingress replica killed. Every
loop is bounded; statuses are asserted, times only as generous bounds (the measured ones go to bench/soak.py's
notes)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import grpc
import pytest

from alarm.client import AlarmClient
from alarm.config import ServeConfig, load_config
from services.serve.status import REPLICA_RESTARTING

HTTP_PORT, GRPC_PORT = 8102, 9102
LLM_SLOTS, LLM_QUEUE = 4, 4  # the LLM takes 4 at once and queues 4 per caller: 8 places in all
OVERRIDES = ["model.llm.checkpoint=tiny://qwen3", "llm.max_model_len=2048", "llm.max_num_seqs=4",
             f"deployments.llm.max_ongoing_requests={LLM_SLOTS}", f"deployments.llm.max_queued_requests={LLM_QUEUE}",
             "request_timeout_s=20", "limits.replica_wait_s=0.5",
             "deployments.colocate=true"]  # the replicas killed here (llm, ingress) are in every layout; 3 start faster than 7
LONG = dict(max_thinking_tokens=-1, max_tokens=1900, temperature=0.0)  # minutes on this CPU: never finishes


@pytest.fixture(scope="module")
def served(ray_cluster):
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from services.serve.app import GRPC_SERVICERS, build_app

    cfg = load_config(ServeConfig, "tiny", OVERRIDES, section="serve")
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT},
                grpc_options=gRPCOptions(port=GRPC_PORT, grpc_servicer_functions=GRPC_SERVICERS,
                                         request_timeout_s=cfg.request_timeout_s))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=False)
    client = AlarmClient(f"127.0.0.1:{GRPC_PORT}", timeout_s=120)
    wait_serving(client, 600)
    yield SimpleNamespace(cfg=cfg, client=client, llm=serve.get_deployment_handle("llm", app_name=cfg.name))
    client.close()
    serve.shutdown()


def wait_serving(client: AlarmClient, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if client.health(timeout_s=5) == "SERVING":
                return time.monotonic() - t0
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not SERVING after {timeout_s} s")


def wait_engine(served, busy: bool, timeout_s: float) -> None:
    """Until the LLM engine holds a request (busy) or none (idle)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if (served.llm.num_unfinished.remote().result() > 0) == busy:
            return
        time.sleep(0.2)
    pytest.fail(f"the engine did not become {'busy' if busy else 'idle'} within {timeout_s} s")


def replica_pid(deployment: str) -> int:
    """The process id of the deployment's (only) replica, asked of the replica actor itself."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::alarm#{deployment}#")]
    pids = []
    for name in names:
        try:
            actor = ray.get_actor(name, namespace="serve")
            pids.append(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30))
        except Exception:  # a replica being replaced
            continue
    assert len(pids) == 1, f"{deployment}: {names} -> {pids}"
    return pids[0]


def call(client: AlarmClient, prompt: str, timeout_s: float = 120, **kw) -> tuple[str, str, float]:
    """(status code name, details, seconds) of one unary call."""
    t0 = time.monotonic()
    try:
        client.generate(None, prompt, timeout_s=timeout_s, **kw)
        return "OK", "", time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code().name, e.details() or "", time.monotonic() - t0


def test_a_flood_past_the_queue_limits_is_refused_at_once_and_the_rest_times_out_on_the_server(served):
    with ThreadPoolExecutor(160) as pool:
        out = list(pool.map(lambda i: call(served.client, f"Count to {i}.", **LONG), range(160)))
    counts = Counter(code for code, _, _ in out)
    slowest = max((t for c, _, t in out if c == "RESOURCE_EXHAUSTED"), default=0)
    print(f"flood of 160: {dict(counts)}; slowest refusal {slowest:.1f} s")
    # admitted: ended on the server's timeout, or finished if the model stopped early (greedy text can end at once)
    assert set(counts) <= {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "OK"}, counts
    places = LLM_SLOTS + LLM_QUEUE
    assert counts["RESOURCE_EXHAUSTED"] >= 160 - 2 * places, counts  # Serve's admission may let a few more in
    # what was admitted ended on the server's request_timeout_s (20 s), long before the client's 120 s deadline
    assert all(t < 100 for c, _, t in out if c == "DEADLINE_EXCEEDED")
    assert all("queues are full" in d for c, d, _ in out if c == "RESOURCE_EXHAUSTED")
    wait_engine(served, busy=False, timeout_s=30)  # the timed-out requests were aborted in the engine


def test_a_dead_llm_replica_turns_readiness_off_and_new_calls_fail_fast(served):
    with ThreadPoolExecutor(4) as pool:
        inflight = [pool.submit(call, served.client, f"Count to {i}.", **LONG) for i in range(3)]
        wait_engine(served, busy=True, timeout_s=60)
        os.kill(replica_pid("llm"), signal.SIGKILL)
        t0, status = time.monotonic(), "SERVING"
        while status == "SERVING" and time.monotonic() - t0 < 30:
            status = served.client.health(timeout_s=5)
            time.sleep(0.1)
        not_serving_s = time.monotonic() - t0
        code, details, took = call(served.client, "Hello?", max_tokens=4)
        results = [f.result() for f in inflight]
    print(f"NOT_SERVING {not_serving_s:.1f} s after the kill; a new call failed in {took:.1f} s")
    assert status == "NOT_SERVING" and not_serving_s < 15  # health_check_period_s is 1 s
    assert code == "UNAVAILABLE" and "llm has no running replica" in details and took < 10, (code, details, took)
    assert [c for c, _, _ in results] == ["UNAVAILABLE"] * 3, results
    assert all(REPLICA_RESTARTING in d for _, d, _ in results)
    wait_serving(served.client, 300)
    assert call(served.client, "Back?", max_tokens=4)[0] == "OK"


def test_a_dead_ingress_replica_is_unavailable_to_its_calls(served):
    with ThreadPoolExecutor(4) as pool:
        inflight = [pool.submit(call, served.client, f"Count to {i}.", **LONG) for i in range(3)]
        wait_engine(served, busy=True, timeout_s=60)
        os.kill(replica_pid("ingress"), signal.SIGKILL)
        results = [f.result() for f in inflight]
    assert [c for c, _, _ in results] == ["UNAVAILABLE"] * 3, results
    for _, details, _ in results:
        assert details.startswith(REPLICA_RESTARTING) and "actor_id" not in details and "class_name" not in details
    wait_serving(served.client, 300)
    assert call(served.client, "Back?", max_tokens=4)[0] == "OK"
    wait_engine(served, busy=False, timeout_s=60)  # the calls' engine requests end with the server timeout
