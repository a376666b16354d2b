"""The environment side's typed errors, each mapped once to a gRPC status code.

Games and the servicer raise these; ``visact.env_server.service`` turns them into
status codes (unary calls) or ``Error`` items (batched calls). Every message
says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import grpc


class EnvError(Exception):
    """Base of every error the environment side reports to a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidAction(EnvError):
    """The action string is not one the environment accepts now."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidRequest(EnvError):
    """A malformed request: missing field, unknown option, unsupported encoding..."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownSession(EnvError):
    """No session with this id (never created, closed, or reaped when idle)."""

    code = grpc.StatusCode.NOT_FOUND


class ResetNeeded(EnvError):
    """A step before the first reset, or after the episode ended."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ServerFull(EnvError):
    """The server holds its maximum number of sessions."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
