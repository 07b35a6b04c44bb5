"""The status table: every failure -> one status code and a plain message; how each code is logged."""

from __future__ import annotations

import asyncio
import logging

import grpc

from alarm.errors import (
    CheckpointError,
    ContextOverflow,
    EngineDead,
    InvalidInput,
    Overloaded,
    RequestTooLarge,
    Unavailable,
)
from services.serve.status import LOG_LEVEL, REPLICA_RESTARTING, Status, grpc_status, log_failure, status_of


def test_status_table():
    C = grpc.StatusCode
    cases = [
        (InvalidInput("bad audio"), C.INVALID_ARGUMENT, "bad audio"),
        (ContextOverflow("too long"), C.RESOURCE_EXHAUSTED, "too long"),
        (Overloaded("queue full"), C.RESOURCE_EXHAUSTED, "queue full"),
        (EngineDead("dead"), C.UNAVAILABLE, "dead"),
        (RequestTooLarge("over the limit"), C.RESOURCE_EXHAUSTED, "over the limit"),
        (asyncio.CancelledError(), C.CANCELLED, "cancelled"),
        (TimeoutError("request r passed the server's 600 s"), C.DEADLINE_EXCEEDED, "request timeout passed"),
    ]
    for exc, code, needle in cases:
        got, msg = grpc_status(exc, "rid")
        assert got == code and needle in msg, (exc, got, msg)
    code, msg = grpc_status(RuntimeError("secret internals at /srv/x.py line 3"), "rid-9")
    assert code == C.INTERNAL and "secret" not in msg and "rid-9" in msg
    code, msg = grpc_status(CheckpointError("s3://private-bucket/x is missing"), "r")
    assert code == C.UNAVAILABLE and "private-bucket" not in msg  # server paths stay in the log


def test_status_of_errors_wrapped_by_ray():
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    try:
        raise InvalidInput("prompt is empty")
    except InvalidInput as cause:
        wrapped = RayTaskError("fn", "Traceback (most recent call last): ...", cause).as_instanceof_cause()
    code, msg = grpc_status(wrapped, "r")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg == "prompt is empty"
    code, _ = grpc_status(BackPressureError(num_queued_requests=9, max_queued_requests=8), "r")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_lost_replicas_and_missing_deployments_are_unavailable():
    from ray.exceptions import ActorDiedError

    assert status_of(ActorDiedError(), "r") == Status("UNAVAILABLE", REPLICA_RESTARTING)
    # a result awaited by the ingress whose replica's node was lost, with it
    from ray.exceptions import ObjectLostError, OwnerDiedError

    assert status_of(ObjectLostError("ab" * 14, "", ""), "r") == Status("UNAVAILABLE", REPLICA_RESTARTING)
    assert status_of(OwnerDiedError("ab" * 14, "", ""), "r").code == "UNAVAILABLE"
    s = status_of(Unavailable("llm has no running replica (restarting)"), "r")
    assert s.code == "UNAVAILABLE" and s.message.startswith("llm has no running replica") and "retry" in s.message


def test_client_errors_log_one_line_and_only_internal_a_traceback(caplog):
    log = logging.getLogger("test.status")
    cases = [(InvalidInput("prompt is empty"), logging.INFO), (Overloaded("queue full"), logging.WARNING),
             (Unavailable("llm has no running replica"), logging.WARNING),
             (asyncio.CancelledError(), logging.INFO), (RuntimeError("boom"), logging.ERROR)]
    for exc, level in cases:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="test.status"):
            try:
                raise exc
            except BaseException as e:
                log_failure(log, status_of(e, "rid-7"), "rid-7", e)
        [record] = caplog.records
        assert record.levelno == level and "rid-7" in record.getMessage(), (exc, record.levelname)
        assert (record.exc_info is not None) == (level == logging.ERROR), exc
        assert "\n" not in record.getMessage()


def test_every_code_has_one_http_status():
    from alarm.errors import Unauthenticated
    from services.serve.status import HTTP_CODE

    cases = [(InvalidInput("x"), 400), (Unauthenticated("x"), 401), (RequestTooLarge("x"), 413),
             (Overloaded("x"), 429), (ContextOverflow("x"), 429), (Unavailable("x"), 503), (TimeoutError(), 504),
             (asyncio.CancelledError(), 499), (RuntimeError("x"), 500)]
    for exc, http in cases:
        s = status_of(exc, "r")
        assert s.http == http and HTTP_CODE[s.code] in (http, 429), (exc, s)
    assert status_of(Unauthenticated("no token"), "r").grpc_code == grpc.StatusCode.UNAUTHENTICATED
    assert set(HTTP_CODE) == set(LOG_LEVEL)  # every code the table gives has an HTTP status and a log level
