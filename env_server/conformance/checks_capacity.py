"""Checks of capacity: streams an agent fleet holds open do not starve anyone's calls."""

from __future__ import annotations

import queue
from concurrent import futures
from typing import Any

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped, rpc_status

#: BatchStepStream calls held open at once: more than a thread-per-call server's usual pool
HELD_STREAMS = 64


def check_held_streams(ctx: Context) -> str:
    """With 64 BatchStepStream calls held open (one round trip each), Describe and a Reset are still answered."""
    if "batch_step_stream" not in ctx.spec.capabilities:
        raise CheckSkipped("the server does not declare the 'batch_step_stream' capability")
    held: list[tuple[queue.SimpleQueue[Any], Any]] = []
    # Held streams get no short deadline: one that expired would free its server thread.
    reader = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="conformance-held")
    try:
        for _ in range(HELD_STREAMS):
            requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
            requests.put(pb.BatchStepRequest())
            call = ctx.wire.stub.BatchStepStream(iter(requests.get, None), metadata=ctx.wire.metadata)
            held.append((requests, call))
            failure = ""
            try:
                reader.submit(next, call).result(timeout=ctx.wire.timeout)
            except futures.TimeoutError:
                failure = f"got no answer in {ctx.wire.timeout:g} s"
            except grpc.RpcError as exc:
                failure = f"failed with {rpc_status(exc)}"
            if failure:
                raise CheckFailed(
                    f"BatchStepStream {len(held)} {failure} while {len(held) - 1} others were held open; an agent "
                    "holds one stream per server for its whole run, so a server must hold many (a stream should "
                    "cost memory, not a worker thread)"
                )
        ctx.wire.call(
            "Describe", pb.DescribeRequest(), what=f"with {HELD_STREAMS} BatchStepStream calls open"
        )
        with ctx.session() as session_id:
            ctx.reset(session_id, ctx.seed(900))
    finally:
        for requests, call in held:
            requests.put(None)
            call.cancel()
        reader.shutdown(wait=True)
    return f"Describe, CreateSession and Reset answered with {HELD_STREAMS} BatchStepStream calls held open"
