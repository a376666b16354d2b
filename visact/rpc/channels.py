"""Every client channel of visact: the same message limits and keepalive as the servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from visact.rpc.auth import channel_credentials

#: the codes after which a call may be tried again (the server was away or slow, not wrong)
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@dataclass(frozen=True)
class Dial:
    """How a client reaches a server: TLS material and limits (every field optional)."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str | None = None
    max_message_bytes: int = 256 * 1024 * 1024
    keepalive_seconds: float = 30.0
    options: tuple[tuple[str, Any], ...] = field(default=())


def dial(address: str, how: Dial | None = None) -> grpc.Channel:
    """A channel to ``address`` with message limits that fit images, keepalive and reconnect backoff;
    TLS when a CA or a client certificate is given."""
    how = how or Dial()
    options = _channel_options(how)
    if how.tls_ca is not None or how.tls_cert is not None:
        credentials = channel_credentials(how.tls_ca, how.tls_cert, how.tls_key)
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


def dial_async(address: str, how: Dial | None = None, *, own_connection: bool = False) -> grpc.aio.Channel:
    """:func:`dial` for grpc.aio (call it on the loop); ``own_connection``: not shared with other
    channels to the same address (as separate processes would connect)."""
    how = how or Dial()
    options = _channel_options(how)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if how.tls_ca is not None or how.tls_cert is not None:
        credentials = channel_credentials(how.tls_ca, how.tls_cert, how.tls_key)
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=options)


def _channel_options(how: Dial) -> list[tuple[str, Any]]:
    options = [
        ("grpc.max_receive_message_length", how.max_message_bytes),
        ("grpc.max_send_message_length", how.max_message_bytes),
        ("grpc.keepalive_time_ms", int(how.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
        *how.options,
    ]
    if how.server_name:
        options.append(("grpc.ssl_target_name_override", how.server_name))
    return options
