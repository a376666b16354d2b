"""Raw calls to a server under test: generated stubs, a deadline on every call, no client library.

A check raises :class:`CheckFailed`, :class:`CheckSkipped` or :class:`CheckWarning`
with a reason; any call that should succeed and does not becomes a CheckFailed
that names the method, the status code and the server's message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from visact import rpc
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc
from visact.rpc.auth import token_metadata

Metadata = tuple[tuple[str, str], ...]


class CheckFailed(Exception):
    """The server does not do what the protocol says; the message says what was expected and what came."""


class CheckSkipped(Exception):
    """The check does not apply to this server; the message says why."""


class CheckWarning(Exception):
    """Not a failure, but worth a look; the message says what is suspicious."""


@dataclass(frozen=True)
class Status:
    """A call's final status."""

    code: grpc.StatusCode
    details: str

    def __str__(self) -> str:
        return f"{self.code.name} ({self.details!r})" if self.details else f"{self.code.name} (no message)"


OK = Status(grpc.StatusCode.OK, "")


class Wire:
    """One channel to the server under test and the Environment stub on it."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.metadata: Metadata = token_metadata(token)
        self.channel = rpc.dial(address, rpc.Dial(tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key))
        self.stub = pb_grpc.EnvironmentStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def wait_connected(self, timeout: float) -> bool:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def attempt(self, method: str, request: Any, *, metadata: Metadata | None = None) -> tuple[Any, Status]:
        """Call ``method``; returns (response, OK) or (None, the error status). Never raises RpcError."""
        call = getattr(self.stub, method)
        try:
            response = call(
                request, timeout=self.timeout, metadata=self.metadata if metadata is None else metadata
            )
        except grpc.RpcError as exc:
            return None, rpc_status(exc)
        return response, OK

    def call(self, method: str, request: Any, *, what: str = "") -> Any:
        """Call ``method`` and return its response; CheckFailed if it did not succeed."""
        response, status = self.attempt(method, request)
        if status.code is not grpc.StatusCode.OK:
            context = f" ({what})" if what else ""
            raise CheckFailed(f"{method}{context} failed with {status}{self._hint(status)}; expected OK")
        return response

    def expect_error(self, method: str, request: Any, code: grpc.StatusCode, *, what: str) -> Status:
        """Call ``method`` and require it to fail with ``code`` and a non-empty message."""
        response, status = self.attempt(method, request)
        if status.code is grpc.StatusCode.OK:
            if method == "CreateSession":
                self.attempt("CloseSession", pb.CloseSessionRequest(session_id=response.session_id))
            raise CheckFailed(f"{method} {what}: expected {code.name}, got OK")
        if status.code is not code:
            raise CheckFailed(f"{method} {what}: expected {code.name}, got {status}")
        if not status.details.strip():
            raise CheckFailed(
                f"{method} {what}: got {code.name} with an empty message; "
                "expected a message that says what was expected and what came"
            )
        return status

    def _hint(self, status: Status) -> str:
        if status.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return f" after the {self.timeout:g} s deadline (the server did not answer in time)"
        if status.code is grpc.StatusCode.UNAUTHENTICATED and not self.metadata:
            return "; the server wants a token: pass --token"
        return ""


def rpc_status(exc: grpc.RpcError) -> Status:
    """The status of a failed call (a grpc.RpcError is also a grpc.Call)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return Status(code, details or "")


def unknown_session_id() -> str:
    """A session id no server has handed out."""
    return f"conformance-unknown-{secrets.token_hex(8)}"


def invalid_action() -> str:
    """A random string with non-ASCII characters that no vocabulary holds."""
    return f"\u2603 conformance \u00e9\u00df\u4e2d {secrets.token_hex(4)} \U0001f3b2"
