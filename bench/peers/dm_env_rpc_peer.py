"""NumberLine served and stepped through dm_env_rpc 1.1.7 (DeepMind's gRPC environment protocol).

    python bench/peers/dm_env_rpc_peer.py serve --ready-file PORT_FILE
    python bench/peers/dm_env_rpc_peer.py client --address 127.0.0.1:PORT --sessions 16

Runs in its own venv with ``dm-env-rpc==1.1.7`` (run.py makes it). Our code, written
against dm_env_rpc's public API (``dm_env_rpc_pb2_grpc.EnvironmentServicer``, tensor
and spec helpers, ``Connection``, ``DmEnvAdaptor``):

- Server: the gRPC ``Process`` stream, one per connection, as dm_env_rpc defines it:
  ``CreateWorld`` makes a NumberLine world, ``JoinWorld`` attaches this stream to it
  (join setting ``encoding``: ``"raw"`` or ``"png"``), ``Step`` steps it. dm_env_rpc
  has no image encoding of its own: a raw frame is a uint8 tensor of shape
  [300, 300, 3]; a PNG frame is a uint8 tensor of shape [-1] holding the PNG file,
  encoded in the environment the way a user of dm_env_rpc would do it. After an
  episode ends the next ``StepRequest`` starts a new one (dm_env_rpc's rule; its actions
  are ignored), so a reset is one round trip, as in visact.
- Client: ``DmEnvAdaptor`` (dm_env's ``step``), one connection per session; and for
  N sessions also a pipelined variant that writes the N ``StepRequest`` s on their N
  streams before reading any answer (dm_env_rpc's ``StreamReaderWriter``), the fastest
  way one client thread can drive N streams.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from dm_env_rpc.v1 import (
    connection,
    dm_env_adaptor,
    dm_env_rpc_pb2,
    dm_env_rpc_pb2_grpc,
    message_utils,
    spec_manager,
    tensor_utils,
)
from google.rpc import code_pb2, status_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's env_server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness
import harness

from visact.env_server.games.numberline import NumberLine

S = harness.IMAGE_SIDE
ACTION, IMAGE, REWARD, TASK, LEGAL, TRUNCATED = 1, 1, 2, 3, 4, 5
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _specs(encoding: str) -> dm_env_rpc_pb2.ActionObservationSpecs:
    dt = dm_env_rpc_pb2.DataType
    image = (
        dm_env_rpc_pb2.TensorSpec(name="image", shape=[S, S, 3], dtype=dt.UINT8)
        if encoding == "raw"
        else dm_env_rpc_pb2.TensorSpec(name="image_png", shape=[-1], dtype=dt.UINT8)
    )
    return dm_env_rpc_pb2.ActionObservationSpecs(
        actions={ACTION: dm_env_rpc_pb2.TensorSpec(name="action", dtype=dt.STRING)},
        observations={
            IMAGE: image,
            REWARD: dm_env_rpc_pb2.TensorSpec(name="reward", dtype=dt.DOUBLE),
            TASK: dm_env_rpc_pb2.TensorSpec(name="task", dtype=dt.STRING),
            LEGAL: dm_env_rpc_pb2.TensorSpec(name="legal_actions", shape=[-1], dtype=dt.STRING),
            TRUNCATED: dm_env_rpc_pb2.TensorSpec(name="truncated", dtype=dt.BOOL),
        },
    )


# ---------------------------------------------------------------------------------- server
class _Connection:
    """What one Process stream has joined: its world's game and the image encoding."""

    def __init__(self) -> None:
        self.game: NumberLine | None = None
        self.encoding = "raw"
        self.running = False  # False: the next StepRequest starts an episode
        self.seed = 0


