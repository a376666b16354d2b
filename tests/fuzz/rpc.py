"""Helpers of the fuzz tests: raw-byte calls to any method of a service, and the codes allowed."""

from __future__ import annotations

import os
from typing import Any

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: What a server may answer to anything a client sends: never INTERNAL, UNKNOWN, UNAVAILABLE...
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

#: hypothesis settings for calls over real gRPC; VISACT_FUZZ_EXAMPLES scales every test up for
#: a longer local run (e.g. VISACT_FUZZ_EXAMPLES=10 for ten times the examples)
SCALE = float(os.environ.get("VISACT_FUZZ_EXAMPLES", "1"))


def fuzz_settings(examples: int, **kwargs: Any) -> Any:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        **kwargs,
    )


def raw_call(
    channel: grpc.Channel,
    method: Any,
    data: bytes,
    *,
    timeout: float = 10.0,
    metadata: tuple[tuple[str, str], ...] = (),
    responses: int = 1,
) -> tuple[grpc.StatusCode, list[bytes]]:
    """Call ``method`` (a MethodDescriptor) with ``data`` as the request bytes (the only request
    of a client stream); returns the status code and the response bytes. Server streams are
    read for at most ``responses`` messages, then cancelled (status OK)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = (
        ("stream" if method.client_streaming else "unary")
        + "_"
        + ("stream" if method.server_streaming else "unary")
    )
    callable_ = getattr(channel, kind)(path)
    request: Any = iter([data]) if method.client_streaming else data
    try:
        if not method.server_streaming:
            return grpc.StatusCode.OK, [callable_(request, timeout=timeout, metadata=metadata)]
        call = callable_(request, timeout=timeout, metadata=metadata)
        out = []
        for message in call:
            out.append(message)
            if len(out) >= responses:
                call.cancel()
                break
        return grpc.StatusCode.OK, out
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:  # cancelled by us after `responses`
            return grpc.StatusCode.OK, []
        return exc.code(), []


def parses(message_type: Any, data: bytes) -> bool:
    try:
        message_type.FromString(data)
    except Exception:
        return False
    return True


def odd_text(max_size: int = 64) -> st.SearchStrategy[str]:
    """Text with odd unicode: controls, NUL, combining marks, RTL marks, emoji, wide characters."""
    specials = st.sampled_from(
        [
            "\x00",
            "\u202e",
            "\u200b",
            "\ufeff",
            "\u0301",
            "e\u0301",
            "\U0001f600",
            "ﷺ",
            "𝔸",
            "\r\n",
            " +",
            "+ ",
        ]
    )
    return st.one_of(
        st.text(max_size=max_size),
        st.lists(st.one_of(specials, st.text(max_size=3)), max_size=8).map("".join),
    )


def huge_text() -> st.SearchStrategy[str]:
    """Long strings (up to ~200 KB), well under a 1 MiB message limit."""
    return st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "+", "é", "\U0001f600"]), st.integers(10_000, 50_000)
    )


def json_values(finite: bool = False) -> st.SearchStrategy[Any]:
    """Anything a google.protobuf.Struct holds, NaN and infinities included unless ``finite``."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=not finite, allow_infinity=not finite),
        st.integers(-(2**53), 2**53),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    )
