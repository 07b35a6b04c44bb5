"""The light gRPC client of an ALARM server (grpcio + protobuf only): `AlarmClient`, `make_request`, and the
`alarm-client` command (`alarm_client.cli`)."""

from alarm_client._proto.alarm.v1 import alarm_pb2 as pb
from alarm_client.client import DEFAULT_TARGET, AlarmClient, make_request

__all__ = ["DEFAULT_TARGET", "AlarmClient", "make_request", "pb"]
