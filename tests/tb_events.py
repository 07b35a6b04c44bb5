"""Reads TensorBoard event files as the viewer does (TFRecord framing, Event protos, and the purge a
SessionLog.START at step s makes: earlier events at steps >= s are dropped), for tests."""

from __future__ import annotations

import struct
from pathlib import Path


def read_events(logdir: str | Path) -> list:
    """Every Event proto of every events.out.tfevents.* file under `logdir`, files in name order."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            end = pos + 12 + length + 4
            if end > len(data):
                break  # a record still being written
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            events.append(event)
            pos = end
    return events


def scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] after the viewer's purge, in the order written."""
    from tensorboardX.proto import event_pb2

    points: list[tuple[str, int, float]] = []
    for event in read_events(logdir):
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            points = [p for p in points if p[1] < event.step]
        for value in event.summary.value:
            points.append((value.tag, event.step, value.simple_value))
    out: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in points:
        out.setdefault(tag, []).append((step, value))
    return out
