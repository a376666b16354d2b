"""Any Gymnasium env served through the adapter: frames as images, named actions, real gRPC."""

from __future__ import annotations

import enum
from typing import ClassVar

import grpc
import gymnasium as gym
import numpy as np
import pytest

from visact.env_server.client import EnvCallError, EnvClient
from visact.env_server.gym_adapter import FromGymnasium, action_names_of
from visact.env_server.server import ServerConfig, start_server


class Corridor(gym.Env):
    """Walk right along a 4-cell corridor; reaching the end pays 1. Renders a 16x32 RGB strip."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    class Actions(enum.IntEnum):
        left = 0
        right = 1

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.actions = Corridor.Actions
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Dict(
            {"position": gym.spaces.Discrete(4), "mission": gym.spaces.Text(40)}
        )
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = int(self.np_random.integers(0, 2))
        return {"position": self.position, "mission": "walk to the right end"}, {}

    def step(self, action):
        self.position = max(0, min(3, self.position + (1 if action == 1 else -1)))
        done = self.position == 3
        return {"position": self.position, "mission": "walk to the right end"}, float(done), done, False, {}

    def render(self):
        frame = np.zeros((16, 32, 3), dtype=np.uint8)
        frame[:, self.position * 8 : self.position * 8 + 8] = 255
        return frame


gym.register("visact-test/Corridor-v0", entry_point=Corridor, max_episode_steps=8)


def test_action_names_come_from_the_actions_enum() -> None:
    env = gym.make("visact-test/Corridor-v0", render_mode="rgb_array")
    assert action_names_of(env) == ("left", "right")


def test_the_adapter_plays_an_episode() -> None:
    env = FromGymnasium("visact-test/Corridor-v0")
    assert env.image_shape == (16, 32, 3) and env.max_episode_steps == 8
    env.reset(seed=3)
    assert "Mission: walk to the right end" in env.task_text()
    outcomes = [env.step("right") for _ in range(3)]
    assert outcomes[-1].terminated or any(o.terminated for o in outcomes)
    finished = next(o for o in outcomes if o.terminated)
    assert finished.reward == 1.0 and finished.info["success"] is True


def test_a_gym_env_over_grpc_keeps_the_protocol() -> None:
    running = start_server(
        ServerConfig(host="127.0.0.1", port=0, gym="visact-test/Corridor-v0", max_sessions=4),
    )
    try:
        with EnvClient(f"127.0.0.1:{running.port}") as client:
            spec = client.describe()
            assert spec.name == "visact-test/Corridor-v0"
            assert list(spec.action_space.vocabulary) == ["left", "right"]
            session = client.create_session()
            first = client.reset(session, seed=0)
            assert first.observation.image.shape == (16, 32, 3)
            with pytest.raises(EnvCallError) as refused:
                client.step(session, "jump")
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            results = [client.step(session, "right")]
            while not results[-1].done:
                results.append(client.step(session, "right"))
            assert (
                results[-1].terminated and results[-1].info["success"] is True and results[-1].reward == 1.0
            )
            assert len(results) <= 3
    finally:
        running.drain(grace=0)
