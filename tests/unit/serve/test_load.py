"""The load generator (services.serve.load) against a real gRPC server on 127.0.0.1 that can be taken down: every
request ends OK or with a status and is counted, the bounds hold, the clients follow the ramp, and the population
that retries UNAVAILABLE loses fewer requests to an outage than the one that does not."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc
from services.serve.load import Load


class Switch(pb_grpc.AlarmServiceServicer):
    """Answers after 5 ms while `up`, else UNAVAILABLE at once (a replica lost); counts the clients at once."""

    def __init__(self):
        self.up, self.calls, self.inflight, self.most = True, 0, 0, 0
        self.lock = threading.Lock()

    def Generate(self, request, context):
        with self.lock:
            self.calls += 1
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        try:
            if not self.up:
                context.abort(grpc.StatusCode.UNAVAILABLE, "a replica of this service is restarting; retry")
            time.sleep(0.005)
            return pb.GenerateResponse(answer="ok")
        finally:
            with self.lock:
                self.inflight -= 1


@pytest.fixture
def server():
    servicer = Switch()
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_AlarmServiceServicer_to_server(servicer, s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    servicer.target = f"127.0.0.1:{port}"
    yield servicer
    s.stop(None)


def wait(until, timeout_s: float = 10.0) -> None:
    t0 = time.monotonic()
    while not until():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        time.sleep(0.01)


def test_only_loopback_is_a_target():
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        Load("10.0.0.1:9000", max_clients=1, max_requests=1, max_s=1)


def test_every_request_is_counted_and_the_count_bound_holds(server):
    with Load(server.target, max_clients=4, max_requests=60, max_s=30, timeout_s=5) as load:
        time.sleep(0.2)
        assert load.sent == 0  # no client is on yet
        load.clients = 4
        wait(lambda: load.sent >= 60)
    assert load.sent == len(load.outcomes) == server.calls == 60
    assert load.counts() == {"OK": 60} and load.errors() == {}
    assert all(o.code == "OK" and o.end >= o.start for o in load.outcomes)
    assert server.most <= 4


def test_the_clients_follow_the_ramp(server):
    with Load(server.target, max_clients=6, max_requests=10_000, max_s=30, timeout_s=5) as load:
        load.clients = 2
        time.sleep(0.3)
        at_two = server.most
        load.clients = 6
        wait(lambda: server.most == 6)
        load.clients = 0
        time.sleep(0.2)
        sent = load.sent
        time.sleep(0.2)
        assert load.sent == sent  # nobody sends at zero clients
    assert at_two <= 2 and load.rate(60) > 0 and load.latency(0.5, 60) > 0


def test_retries_lose_fewer_requests_to_an_outage(server):
    with Load(server.target, max_clients=4, max_requests=20_000, max_s=30, retries=4, timeout_s=20) as load:
        load.clients = 4
        wait(lambda: load.sent >= 20)
        server.up = False
        time.sleep(0.5)
        server.up = True
        ok = load.sent
        wait(lambda: load.sent >= ok + 20)  # every client is back
    counts = load.counts()
    assert load.sent == len(load.outcomes)
    assert set(counts) <= {"OK", "UNAVAILABLE", "OK, retries=4", "UNAVAILABLE, retries=4"}, counts
    assert counts.get("UNAVAILABLE", 0) > counts.get("UNAVAILABLE, retries=4", 0), counts
    assert load.errors() == {k: v for k, v in counts.items() if k.startswith("UNAVAILABLE")}


def test_the_time_bound_holds(server):
    with Load(server.target, max_clients=2, max_requests=1_000_000, max_s=0.5, timeout_s=5) as load:
        load.clients = 2
        time.sleep(1.0)
        sent = load.sent
        time.sleep(0.3)
    assert sent == load.sent == len(load.outcomes) > 0  # nothing sent past max_s, every request counted
