"""What runs in Serve's gRPC proxy (services/serve/proxy.py): request parsing that never raises, the lost-replica
shim and the log filter, each checked against the installed Ray so a Ray upgrade that moves what they rely on
fails here first."""

from __future__ import annotations

import asyncio
import logging
from unittest.mock import Mock

import grpc
import pytest

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.proxy import ClientErrorFilter, add_alarm_service, install_proxy_shims, parser
from services.serve.status import REPLICA_RESTARTING
from services.serve.validate import Undecodable

GOOD = pb.GenerateRequest(prompt="hi", request_id="r1").SerializeToString()
BAD_UTF8 = GOOD.replace(b"hi", b"\xff\xfe")
CORRUPT = b"\x1a\xff\xff"


def test_bytes_that_do_not_parse_become_undecodable():
    parse = parser(pb.GenerateRequest)
    assert parse(GOOD) == pb.GenerateRequest(prompt="hi", request_id="r1")
    bad, corrupt = parse(BAD_UTF8), parse(CORRUPT)
    assert isinstance(bad, Undecodable) and "bad UTF-8" in bad.message and "alarm.v1.GenerateRequest" in bad.message
    assert isinstance(corrupt, Undecodable) and "corrupt" in corrupt.message
    assert "DecodeError" not in bad.message + corrupt.message and "<class" not in bad.message


def test_serves_proxy_keeps_our_parser_for_every_method():
    """Serve replaces each handler's behaviour with its own but keeps the request deserializer: the shim's basis."""
    from ray.serve._private.grpc_util import gRPCGenericServer

    async def register():
        server = gRPCGenericServer(lambda service_method, streaming_type: Mock())
        add_alarm_service(Mock(), server)
        return {k: v for handlers in server.generic_rpc_handlers for k, v in handlers[0]._method_handlers.items()}

    handlers = asyncio.run(register())
    methods = {f"/alarm.v1.AlarmService/{m.name}" for m in pb.DESCRIPTOR.services_by_name["AlarmService"].methods}
    assert set(handlers) == methods
    takes_text = {f"/alarm.v1.AlarmService/{m.name}" for m in pb.DESCRIPTOR.services_by_name["AlarmService"].methods
                  if m.input_type.name == "GenerateRequest"}  # ListModelsRequest has no field 3: unknown, kept
    assert takes_text
    for name, h in handlers.items():
        if name in takes_text:
            assert isinstance(h.request_deserializer(BAD_UTF8), Undecodable)
        else:
            assert not isinstance(h.request_deserializer(b""), Undecodable)
        assert h.response_serializer is None  # Serve's override: replicas send serialized bytes


def test_a_lost_replica_is_unavailable_and_the_rest_is_serves_answer(monkeypatch):
    from ray.exceptions import ActorDiedError
    from ray.serve._private import proxy

    assert "get_grpc_response_status" in proxy.gRPCProxy.send_request_to_replica.__wrapped__.__code__.co_names
    monkeypatch.setattr(proxy, "get_grpc_response_status", proxy.get_grpc_response_status)
    install_proxy_shims()
    install_proxy_shims()  # idempotent: one wrapper
    status = proxy.get_grpc_response_status
    assert status.alarm_shim and not getattr(status.__closure__[0].cell_contents, "alarm_shim", False)
    lost = status(ActorDiedError(), 600.0, "rid-3")
    assert lost.code == grpc.StatusCode.UNAVAILABLE and lost.is_error
    assert lost.message == f"{REPLICA_RESTARTING} [request_id=rid-3]"
    from ray.serve.exceptions import BackPressureError

    full = status(BackPressureError(num_queued_requests=64, max_queued_requests=64), 600.0, "rid-5")
    assert full.code == grpc.StatusCode.RESOURCE_EXHAUSTED and full.message.startswith("the server's queues are full")
    timeout = status(TimeoutError(), 600.0, "rid-4")
    assert timeout.code == grpc.StatusCode.DEADLINE_EXCEEDED and "600" in timeout.message


def test_client_errors_leave_no_traceback_in_serves_log(caplog):
    """Serve logs a status the replica set (gRPCStatusError) with its traceback; the filter keeps only INTERNAL."""
    from ray.serve._private.grpc_util import get_grpc_response_status
    from ray.serve.exceptions import gRPCStatusError

    logger = logging.getLogger("ray.serve")  # does not propagate: catch its records where they are logged
    logger.addFilter(f := ClientErrorFilter())
    logger.addHandler(caplog.handler)
    try:
        for code, kept in ((grpc.StatusCode.INVALID_ARGUMENT, False), (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
                           (grpc.StatusCode.INTERNAL, True)):
            caplog.clear()
            try:
                raise gRPCStatusError(RuntimeError("stream failed"), code=code, details="prompt is empty")
            except gRPCStatusError as e:
                with caplog.at_level(logging.INFO, logger="ray.serve"):
                    status = get_grpc_response_status(e, None, "rid")
            assert status.code == code and status.message == "prompt is empty"
            assert any(r.exc_info for r in caplog.records) == kept, code
    finally:
        logger.removeFilter(f)
        logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("exc, kept", [(RuntimeError("boom"), True), (None, True)])
def test_the_filter_keeps_everything_else(exc, kept):
    record = logging.LogRecord("ray.serve", logging.ERROR, __file__, 1, "Request failed.", None,
                               (type(exc), exc, None) if exc else None)
    assert ClientErrorFilter().filter(record) == kept
