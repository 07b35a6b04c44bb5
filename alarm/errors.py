"""The error hierarchy: every failure a user can cause or meet has one class here.

Messages say what was expected, what was found, and how to fix it. Serving maps these classes to gRPC status
codes in one table; batch jobs turn the per-item ones (InvalidInput subclasses) into row flags.
"""

from __future__ import annotations


class AlarmError(Exception):
    """Base class of every error raised on purpose by this project."""


class InvalidInput(AlarmError):
    """Input from outside (audio, request, corpus row) that can never succeed as given."""


class AudioError(InvalidInput):
    """Audio that cannot be used. `reason` is a short machine-readable tag for flags and metrics."""

    reason: str = "audio"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class AudioDecodeError(AudioError):
    reason = "undecodable"


class EmptyAudioError(AudioError):
    reason = "empty"


class NonFiniteAudioError(AudioError):
    reason = "non_finite"


class AudioTooLongError(AudioError):
    reason = "too_long"


class ConfigError(AlarmError, ValueError):
    """A configuration, preset or command-line override that does not validate."""


class CheckpointError(AlarmError):
    """A checkpoint that cannot be found or fetched."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that exists but does not match what the config expects (shapes, keys, sizes)."""


class Overloaded(AlarmError):
    """Recoverable: queues are full; retry later."""


class Unavailable(AlarmError):
    """Recoverable: part of the service has no running replica now (restarting, starting); retry."""


class EngineDead(AlarmError):
    """Not recoverable in this process: the engine must be restarted."""


class ContextOverflow(AlarmError):
    """The prompt plus the requested new tokens do not fit the engine's context length (gRPC RESOURCE_EXHAUSTED:
    the request is valid, this deployment cannot hold it)."""


class RequestTooLarge(AlarmError):
    """A request over the server's size limit (gRPC RESOURCE_EXHAUSTED)."""


class Unauthenticated(AlarmError):
    """The server requires a bearer token and the request carried none or a wrong one (gRPC UNAUTHENTICATED, HTTP
    401)."""
