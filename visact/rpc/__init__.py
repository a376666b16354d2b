"""Every visact gRPC server and channel is built here (layer 1: no game, no model).

- ``server``: a grpc.aio server with its services, health (exempt from the token, Watch streams
  bounded) and reflection; ``Listen`` says where and how; ``StreamSlots`` bounds a kind of stream.
- ``handlers``: every method's checks: the bearer token, then undecodable request bytes.
- ``workers``: the threads CPU work runs on, off the event loop (quick work stays on it).
- ``loop``: the process's one event loop and ``run_async`` for synchronous code.
- ``channels``: ``dial`` / ``dial_async`` with the same limits and keepalive; ``RETRYABLE``.
- ``auth``: TLS credentials and the token's metadata; ``messages``: status messages that always
  reach the client.
"""

from visact.rpc.auth import channel_credentials, server_credentials, token_metadata
from visact.rpc.channels import RETRYABLE, Dial, dial, dial_async
from visact.rpc.handlers import abort
from visact.rpc.loop import event_loop, run_async
from visact.rpc.server import (
    DEFAULT_MAX_WATCHERS,
    Health,
    HealthServicer,
    Listen,
    Server,
    Service,
    StreamSlots,
    server_options,
)
from visact.rpc.workers import Workers

__all__ = [
    "DEFAULT_MAX_WATCHERS",
    "RETRYABLE",
    "Dial",
    "Health",
    "HealthServicer",
    "Listen",
    "Server",
    "Service",
    "StreamSlots",
    "Workers",
    "abort",
    "channel_credentials",
    "dial",
    "dial_async",
    "event_loop",
    "run_async",
    "server_credentials",
    "server_options",
    "token_metadata",
]