class NumberLineServicer(dm_env_rpc_pb2_grpc.EnvironmentServicer):
    def __init__(self) -> None:
        self._worlds: dict[str, NumberLine] = {}
        self._lock = threading.Lock()

    def Process(
        self, request_iterator: Iterator[dm_env_rpc_pb2.EnvironmentRequest], context: grpc.ServicerContext
    ) -> Iterator[dm_env_rpc_pb2.EnvironmentResponse]:
        conn = _Connection()
        for request in request_iterator:
            response = dm_env_rpc_pb2.EnvironmentResponse()
            try:
                self._handle(conn, request, response)
            except Exception as exc:  # dm_env_rpc reports errors in-band
                response = dm_env_rpc_pb2.EnvironmentResponse(
                    error=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=repr(exc))
                )
            yield response

    def _handle(
        self,
        conn: _Connection,
        request: dm_env_rpc_pb2.EnvironmentRequest,
        response: dm_env_rpc_pb2.EnvironmentResponse,
    ) -> None:
        kind = request.WhichOneof("payload")
        if kind == "step":
            self._step(conn, request.step, response.step)
        elif kind == "create_world":
            name = uuid.uuid4().hex
            with self._lock:
                self._worlds[name] = NumberLine()
            response.create_world.world_name = name
        elif kind == "join_world":
            with self._lock:
                conn.game = self._worlds[request.join_world.world_name]
            settings = request.join_world.settings
            if "encoding" in settings:
                conn.encoding = str(tensor_utils.unpack_tensor(settings["encoding"]))
            if conn.encoding not in ("raw", "png"):
                raise ValueError(f"encoding must be 'raw' or 'png', got {conn.encoding!r}")
            if "seed" in settings:
                conn.seed = int(tensor_utils.unpack_tensor(settings["seed"]))
            conn.running = False
            response.join_world.specs.CopyFrom(_specs(conn.encoding))
        elif kind == "reset":
            conn.running = False
            response.reset.specs.CopyFrom(_specs(conn.encoding))
        elif kind == "leave_world":
            conn.game, conn.running = None, False
            response.leave_world.SetInParent()
        elif kind == "destroy_world":
            with self._lock:
                self._worlds.pop(request.destroy_world.world_name, None)
            response.destroy_world.SetInParent()
        else:
            raise ValueError(f"unsupported request {kind!r}")

    def _step(
        self, conn: _Connection, request: dm_env_rpc_pb2.StepRequest, out: dm_env_rpc_pb2.StepResponse
    ) -> None:
        game = conn.game
        if game is None:
            raise ValueError("join a world before stepping")
        reward, truncated = 0.0, False
        if not conn.running:  # start a sequence; this step's actions are ignored
            conn.seed += 1
            game.reset(seed=conn.seed)
            conn.running = True
            out.state = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
        else:
            action = str(tensor_utils.unpack_tensor(request.actions[ACTION]))
            if action not in game.legal_actions():
                raise ValueError(f"action {action!r} is not legal now")
            outcome = game.step(action)
            reward, truncated = outcome.reward, outcome.truncated
            if outcome.terminated or outcome.truncated:
                conn.running = False
                out.state = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED
            else:
                out.state = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
        for uid in request.requested_observations:
            if uid == IMAGE:
                frame = game.render()
                if conn.encoding == "png":
                    frame = np.frombuffer(harness.png_encode(frame), dtype=np.uint8)
                out.observations[uid].CopyFrom(tensor_utils.pack_tensor(frame))
            elif uid == REWARD:
                out.observations[uid].CopyFrom(tensor_utils.pack_tensor(reward, dtype=np.float64))
            elif uid == TASK:
                out.observations[uid].CopyFrom(tensor_utils.pack_tensor(game.task_text()))
            elif uid == LEGAL:
                out.observations[uid].CopyFrom(tensor_utils.pack_tensor(list(game.legal_actions())))
            elif uid == TRUNCATED:
                out.observations[uid].CopyFrom(tensor_utils.pack_tensor(truncated))
            else:
                raise ValueError(f"unknown observation uid {uid}")


