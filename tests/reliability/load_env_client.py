"""A load client of one env server, run as its own process by the load test:

    python -m tests.reliability.load_env_client --server 127.0.0.1:PORT --sessions 64 \
        --threads 16 --seconds 20 --opened opened.txt --out latencies.json

Opens ``--sessions`` sessions (and says so in ``--opened``), then ``--threads`` threads play them
(each its share, round robin: a Step with a legal action, a Reset when the episode ends) for
``--seconds``. The sessions are left open on purpose: the server must reap them when idle.
Writes per-method latencies (ms), the number of calls, every failure, and the session ids.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--opened", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="load")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.server, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.EnvironmentStub(channel)
    latencies: dict[str, list[float]] = {"CreateSession": [], "Reset": [], "Step": []}
    errors: list[str] = []
    lock = threading.Lock()

    def timed(method: str, call: object, request: object) -> object:
        started = time.perf_counter()
        try:
            return call(request, timeout=30)  # type: ignore[operator]
        except grpc.RpcError as exc:
            with lock:
                errors.append(f"{method}: {exc.code().name} {exc.details()}")
            return None
        finally:
            with lock:
                latencies[method].append((time.perf_counter() - started) * 1000)

    sessions = []
    for n in range(args.sessions):
        response = timed(
            "CreateSession", stub.CreateSession, pb.CreateSessionRequest(client_label=f"{args.label}-{n}")
        )
        if response is not None:
            sessions.append(response.session_id)  # type: ignore[attr-defined]
    args.opened.write_text(f"{len(sessions)}\n")

    deadline = time.monotonic() + args.seconds

    def play(mine: list[str], seed: int) -> None:
        legal: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            for session_id in mine:
                if session_id not in legal:
                    reset = timed("Reset", stub.Reset, pb.ResetRequest(session_id=session_id, seed=seed))
                    seed += 1
                    if reset is None:
                        return
                    legal[session_id] = list(reset.observation.legal_actions)  # type: ignore[attr-defined]
                    continue
                actions = legal[session_id]
                step = timed(
                    "Step",
                    stub.Step,
                    pb.StepRequest(session_id=session_id, action=actions[seed % len(actions)]),
                )
                seed += 1
                if step is None:
                    return
                if step.terminated or step.truncated:  # type: ignore[attr-defined]
                    del legal[session_id]
                else:
                    legal[session_id] = list(step.observation.legal_actions)  # type: ignore[attr-defined]

    threads = [
        threading.Thread(target=play, args=(sessions[i :: args.threads], i * 1_000_000))
        for i in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    args.out.write_text(json.dumps({"latencies_ms": latencies, "errors": errors, "sessions": sessions}))
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
