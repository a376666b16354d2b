"""One handler per RPC method: the bearer token, then request bytes, then the servicer.

A servicer answers with a message, or with the message's wire bytes when it built them itself.

Each method gets the same checks, in this order: the bearer token (health is exempt, so that
load balancers and probes, which send no metadata, can check liveness), then request bytes that
do not parse (INVALID_ARGUMENT naming the expected message, not grpc's INTERNAL "Exception
deserializing request!").
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from visact.rpc.messages import bounded


class _Undecodable:
    """Stands for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """``context.abort`` with a bounded message (visact.rpc.messages says why)."""
    await context.abort(code, bounded(message))
    raise AssertionError("unreachable: context.abort raises")


def _token_check(token: str | None) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]] | None:
    if token is None:
        return None
    if not token:
        raise ValueError("an empty token would accept anyone; pass a non-empty token")
    expected = f"Bearer {token}".encode()

    async def check(context: grpc.aio.ServicerContext) -> None:
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else given
        if not hmac.compare_digest(given_bytes, expected):
            reason = "no 'authorization' metadata" if not given else "a wrong token"
            await abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"this server requires a bearer token and the call carried {reason}; "
                "pass the server's token (e.g. --token or $VISACT_TOKEN)",
            )

    return check


def handler(
    method: MethodDescriptor, behavior: Callable[..., Any], token: str | None
) -> grpc.RpcMethodHandler:
    """``behavior`` (a coroutine function, or an async generator function for a streaming response)
    behind the token check and a deserializer that never raises."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    check_token = _token_check(token)
    full_name = f"/{method.containing_service.full_name}/{method.name}"

    def deserialize(data: bytes) -> Any:
        try:
            return request_class.FromString(data)
        except Exception as exc:  # protobuf raises DecodeError, and others on odd input
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    async def refuse(request: _Undecodable, context: grpc.aio.ServicerContext) -> NoReturn:
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request bytes of {full_name} do not parse as {method.input_type.full_name} ({request.error}); "
            "send a serialized message of that type, built with stubs generated from the .proto",
        )

    async def admitted(request: Any, context: grpc.aio.ServicerContext) -> None:
        if check_token is not None:
            await check_token(context)
        if isinstance(request, _Undecodable):
            await refuse(request, context)

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await refuse(request, context)
            yield request

    def serialize(response: Any) -> bytes:
        # a servicer may answer with the response's wire bytes, built without a message's copies
        # (the env server's BatchStep splices raw frames in: visact.env_server.wire_bytes)
        return response if isinstance(response, bytes) else response_class.SerializeToString(response)

    kwargs = {"request_deserializer": deserialize, "response_serializer": serialize}
    if not method.client_streaming and not method.server_streaming:

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admitted(request, context)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if not method.client_streaming:
        if not inspect.isasyncgenfunction(behavior):  # it writes with context.write (grpc's health)

            async def unary_write(request: Any, context: grpc.aio.ServicerContext) -> None:
                await admitted(request, context)
                await behavior(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_write, **kwargs)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admitted(request, context)
            async for response in behavior(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    if not method.server_streaming:

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await admitted(None, context)
            return await behavior(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

    async def stream_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await admitted(None, context)
        async for response in behavior(checked(requests, context), context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
