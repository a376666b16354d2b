"""The generic servicer over real gRPC on loopback, with a tiny fake Env."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from visact.env_server.client import EnvCallError, EnvClient, ResetCall, StepCall, StepResult


@pytest.fixture
def client(counter_server):
    with EnvClient(f"127.0.0.1:{counter_server.port}") as c:
        yield c


def test_describe_carries_the_spec(client):
    spec = client.describe()
    assert spec.name == "counter"
    assert spec.protocol_version == "v1"
    assert (spec.image_height, spec.image_width, spec.image_channels) == (8, 6, 3)
    assert list(spec.action_space.vocabulary) == ["+", "-"]
    assert "batch_step" in spec.capabilities and "expert" in spec.capabilities
    assert spec.max_sessions == 4 and spec.session_idle_timeout_seconds == 1.0


def test_episode_runs_to_termination_and_then_needs_reset(client):
    sid = client.create_session(want_expert=True)
    first = client.reset(sid, seed=1, options={"target": 2})
    assert first.observation.image.shape == (8, 6, 3)
    assert first.observation.expert is not None and first.observation.expert.action == "+"
    client.step(sid, "+")
    last = client.step(sid, "+")
    assert last.terminated and last.reward == 1.0 and last.info["success"] is True
    with pytest.raises(EnvCallError) as err:
        client.step(sid, "+")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Reset" in err.value.message


def test_time_limit_truncates(client):
    sid = client.create_session()
    client.reset(sid, options={"target": 9})
    results = [client.step(sid, "-") for _ in range(6)]
    assert [r.truncated for r in results] == [False] * 5 + [True]
    assert results[-1].info["success"] is False


def test_error_codes_and_session_survives(client):
    sid = client.create_session()
    with pytest.raises(EnvCallError) as err:
        client.step(sid, "+")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    client.reset(sid, options={"target": 3})
    with pytest.raises(EnvCallError) as err:
        client.step(sid, "jump")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "'jump'" in err.value.message
    with pytest.raises(EnvCallError) as err:
        client.reset(sid, options={"color": "red"})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "target" in err.value.message
    with pytest.raises(EnvCallError) as err:
        client.step("nope", "+")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    # the session is unharmed by all of the above
    assert client.step(sid, "+").observation.image[0, 0, 0] == 1


def test_capacity_then_close_frees_a_slot(client):
    ids = [client.create_session() for _ in range(4)]
    with pytest.raises(EnvCallError) as err:
        client.create_session()
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    client.close_session(ids[0])
    client.create_session()
    with pytest.raises(EnvCallError) as err:
        client.close_session(ids[0])
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_seed_determinism_and_png(client):
    raw = client.create_session()
    png = client.create_session(encoding="png")
    a = client.reset(raw, seed=7).observation.image
    b = client.reset(png, seed=7).observation.image
    np.testing.assert_array_equal(a, b)


def test_batch_mixes_resets_steps_and_errors(client):
    s1, s2 = client.create_session(), client.create_session()
    results = client.batch(
        [
            ResetCall(s1, seed=1, options={"target": 1}),
            ResetCall(s2, seed=2),
            StepCall(s1, "+"),
            StepCall("x", "+"),
        ]
    )
    assert isinstance(results[2], StepResult) and results[2].terminated
    assert isinstance(results[3], EnvCallError) and results[3].code == grpc.StatusCode.NOT_FOUND
    again = client.batch([StepCall(s1, "+"), StepCall(s2, "bad"), StepCall(s2, "+")])
    assert isinstance(again[0], EnvCallError) and again[0].code == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(again[1], EnvCallError) and again[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(again[2], StepResult)


def test_idle_sessions_are_reaped(client, counter_server):
    sid = client.create_session()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(counter_server.servicer.sessions):
        time.sleep(0.1)
    with pytest.raises(EnvCallError) as err:
        client.reset(sid)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_concurrent_sessions_do_not_interfere(client):
    errors: list[BaseException] = []

    def play(target: int) -> None:
        try:
            sid = client.create_session()
            client.reset(sid, options={"target": target})
            for i in range(target):
                result = client.step(sid, "+")
                assert result.terminated == (i == target - 1)
            client.close_session(sid)
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=play, args=(t,)) for t in (2, 3, 4, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
