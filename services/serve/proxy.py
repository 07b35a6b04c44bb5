"""What we add to Ray Serve's gRPC proxy: the AlarmService registration and two small shims, all installed by
`add_alarm_service`, the function `grpc_options.grpc_servicer_functions` names (the proxy calls it when it starts).

1. Requests whose bytes do not parse. Serve keeps the registration's request deserializer, so grpcio would parse in
   the proxy and answer UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>" before any of our code
   ran. Ours hands an `Undecodable` on instead; the ingress answers INVALID_ARGUMENT with the request id.
2. A lost ingress replica. When the replica holding a call dies, the proxy answers INTERNAL with Ray's actor-death
   text (Serve's `get_grpc_response_status` has no case for it). The shim answers UNAVAILABLE with the message every
   other lost replica gives (`status.REPLICA_RESTARTING`), so clients that retry UNAVAILABLE retry these too; and a
   full proxy queue answers RESOURCE_EXHAUSTED with the status table's message, not Serve's internal counters.
3. Log noise. Serve logs every failed stream at ERROR with a traceback, in the replica ("Request failed.") and in
   the proxy ("Request failed with user-set gRPC status code"), client mistakes included. `ClientErrorFilter`
   drops those records when the status the ingress set is not INTERNAL: the ingress has logged them as one line.

Shim 2 replaces `ray.serve._private.proxy.get_grpc_response_status`, a Ray internal; tests/unit/serve/test_proxy.py
fails when Ray moves or renames what it relies on.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.status import QUEUES_FULL, REPLICA_RESTARTING
from services.serve.validate import Undecodable

SERVE_LOGGER = "ray.serve"  # the logger Serve's replicas and proxies log to
HANDLERS = {  # (client streaming, server streaming) -> grpcio's handler constructor
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_alarm_service(servicer, server) -> None:
    """Register `alarm.v1.AlarmService` on `server` as the generated `add_AlarmServiceServicer_to_server` does (every
    method of the proto), with request parsing that never raises; in Serve's proxy, also install the shims."""
    service = pb.DESCRIPTOR.services_by_name["AlarmService"]
    handlers = {}
    for m in service.methods:
        make = HANDLERS[(m.client_streaming, m.server_streaming)]
        handlers[m.name] = make(getattr(servicer, m.name), request_deserializer=parser(getattr(pb, m.input_type.name)),
                                response_serializer=getattr(pb, m.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.63, as the generated code does
        server.add_registered_method_handlers(service.full_name, handlers)
    install_proxy_shims()


def parser(message_class):
    """bytes -> message, or Undecodable with a plain message (never an exception: grpcio would answer UNKNOWN)."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as e:
            reason = str(e).split(": ", 1)[-1]  # "Error parsing message with type '...': <reason>"
            return Undecodable(f"the request is not a valid {name} ({reason}); string fields must be UTF-8: "
                               "send it with stubs generated from protos/alarm/v1/alarm.proto")

    return parse


class ClientErrorFilter(logging.Filter):
    """Drops Serve's ERROR-with-traceback records of calls that failed with a status the ingress set and logged,
    unless that status is INTERNAL (whose traceback is the one worth keeping)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "grpc_code", None)
        return not (isinstance(code, grpc.StatusCode) and code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL))


def quiet_client_errors() -> None:
    """Install ClientErrorFilter on Serve's logger in this process (once)."""
    logger = logging.getLogger(SERVE_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())


def install_proxy_shims() -> None:
    """In a Serve proxy process: lost replicas -> UNAVAILABLE (shim 2) and quiet client errors (shim 3). Idempotent;
    outside a proxy (Serve not importable) only the filter is installed."""
    quiet_client_errors()
    try:
        from ray.serve._private import proxy
    except ImportError:
        return
    original = proxy.get_grpc_response_status
    if getattr(original, "alarm_shim", False):
        return
    proxy.get_grpc_response_status = our_statuses(original)


def our_statuses(original):
    """Wraps Serve's `get_grpc_response_status(exc, request_timeout_s, request_id)`: a replica that died under the
    call (RayActorError, ActorUnavailableError included) is UNAVAILABLE and a full proxy queue (BackPressureError)
    says what every full queue says, both with the status table's messages; everything else is Serve's answer."""
    from ray.exceptions import RayActorError
    from ray.serve._private.proxy_request_response import ResponseStatus
    from ray.serve.exceptions import BackPressureError

    def status(exc, request_timeout_s, request_id):
        if isinstance(exc, RayActorError):
            logging.getLogger(SERVE_LOGGER).warning("request %s: UNAVAILABLE: the ingress replica died under it",
                                                    request_id)
            return ResponseStatus(code=grpc.StatusCode.UNAVAILABLE, is_error=True,
                                  message=f"{REPLICA_RESTARTING} [request_id={request_id}]")
        if isinstance(exc, BackPressureError):
            return ResponseStatus(code=grpc.StatusCode.RESOURCE_EXHAUSTED, is_error=True,
                                  message=f"{QUEUES_FULL} [request_id={request_id}]")
        return original(exc, request_timeout_s, request_id)

    status.alarm_shim = True
    return status
