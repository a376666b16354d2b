"""Requests whose bytes do not parse get INVALID_ARGUMENT, not INTERNAL.

grpc-python answers INTERNAL ("Exception deserializing request!") when a request's bytes are not
a valid message of the method's type (e.g. invalid UTF-8 in a string field, a truncated field,
a nesting deeper than protobuf allows). That is the client's mistake, so every visact server
installs :class:`DecodeGuardInterceptor`: its handlers deserialize without raising and refuse an
undecodable request with INVALID_ARGUMENT before the servicer sees it. Put it after the token
interceptor, so that a call without the token is UNAUTHENTICATED whatever its bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from visact.status import abort


class _Undecodable:
    """Stands for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class DecodeGuardInterceptor(grpc.ServerInterceptor):
    """Answers INVALID_ARGUMENT, naming the expected message type, to requests that do not parse."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[Any, Any]] = {}  # method -> (its handler, the guarded one)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        cached = self._guarded.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = _guard(handler, handler_call_details.method)
        self._guarded[handler_call_details.method] = (handler, guarded)
        return guarded


def _guard(handler: Any, method: str) -> Any:
    """``handler`` with a deserializer that never raises and a check that refuses what did not parse."""
    deserialize = handler.request_deserializer
    owner = getattr(deserialize, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "the method's request message")

    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf raises DecodeError, and others on odd input
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    def refuse(request: _Undecodable, context: grpc.ServicerContext) -> None:
        abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request bytes of {method} do not parse as {type_name} ({request.error}); "
            "send a serialized message of that type, built with stubs generated from the .proto",
        )

    kwargs = {"request_deserializer": guarded, "response_serializer": handler.response_serializer}
    if handler.request_streaming:
        behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary

        def streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            def checked() -> Iterator[Any]:
                for request in requests:
                    if isinstance(request, _Undecodable):
                        refuse(request, context)
                    yield request

            return behavior(checked(), context)

        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
        return grpc.stream_unary_rpc_method_handler(streaming, **kwargs)

    behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            refuse(request, context)
        return behavior(request, context)

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
