"""NumberLine served and stepped through OpenEnv (openenv-core 0.3.0: FastAPI + WebSocket, JSON).

    python bench/peers/openenv_peer.py serve --ready-file PORT_FILE [--no-deflate]
    python bench/peers/openenv_peer.py client --address 127.0.0.1:PORT --sessions 16 --label openenv

Runs in its own venv with ``openenv-core==0.3.0`` (run.py makes it). Our code, written
against OpenEnv's public API:

- Server: an ``Environment`` subclass around our NumberLine with pydantic ``Action`` and
  ``Observation`` models, served by ``create_app`` (its FastAPI app: a WebSocket session
  per connection, the game stepped in the session's executor thread) under uvicorn,
  OpenEnv's server. Observations are JSON, so the image travels as a base64 string:
  raw RGB bytes, or a PNG file encoded in the environment the way a user of OpenEnv would
  (OpenEnv has no binary field and no image encoding of its own; its Atari example sends
  a list of ints, which is slower still). The encoding is a reset keyword (``encoding``).
- ``--no-deflate`` turns off uvicorn's WebSocket permessage-deflate (``ws_per_message_deflate``);
  by default it is on and OpenEnv's client (the ``websockets`` library) asks for it.
- Client: OpenEnv's ``EnvClient`` (async, one WebSocket per session) in one asyncio loop;
  for N sessions stepped in turn (one await after another) and concurrently
  (``asyncio.gather`` over the N sessions, the way to drive many sessions at once with it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from openenv.core import EnvClient
from openenv.core.client_types import StepResult
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's env_server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness
import harness

from visact.env_server.games.numberline import NumberLine

S = harness.IMAGE_SIDE


class NumberLineAction(Action):
    action: str


class NumberLineObservation(Observation):
    image: str = ""  # base64 of the raw RGB bytes or of a PNG file
    image_encoding: str = "raw"
    image_shape: list[int] = Field(default_factory=lambda: [S, S, 3])
    task: str = ""
    legal_actions: list[str] = Field(default_factory=list)
    truncated: bool = False


class NumberLineEnvironment(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True  # each session has its own game instance

    def __init__(self) -> None:
        super().__init__()
        self.game = NumberLine()
        self.encoding = "raw"
        self._state = State(step_count=0)

    def _observe(self, reward: float, done: bool, truncated: bool = False) -> NumberLineObservation:
        frame = self.game.render()
        data = harness.png_encode(frame) if self.encoding == "png" else frame.tobytes()
        return NumberLineObservation(
            image=base64.b64encode(data).decode("ascii"),
            image_encoding=self.encoding,
            task=self.game.task_text(),
            legal_actions=list(self.game.legal_actions()),
            reward=reward,
            done=done,
            truncated=truncated,
        )

    def reset(
        self, seed: int | None = None, episode_id: str | None = None, encoding: str | None = None, **_: Any
    ) -> NumberLineObservation:
        if encoding is not None:
            if encoding not in ("raw", "png"):
                raise ValueError(f"encoding must be 'raw' or 'png', got {encoding!r}")
            self.encoding = encoding
        self.game.reset(seed=seed)
        self._state = State(episode_id=episode_id, step_count=0)
        return self._observe(0.0, False)

    def step(self, action: Action, timeout_s: float | None = None, **_: Any) -> NumberLineObservation:
        assert isinstance(action, NumberLineAction)
        if action.action not in self.game.legal_actions():
            raise ValueError(f"action {action.action!r} is not legal now")
        outcome = self.game.step(action.action)
        self._state.step_count += 1
        return self._observe(outcome.reward, outcome.terminated or outcome.truncated, outcome.truncated)

    @property
    def state(self) -> State:
        return self._state


def serve(ready_file: Path, deflate: bool) -> None:
    app = create_app(
        NumberLineEnvironment,
        NumberLineAction,
        NumberLineObservation,
        env_name="numberline",
        max_concurrent_envs=256,  # every configuration keeps its sessions open
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", ws_per_message_deflate=deflate)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.02)
        ready_file.write_text(f"{sock.getsockname()[1]}\n")

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


# ---------------------------------------------------------------------------------- client
class NumberLineClient(EnvClient[NumberLineAction, NumberLineObservation, State]):
    """OpenEnv's client for our models; decodes the image to a numpy array, as an agent needs."""

    def _step_payload(self, action: NumberLineAction) -> dict[str, Any]:
        return {"action": action.action}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[NumberLineObservation]:
        fields = payload.get("observation", {})
        observation = NumberLineObservation(
            **fields, done=payload.get("done", False), reward=payload.get("reward")
        )
        data = base64.b64decode(observation.image)
        if observation.image_encoding == "png":
            image = harness.png_decode(data)
        else:
            image = np.frombuffer(data, dtype=np.uint8).reshape(observation.image_shape)
        assert image.shape == (S, S, 3)
        return StepResult(observation=observation, reward=observation.reward, done=observation.done)

    def _parse_state(self, payload: dict[str, Any]) -> State:
        return State(**payload)


