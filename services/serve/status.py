"""The status table: what went wrong -> one status code (gRPC's names, which HTTP APIs map too) and a message for
the client, and how the server logs it. Every protocol the server speaks answers failures through `status_of`.

    status = status_of(exc, request_id)      # Status("INVALID_ARGUMENT", "prompt is empty; ...")
    log_failure(log, status, request_id, exc) # client errors: one line; INTERNAL: the traceback

Never a stack trace or a server path in a message: the details of server-side failures go to the log only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from alarm.errors import (
    AlarmError,
    CheckpointError,
    ContextOverflow,
    EngineDead,
    InvalidInput,
    Overloaded,
    RequestTooLarge,
    Unauthenticated,
    Unavailable,
)
from services.errors import error_chain

# the message of every lost or missing replica, whichever deployment (services.serve.proxy uses it for the ingress)
REPLICA_RESTARTING = "a replica of this service is restarting; retry"
QUEUES_FULL = "the server's queues are full; retry with backoff"

RAY_BACKPRESSURE = {"BackPressureError", "MaxQueuedTokensError"}
# a lost object is a lost replica's result (its node's object store went with it): the request may be retried
RAY_REPLICA_LOST = {"DeploymentUnavailableError", "ActorDiedError", "ActorUnavailableError", "RayActorError",
                    "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError",
                    "ObjectReconstructionFailedMaxAttemptsExceededError",
                    "ObjectReconstructionFailedLineageEvictedError", "ObjectFetchTimedOutError"}
RAY_CANCELLED = {"RequestCancelledError", "TaskCancelledError"}

# how each code is logged: client errors and load are one line with the request id; INTERNAL has the traceback
LOG_LEVEL = {
    "INVALID_ARGUMENT": logging.INFO, "UNAUTHENTICATED": logging.INFO, "CANCELLED": logging.INFO, "DEADLINE_EXCEEDED": logging.INFO,
    "RESOURCE_EXHAUSTED": logging.WARNING, "UNAVAILABLE": logging.WARNING, "INTERNAL": logging.ERROR,
}

# the one map from the table's codes to HTTP (OpenAI-compatible API): 499 is the de-facto "client closed request"
HTTP_CODE = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504, "CANCELLED": 499, "INTERNAL": 500,
}
# a body over the size limit is 413, not 429: it is the request, not the load, that the client must change
TOO_LARGE = 413


@dataclass(frozen=True)
class Status:
    """A failure as the client sees it: a gRPC status code name and a plain message."""

    code: str
    message: str
    http: int = field(default=0, compare=False)  # the HTTP status of the same failure; 0 = HTTP_CODE[code]

    def __post_init__(self):
        if not self.http:
            object.__setattr__(self, "http", HTTP_CODE.get(self.code, 500))

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]


def status_of(exc: BaseException, request_id: str) -> Status:
    """The one table from a failure (ours, or Ray's wrapping of it) to the client's status and message."""
    chain = error_chain(exc)
    ours = next((e for e in chain if isinstance(e, AlarmError) and type(e).__module__.startswith("alarm")), None)
    if isinstance(ours, InvalidInput):
        return Status("INVALID_ARGUMENT", str(ours))
    if isinstance(ours, Unauthenticated):
        return Status("UNAUTHENTICATED", str(ours))
    if isinstance(ours, RequestTooLarge):
        return Status("RESOURCE_EXHAUSTED", str(ours), TOO_LARGE)
    if isinstance(ours, ContextOverflow | Overloaded):
        return Status("RESOURCE_EXHAUSTED", str(ours))
    if isinstance(ours, Unavailable):
        return Status("UNAVAILABLE", f"{ours}; retry")
    if isinstance(ours, EngineDead):
        return Status("UNAVAILABLE", f"{ours}; retry later or on another replica")
    if isinstance(ours, CheckpointError):
        return Status("UNAVAILABLE", "a model checkpoint failed to load on this server; retry later")
    kinds = {type(e).__name__ for e in chain}
    if kinds & RAY_BACKPRESSURE:
        return Status("RESOURCE_EXHAUSTED", QUEUES_FULL)
    if kinds & RAY_REPLICA_LOST:
        return Status("UNAVAILABLE", REPLICA_RESTARTING)
    if any(isinstance(e, TimeoutError) for e in chain):
        return Status("DEADLINE_EXCEEDED", "the server's request timeout passed; the engine request was aborted")
    if any(isinstance(e, asyncio.CancelledError) for e in chain) or kinds & RAY_CANCELLED:
        return Status("CANCELLED", "the request was cancelled; the engine request was aborted")
    return Status("INTERNAL", f"internal error while serving request {request_id}; details are in the server logs")


def grpc_status(exc: BaseException, request_id: str) -> tuple[grpc.StatusCode, str]:
    """`status_of` as (grpc.StatusCode, message)."""
    s = status_of(exc, request_id)
    return s.grpc_code, s.message


def log_failure(logger: logging.Logger, status: Status, request_id: str, exc: BaseException | None = None) -> None:
    """One line with the request id for what clients and load cause (INFO: their mistakes, cancels and deadlines;
    WARNING: full queues, replicas missing); ERROR with the traceback only for INTERNAL."""
    level = LOG_LEVEL.get(status.code, logging.WARNING)
    if status.code == "INTERNAL":
        logger.error("request %s failed: INTERNAL", request_id, exc_info=exc)
    else:
        logger.log(level, "request %s: %s: %s", request_id, status.code, status.message)