def serve(ready_file: Path, workers: int) -> None:
    # Each Process stream holds a worker thread for its whole life: size the pool for the
    # sessions the benchmark opens (every configuration keeps its connections).
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS)
    dm_env_rpc_pb2_grpc.add_EnvironmentServicer_to_server(NumberLineServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready_file.write_text(f"{port}\n")
    server.wait_for_termination()


# ---------------------------------------------------------------------------------- client
def _image(observations: dict[str, Any], encoding: str) -> np.ndarray:
    if encoding == "png":
        return harness.png_decode(observations["image_png"].tobytes())
    return observations["image"]


def _join_settings(encoding: str, seed: int) -> dict[str, Any]:
    return {"encoding": encoding, "seed": seed}


class AdaptorSession:
    """One session through dm_env_rpc's own client: ``DmEnvAdaptor`` (a ``dm_env.Environment``)."""

    def __init__(self, channel: grpc.Channel, encoding: str, seed: int) -> None:
        self.encoding = encoding
        self.env, _world = dm_env_adaptor.create_and_join_world(
            connection.Connection(channel), {}, _join_settings(encoding, seed)
        )
        self.ended = True

    def _legal(self, timestep: Any) -> Sequence[str]:
        assert _image(timestep.observation, self.encoding).shape == (S, S, 3)
        return [str(a) for a in timestep.observation["legal_actions"]]

    def reset(self) -> Sequence[str]:
        # dm_env: a step after a LAST time step starts the next episode (one round trip;
        # env.reset() takes two, a ResetRequest and then such a step).
        timestep = self.env.step({"action": ""}) if self.ended else self.env.reset()
        assert timestep.first()
        self.ended = False
        return self._legal(timestep)

    def step(self, action: str) -> tuple[Sequence[str], bool]:
        timestep = self.env.step({"action": action})
        self.ended = timestep.last()
        return self._legal(timestep), self.ended


class PipelinedStream:
    """One session on its own Process stream, driven with dm_env_rpc's ``StreamReaderWriter``
    so that a request can be written before the answer to another stream's is read."""

    def __init__(self, channel: grpc.Channel, encoding: str, seed: int) -> None:
        self.encoding = encoding
        self.stream = connection.StreamReaderWriter(dm_env_rpc_pb2_grpc.EnvironmentStub(channel))
        world = self._call(dm_env_rpc_pb2.CreateWorldRequest()).world_name
        settings = {k: tensor_utils.pack_tensor(v) for k, v in _join_settings(encoding, seed).items()}
        specs = self._call(dm_env_rpc_pb2.JoinWorldRequest(world_name=world, settings=settings)).specs
        self.actions = spec_manager.SpecManager(specs.actions)
        self.observations = spec_manager.SpecManager(specs.observations)
        self.requested = sorted(specs.observations)

    def _call(self, request: Any) -> Any:
        self.write(request)
        return self.read()

    def write(self, request: Any) -> None:
        environment_request, self._field = message_utils.pack_environment_request(request)
        self.stream.write(environment_request)

    def read(self) -> Any:
        return message_utils.unpack_environment_response(self.stream.read(), self._field)

    def send_step(self, action: str) -> None:
        self.write(
            dm_env_rpc_pb2.StepRequest(
                requested_observations=self.requested, actions=self.actions.pack({"action": action})
            )
        )

    def receive_step(self) -> tuple[Sequence[str], bool]:
        response = self.read()
        observations = self.observations.unpack(response.observations)
        assert _image(observations, self.encoding).shape == (S, S, 3)
        done = response.state == dm_env_rpc_pb2.EnvironmentStateType.TERMINATED
        return [str(a) for a in observations["legal_actions"]], done


def pipelined(channel: grpc.Channel, encoding: str, n: int) -> harness.Runner:
    """N sessions: write the N step requests, then read the N answers; then the same for the
    sessions whose episode ended (their next step starts a new one)."""
    sessions = [PipelinedStream(channel, encoding, 1000 * i) for i in range(n)]
    rng = np.random.default_rng(0)
    legal: list[Sequence[str]] = []

    def run(seconds: float) -> int:
        if not legal:  # first run: start an episode everywhere; later runs go on where they were
            for s in sessions:
                s.send_step("")
            legal.extend(s.receive_step()[0] for s in sessions)
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            for i, s in enumerate(sessions):
                s.send_step(legal[i][int(rng.integers(len(legal[i])))])
            ended = []
            for i, s in enumerate(sessions):
                legal[i], done = s.receive_step()
                if done:
                    ended.append(i)
            steps += n
            for i in ended:
                sessions[i].send_step("")
            for i in ended:
                legal[i] = sessions[i].receive_step()[0]
        return steps

    return run


def client(address: str, n: int) -> None:
    channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=60)
    configs: dict[str, harness.Runner] = {}
    for encoding in ("raw", "png"):
        configs[f"dm_env_rpc_1_{encoding}"] = harness.one_session(AdaptorSession(channel, encoding, 0))
        configs[f"dm_env_rpc_{n}_{encoding}_in_turn"] = harness.sessions_in_turn(
            [AdaptorSession(channel, encoding, 1000 * i) for i in range(n)]
        )
        configs[f"dm_env_rpc_{n}_{encoding}_pipelined"] = pipelined(channel, encoding, n)
    harness.serve_commands(configs, channel.close)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--ready-file", type=Path, required=True)
    s.add_argument("--workers", type=int, default=128)
    c = sub.add_parser("client")
    c.add_argument("--address", required=True)
    c.add_argument("--sessions", type=int, default=16)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.ready_file, args.workers)
    else:
        client(args.address, args.sessions)


if __name__ == "__main__":
    main()
