"""AlarmClient(retries=N) against a real gRPC server on 127.0.0.1 that fails its first calls: UNAVAILABLE is
retried with backoff inside the call's deadline, other codes are not, and a stream is retried only while it has
yielded nothing."""

from __future__ import annotations

import threading
from concurrent import futures
from types import SimpleNamespace

import grpc
import pytest

from services.serve import retry
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc
from services.serve.client import AlarmClient


class Flaky(pb_grpc.AlarmServiceServicer):
    """Fails the first `fail` calls with `code`; a stream fails after `partial` messages."""

    def __init__(self, fail: int = 0, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, partial: int = 0):
        self.fail, self.code, self.partial = fail, code, partial
        self.calls = 0
        self.lock = threading.Lock()

    def _failing(self) -> bool:
        with self.lock:
            self.calls += 1
            return self.calls <= self.fail

    def Generate(self, request, context):
        if self._failing():
            context.abort(self.code, "replica lost")
        return pb.GenerateResponse(answer=f"ok after {self.calls}", request_id=request.request_id)

    def GenerateStream(self, request, context):
        failing = self._failing()
        for i in range(self.partial if failing else 2):
            yield pb.GenerateStreamResponse(answer_delta=f"part {i}")
        if failing:
            context.abort(self.code, "replica lost")
        yield pb.GenerateStreamResponse(final=pb.GenerateResponse(answer="done"))


@pytest.fixture
def serve():
    servers = []

    def start(servicer: Flaky) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_AlarmServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(None)


def client(target: str, retries: int, timeout_s: float = 10.0) -> AlarmClient:
    return AlarmClient(target, timeout_s=timeout_s, retries=retries, backoff_s=0.01)


def test_unavailable_is_retried_until_it_succeeds(serve):
    server = Flaky(fail=2)
    with client(serve(server), retries=3) as c:
        assert c.generate(None, "hi").answer == "ok after 3"
        response, call = c.generate_with_call(None, "hi")
        assert call.code() == grpc.StatusCode.OK and server.calls == 4


def test_without_retries_the_status_reaches_the_caller(serve):
    server = Flaky(fail=1)
    with client(serve(server), retries=0) as c, pytest.raises(grpc.RpcError) as e:
        c.generate(None, "hi")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and server.calls == 1


def test_the_last_error_is_raised_when_the_retries_run_out(serve):
    server = Flaky(fail=10)
    with client(serve(server), retries=2) as c, pytest.raises(grpc.RpcError) as e:
        c.generate(None, "hi")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and server.calls == 3


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.INTERNAL])
def test_other_codes_are_not_retried(serve, code):
    server = Flaky(fail=1, code=code)
    with client(serve(server), retries=3) as c, pytest.raises(grpc.RpcError) as e:
        c.generate(None, "hi")
    assert e.value.code() == code and server.calls == 1


def test_a_stream_that_yielded_nothing_is_retried(serve):
    server = Flaky(fail=1, partial=0)
    with client(serve(server), retries=2) as c:
        messages = list(c.stream(None, "hi"))
    assert [m.answer_delta for m in messages[:2]] == ["part 0", "part 1"] and messages[-1].final.answer == "done"
    assert server.calls == 2


def test_a_stream_that_yielded_output_is_not_retried(serve):
    server = Flaky(fail=1, partial=1)
    with client(serve(server), retries=3) as c:
        stream = c.stream(None, "hi")
        assert next(stream).answer_delta == "part 0"
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and server.calls == 1


def test_a_cancelled_stream_is_not_started_again(serve):
    server = Flaky()
    with client(serve(server), retries=3) as c:
        stream = c.stream(None, "hi")
        stream.cancel()
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
    assert e.value.code() == grpc.StatusCode.CANCELLED and server.calls <= 1


def test_retries_never_outlast_the_deadline(monkeypatch):
    """Every attempt fails at once with UNAVAILABLE: the pauses stop before the deadline, and every attempt gets
    time left. A fake clock, so that the check is of the logic, not of this machine's speed."""
    clock = [100.0]
    # the retry module's own clock only: patching time.monotonic itself would let any other thread's sleep move it
    monkeypatch.setattr(retry, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                       sleep=lambda s: clock.__setitem__(0, clock[0] + s)))
    attempts = []

    def call(left: float):
        attempts.append(left)
        clock[0] += min(0.01, left)  # the round trip; a real call is cut at its own deadline (`left`)
        raise _Unavailable()

    with pytest.raises(_Unavailable):
        retry.call_with_retries(call, 2.0, retry.Backoff(retries=1000, base_s=0.05, max_s=0.2))
    assert 5 < len(attempts) < 1000 and all(left > 0 for left in attempts)
    assert clock[0] <= 100.0 + 2.0  # gave up by the deadline


def test_a_pause_that_overruns_the_deadline_ends_the_retries(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(retry, "time", SimpleNamespace(  # a stalled machine
        monotonic=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + 10)))
    attempts = []

    def call(left: float):
        attempts.append(left)
        raise _Unavailable()

    with pytest.raises(_Unavailable):
        retry.call_with_retries(call, 1.0, retry.Backoff(retries=5, base_s=0.1))
    assert attempts == [1.0]  # never called again with no time left


def test_the_pauses_grow_and_stay_under_the_cap():
    b = retry.Backoff(retries=10, base_s=0.1, max_s=1.0)
    assert [b.pause(n, rng=lambda: 1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.pause(3, rng=lambda: 0.0) == 0.0  # full jitter: anywhere from no pause to the cap


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_the_command_retries_when_asked(serve, tmp_path, capsys):
    import alarm.client as cli

    server = Flaky(fail=1)
    target = serve(server)
    assert cli.main(["--prompt", "hi", "--target", target, "--retries", "2", "--timeout", "20"]) == 0
    assert capsys.readouterr().out == "part 0part 1\n" and server.calls == 2
    server.calls = 0  # without --retries the status reaches the user
    assert cli.main(["--prompt", "hi", "--target", target]) == 1
    assert "error: UNAVAILABLE: replica lost" in capsys.readouterr().err and server.calls == 1