class Loop:
    """An asyncio loop running in its own thread for the worker's life, so that WebSocket
    keepalive pings are answered between measurements too (a loop that only runs while
    measuring lets uvicorn close idle connections after its 20 s ping timeout)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="openenv-loop", daemon=True).start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class OpenEnvSession:
    def __init__(self, loop: Loop, url: str, encoding: str, seed: int) -> None:
        self.loop, self.encoding, self.seed = loop, encoding, seed
        self.client = NumberLineClient(base_url=url)
        loop.run(self.client.connect())

    async def areset(self) -> Sequence[str]:
        self.seed += 1
        result = await self.client.reset(seed=self.seed, encoding=self.encoding)
        return result.observation.legal_actions

    async def astep(self, action: str) -> tuple[Sequence[str], bool]:
        result = await self.client.step(NumberLineAction(action=action))
        return result.observation.legal_actions, result.done


def one_session_async(session: OpenEnvSession) -> harness.Runner:
    """One session, the loop written with await (one thread hop per measurement, none per step)."""
    rng = np.random.default_rng(0)

    async def go(seconds: float) -> int:
        legal = await session.areset()
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            legal, done = await session.astep(legal[int(rng.integers(len(legal)))])
            steps += 1
            if done:
                legal = await session.areset()
        return steps

    return lambda seconds: session.loop.run(go(seconds))


def in_turn_async(sessions: Sequence[OpenEnvSession]) -> harness.Runner:
    """N sessions, one await after another."""
    rng = np.random.default_rng(0)
    loop = sessions[0].loop

    async def go(seconds: float) -> int:
        legal = [await s.areset() for s in sessions]
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            for i, s in enumerate(sessions):
                legal[i], done = await s.astep(legal[i][int(rng.integers(len(legal[i])))])
                if done:
                    legal[i] = await s.areset()
            steps += len(sessions)
        return steps

    return lambda seconds: loop.run(go(seconds))


def concurrent(sessions: Sequence[OpenEnvSession]) -> harness.Runner:
    """N sessions stepped at once with asyncio.gather; then the ended ones reset at once."""
    rng = np.random.default_rng(0)
    loop = sessions[0].loop

    async def go(seconds: float) -> int:
        legal = list(await asyncio.gather(*(s.areset() for s in sessions)))
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            results = await asyncio.gather(
                *(s.astep(legal[i][int(rng.integers(len(legal[i])))]) for i, s in enumerate(sessions))
            )
            ended = []
            for i, (actions, done) in enumerate(results):
                legal[i] = actions
                if done:
                    ended.append(i)
            steps += len(sessions)
            if ended:
                fresh = await asyncio.gather(*(sessions[i].areset() for i in ended))
                for i, actions in zip(ended, fresh, strict=True):
                    legal[i] = actions
        return steps

    return lambda seconds: loop.run(go(seconds))


def client(address: str, n: int, label: str) -> None:
    loop = Loop()
    url = f"http://{address}"
    configs: dict[str, harness.Runner] = {}
    sessions: list[OpenEnvSession] = []
    for encoding in ("raw", "png"):
        one = OpenEnvSession(loop, url, encoding, 0)
        many = [OpenEnvSession(loop, url, encoding, 1000 * i) for i in range(n)]
        sessions += [one, *many]
        configs[f"{label}_1_{encoding}"] = one_session_async(one)
        configs[f"{label}_{n}_{encoding}_in_turn"] = in_turn_async(many)
        configs[f"{label}_{n}_{encoding}_concurrent"] = concurrent(many)

    def close() -> None:
        for s in sessions:
            loop.run(s.client.close())

    harness.serve_commands(configs, close)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--ready-file", type=Path, required=True)
    s.add_argument("--no-deflate", action="store_true", help="WebSocket compression off")
    c = sub.add_parser("client")
    c.add_argument("--address", required=True)
    c.add_argument("--sessions", type=int, default=16)
    c.add_argument("--label", default="openenv")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.ready_file, deflate=not args.no_deflate)
    else:
        client(args.address, args.sessions, args.label)


if __name__ == "__main__":
    main()
