"""Checks around the Environment service: health and reflection (recommended), the bearer token."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.wire import (
    CheckFailed,
    CheckSkipped,
    Metadata,
    Status,
    invalid_action,
    rpc_status,
    unknown_session_id,
)

ENVIRONMENT_SERVICE = pb.DESCRIPTOR.services_by_name["Environment"].full_name
# v1 and v1alpha reflection share one message layout; a server may offer either.
REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


def check_health(ctx: Context) -> str:
    """grpc.health.v1 Check of the whole server ("") answers SERVING."""
    stub = health_pb2_grpc.HealthStub(ctx.wire.channel)
    request = health_pb2.HealthCheckRequest(service="")
    try:
        response = stub.Check(request, timeout=ctx.wire.timeout, metadata=ctx.wire.metadata)
    except grpc.RpcError as exc:
        status = rpc_status(exc)
        if status.code is grpc.StatusCode.UNIMPLEMENTED:
            raise CheckSkipped("the server does not implement grpc.health.v1.Health") from None
        raise CheckFailed(f"grpc.health.v1 Check('') got {status}; expected SERVING") from None
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise CheckFailed(f"grpc.health.v1 Check('') answered {state}; expected SERVING")
    return "grpc.health.v1 Check('') is SERVING"


def check_reflection(ctx: Context) -> str:
    """Server reflection lists the Environment service (so grpcurl can call it)."""
    statuses = []
    for method in REFLECTION_METHODS:
        response, status = _list_services(ctx, method)
        if response is None:
            statuses.append(status)
            continue
        if response.HasField("error_response"):
            raise CheckFailed(f"{method} answered with an error: {response.error_response.error_message!r}")
        names = [s.name for s in response.list_services_response.service]
        if ENVIRONMENT_SERVICE not in names:
            raise CheckFailed(f"reflection lists {names}; expected {ENVIRONMENT_SERVICE!r} among them")
        return f"{method.split('/')[1]} lists {ENVIRONMENT_SERVICE}"
    if all(s.code is grpc.StatusCode.UNIMPLEMENTED for s in statuses):
        raise CheckSkipped("the server implements neither grpc.reflection.v1 nor v1alpha")
    raise CheckFailed(
        f"server reflection failed: {', '.join(str(s) for s in statuses)}; expected a service list"
    )


def _list_services(ctx: Context, method: str) -> tuple[Any, Status]:
    call = ctx.wire.channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        responses = call(iter([request]), timeout=ctx.wire.timeout, metadata=ctx.wire.metadata)
        return next(iter(responses)), Status(grpc.StatusCode.OK, "")
    except grpc.RpcError as exc:
        return None, rpc_status(exc)
    except StopIteration:
        return None, Status(grpc.StatusCode.UNKNOWN, "the reflection stream ended without a response")


def check_token(ctx: Context) -> str:
    """With --token: calls without it or with a wrong one are UNAUTHENTICATED, before any other error."""
    token = ctx.options.token
    if not token:
        raise CheckSkipped(
            "no --token given; pass the server's token to check that calls without it are refused"
        )
    cases: list[tuple[str, Metadata]] = [
        ("without a token", ()),
        ("with a wrong token", (("authorization", f"Bearer {token}-wrong"),)),
    ]
    calls: list[tuple[str, Any]] = [
        ("Describe", pb.DescribeRequest()),
        ("CreateSession", pb.CreateSessionRequest()),
        (
            "Step of an unknown session",
            pb.StepRequest(session_id=unknown_session_id(), action=invalid_action()),
        ),
    ]
    for what, metadata in cases:
        for call, request in calls:
            method = call.split()[0]
            response, status = ctx.wire.attempt(method, request, metadata=metadata)
            if response is not None and method == "CreateSession":
                ctx.close_quietly(response.session_id)
            if status.code is not grpc.StatusCode.UNAUTHENTICATED:
                raise CheckFailed(f"{call} {what} got {status}; expected UNAUTHENTICATED")
            if not status.details.strip():
                raise CheckFailed(
                    f"{call} {what} got UNAUTHENTICATED with an empty message; expected a reason"
                )
    return (
        "Describe, CreateSession and Step of an unknown session, without the token or with a wrong one, "
        "got UNAUTHENTICATED"
    )
