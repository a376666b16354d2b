"""Property-based fuzzing of every RPC of the trainer over real gRPC: the real TrainerServicer and
Hub behind the real server wiring of `trainer serve` (interceptors, message limits), on port 0,
with no model (the service checks episodes against a model identity only).

Random bytes, random and malformed messages, unknown agents, calls before Register, episodes
with NaN/infinite rewards and log-probs, tokens and log-probs of different lengths, images whose
bytes do not match their declared shape, empty and huge fields, odd unicode: the trainer answers
a documented code (INVALID_ARGUMENT for an episode it cannot train on, whole: nothing of it
enters the buffer), and keeps serving a registered agent.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.fuzz.rpc import CLIENT_ERRORS, fuzz_settings, huge_text, odd_text, parses, raw_call
from tests.fuzz.trainer_messages import LATEST, TEMPERATURE, png, valid_episode
from visact.env.v1 import env_pb2
from visact.trainer.admission import Admission
from visact.trainer.config import NetworkConfig, TrainerConfig
from visact.trainer.hub import Hub, PublishedVersion
from visact.trainer.serve import start_server
from visact.trainer.service import ModelIdentity, TrainerServicer
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Trainer"]
FINGERPRINT = "f" * 64
VOCAB = 1000
MAX_TOKENS = 256
MAX_MESSAGE_MB = 1.0
INT64 = st.integers(-(2**63), 2**63 - 1)


@dataclass
class Trainer:
    hub: Hub
    channel: grpc.Channel
    stub: pb_grpc.TrainerStub
    agent_id: str  # a registered agent that must keep working

    def drain(self) -> None:
        """Empty the buffer (a learner would), so that WAIT does not hide what a submit did."""
        if self.hub.buffered_steps:
            assert self.hub.take_batch(self.hub.buffered_steps, timeout=0) is not None

    def still_serves(self) -> None:
        beat = self.stub.Heartbeat(
            pb.HeartbeatRequest(agent_id=self.agent_id, running_version=LATEST), timeout=10
        )
        assert beat.latest_version == LATEST and beat.may_roll_out
        self.drain()
        response = self.stub.SubmitEpisode(
            pb.SubmitEpisodeRequest(
                agent_id=self.agent_id, episode=valid_episode(), episode_id=f"ok-{time.time_ns()}"
            ),
            timeout=10,
        )
        assert response.status == pb.SubmitEpisodeResponse.ACCEPTED and response.reason == ""
        self.drain()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    weights = tmp_path_factory.mktemp("weights")
    hub = Hub(buffer_steps=64, max_policy_lag=1, agent_timeout=3600.0, keep_versions=2)
    for version in range(1, LATEST + 1):
        data = f"adapter bytes of version {version}".encode() * 100
        path = weights / f"v{version:06d}" / "adapter.safetensors"
        path.parent.mkdir()
        path.write_bytes(data)
        hub.publish(PublishedVersion(version, path, hashlib.sha256(data).hexdigest(), len(data), time.time()))
    servicer = TrainerServicer(
        hub,
        ModelIdentity(
            "tiny-fuzz",
            FINGERPRINT,
            Admission(vocab_size=VOCAB, max_tokens=MAX_TOKENS, temperature=TEMPERATURE),
        ),
        pb.SamplingConfig(temperature=TEMPERATURE, max_new_tokens=16, chain_of_thought=True),
        "fuzz-run",
    )
    config = TrainerConfig(NetworkConfig(host="127.0.0.1", port=0, max_message_mb=MAX_MESSAGE_MB))
    server = start_server(config, servicer)
    port = server.port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.TrainerStub(channel)
    agent_id = stub.Register(
        pb.RegisterRequest(agent_name="canary", model_name="tiny-fuzz", base_fingerprint=FINGERPRINT),
        timeout=10,
    ).agent_id
    fixture = Trainer(hub, channel, stub, agent_id)
    fixture.still_serves()
    yield fixture
    fixture.still_serves()
    channel.close()
    hub.close()
    server.stop(grace=None)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as exc:
        return exc.code(), None


# ---------------------------------------------------------------------------------------------
# random bytes to every method
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=[m.name for m in SERVICE.methods])
@fuzz_settings(60)
@given(data=st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=8).map(lambda b: b * 500)))
def test_random_bytes_to_any_method_get_a_client_error_and_the_trainer_keeps_serving(
    trainer: Trainer, method: Any, data: bytes
) -> None:
    code, _ = raw_call(trainer.channel, method, data, timeout=10)

    assert code in CLIENT_ERRORS, (code, data[:60])
    if not parses(getattr(pb, method.input_type.name), data):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, data[:60])
    trainer.still_serves()


# ---------------------------------------------------------------------------------------------
# SubmitEpisode: one named defect at a time, or any number of them, or none
# ---------------------------------------------------------------------------------------------

Mutation = Callable[[pb.Episode, Any], None]


def _steps(message: pb.Episode) -> Any:
    """The steps; one valid step first if "no steps" came before (the next defect needs a host)."""
    if not message.steps:
        message.steps.append(valid_episode(1).steps[0])
    return message.steps


def _step(message: pb.Episode, draw: Any) -> pb.TrajectoryStep:
    return _steps(message)[draw(st.integers(0, len(_steps(message)) - 1))]


def _set(field: str, values: st.SearchStrategy[Any]) -> Mutation:
    return lambda m, draw: setattr(_step(m, draw), field, draw(values))


def _log_prob(values: st.SearchStrategy[float]) -> Mutation:
    def mutate(m: pb.Episode, draw: Any) -> None:
        step = _step(m, draw)
        if not step.log_probs:  # emptied by another defect: the value alone
            step.generated_ids.append(5)
            step.log_probs.append(0.0)
        step.log_probs[draw(st.integers(0, len(step.log_probs) - 1))] = draw(values)

    return mutate


def _lengths(m: pb.Episode, draw: Any) -> None:
    step = _step(m, draw)
    extra = draw(st.integers(1, 5))
    if draw(st.booleans()):
        step.log_probs.extend([-0.1] * extra)
    else:
        step.generated_ids.extend([8] * extra)


def _image_shape(m: pb.Episode, draw: Any) -> None:
    image = _step(m, draw).image
    image.height, image.width = draw(
        st.tuples(st.integers(-3, 40), st.integers(-3, 40)).filter(
            lambda hw: hw != (image.height, image.width)
        )
    )


def _image_bytes(m: pb.Episode, draw: Any) -> None:
    image = _step(m, draw).image
    data = bytearray(image.data)
    cut = draw(st.integers(32, len(data)))  # into the pixel data: the end chunks alone decoders skip
    image.data = draw(st.one_of(st.binary(max_size=200), st.just(bytes(data[: len(data) - cut]))))


def _not_png(m: pb.Episode, draw: Any) -> None:
    image = _step(m, draw).image
    pixels = np.zeros((5, 7, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=draw(st.sampled_from(["BMP", "GIF", "TIFF"])))
    image.data = buffer.getvalue()


def _tokens(field: str, values: st.SearchStrategy[int]) -> Mutation:
    def mutate(m: pb.Episode, draw: Any) -> None:
        step = _step(m, draw)
        ids = getattr(step, field)
        if not ids:
            ids.append(1)
            if field == "generated_ids":
                step.log_probs.append(-0.5)
        ids[draw(st.integers(0, len(ids) - 1))] = draw(values)

    return mutate


def _empty(field: str) -> Mutation:
    def mutate(m: pb.Episode, draw: Any) -> None:
        step = _step(m, draw)
        step.ClearField(field)
        if field == "generated_ids":
            step.ClearField("log_probs")

    return mutate


def _too_long(m: pb.Episode, draw: Any) -> None:
    _step(m, draw).prompt_ids.extend([1] * MAX_TOKENS)


def _end_early(m: pb.Episode, draw: Any) -> None:
    if len(_steps(m)) < 2:
        m.steps.add().CopyFrom(m.steps[0])
    setattr(m.steps[0], draw(st.sampled_from(["terminated", "truncated"])), True)


def _not_ended(m: pb.Episode, draw: Any) -> None:
    last = _steps(m)[-1]
    last.terminated = last.truncated = False


def _both_ended(m: pb.Episode, draw: Any) -> None:
    last = _steps(m)[-1]
    last.terminated = last.truncated = True


def _versions_backwards(m: pb.Episode, draw: Any) -> None:
    if len(_steps(m)) < 2:
        m.steps.add().CopyFrom(m.steps[0])
        m.steps[0].terminated = m.steps[0].truncated = False
    m.steps[0].policy_version, m.steps[-1].policy_version = LATEST, LATEST - 1


def _truncated_without_bootstrap(m: pb.Episode, draw: Any) -> None:
    last = _steps(m)[-1]
    last.terminated, last.truncated = False, True
    m.ClearField("bootstrap_image")


#: each makes the episode one the learner must not train on
DEFECTS: dict[str, Mutation] = {
    "NaN reward": _set("reward", st.just(math.nan)),
    "infinite reward": _set("reward", st.sampled_from([math.inf, -math.inf])),
    "huge reward": _set("reward", st.one_of(st.floats(1.01e6, 1e308), st.floats(-1e308, -1.01e6))),
    "huge format penalty": _set("format_penalty", st.floats(-1e308, -1.01e6)),
    "NaN/inf format penalty": _set("format_penalty", st.sampled_from([math.nan, math.inf, -math.inf])),
    "positive format penalty": _set("format_penalty", st.floats(0.001, 1e9)),
    "NaN log-prob": _log_prob(st.just(math.nan)),
    "infinite log-prob": _log_prob(st.sampled_from([math.inf, -math.inf])),
    "positive log-prob beyond float rounding (1e-6)": _log_prob(st.floats(1.1e-6, 1e30)),
    "tokens and log-probs of different lengths": _lengths,
    "image shape not what the bytes are": _image_shape,
    "image bytes broken": _image_bytes,
    "image not a PNG": _not_png,
    "image encoding not PNG": lambda m, draw: setattr(
        _step(m, draw).image, "encoding", draw(st.sampled_from([0, 1, 5]))
    ),
    "token id outside the vocabulary": _tokens(
        "generated_ids", st.one_of(st.integers(VOCAB, 2**31 - 1), st.integers(-(2**31), -1))
    ),
    "prompt id outside the vocabulary": _tokens("prompt_ids", st.integers(VOCAB, 2**31 - 1)),
    "empty prompt": _empty("prompt_ids"),
    "empty answer": _empty("generated_ids"),
    "too many tokens": _too_long,
    "action_start outside the answer": _set("action_start", st.sampled_from([-1, 4, 2**31 - 1, -(2**31)])),
    "temperature not the trainer's": _set(
        "temperature", st.sampled_from([0.0, -1.0, 0.2, math.nan, math.inf])
    ),
    "version newer than the newest": _set("policy_version", st.integers(LATEST + 1, 2**63 - 1)),
    "negative version": _set("policy_version", st.integers(-(2**63), -1)),
    "an episode that ends before its last step": _end_early,
    "last step not ended": _not_ended,
    "terminated and truncated": _both_ended,
    "versions going backwards": _versions_backwards,
    "truncated without a bootstrap": _truncated_without_bootstrap,
    "no steps": lambda m, draw: m.ClearField("steps"),
}

#: each keeps the episode valid
HARMLESS: dict[str, Mutation] = {
    "odd unicode text": _set("text", st.one_of(odd_text(), huge_text())),
    "odd unicode action": _set("action", odd_text()),
    "odd parse failure": _set("parse_failure", odd_text()),
    "any reward within the bound": _set("reward", st.floats(-1e6, 1e6)),
    "any penalty within the bound": _set("format_penalty", st.floats(-1e6, 0)),
    "older version": _set("policy_version", st.integers(0, LATEST)),
    "any seed": lambda m, draw: setattr(m, "seed", draw(INT64)),
    "odd env and session": lambda m, draw: (
        setattr(m, "env", draw(odd_text())),
        setattr(m, "session", draw(odd_text())),
    ),
    "any episode_step": _set("episode_step", st.integers(-(2**31), 2**31 - 1)),
    "log-prob at float rounding above 0": _log_prob(st.floats(0, 1e-6)),
}


def uniform_versions(m: pb.Episode) -> None:
    """Harmless version changes must not make versions go backwards."""
    low = min(s.policy_version for s in m.steps)
    for step in m.steps:
        step.policy_version = low


@fuzz_settings(150)
@given(
    steps=st.integers(1, 4),
    truncated=st.booleans(),
    defects=st.lists(st.sampled_from(sorted(DEFECTS)), max_size=3, unique=True),
    harmless=st.lists(st.sampled_from(sorted(HARMLESS)), max_size=4, unique=True),
    data=st.data(),
)
def test_a_defective_episode_is_refused_whole_and_a_sound_one_accepted(
    trainer: Trainer,
    steps: int,
    truncated: bool,
    defects: list[str],
    harmless: list[str],
    data: st.DataObject,
) -> None:
    message = valid_episode(steps, truncated=truncated)
    for name in harmless:
        HARMLESS[name](message, data.draw)
    uniform_versions(message)
    for name in defects:
        DEFECTS[name](message, data.draw)
    trainer.drain()
    before = dict(trainer.hub.counters)
    request = pb.SubmitEpisodeRequest(
        agent_id=trainer.agent_id, episode=message, episode_id=f"e-{time.time_ns()}"
    )

    code, response = code_of(lambda: trainer.stub.SubmitEpisode(request, timeout=10))

    if defects:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (defects, harmless, code)
        assert trainer.hub.buffered_steps == 0, "part of a refused episode entered the buffer"
        assert trainer.hub.counters["episodes_refused"] == before["episodes_refused"] + 1
    else:
        assert code == grpc.StatusCode.OK, (harmless, code)
        assert response.status == pb.SubmitEpisodeResponse.ACCEPTED
        assert trainer.hub.buffered_steps == len(message.steps)
    trainer.still_serves()


# ---------------------------------------------------------------------------------------------
# any SubmitEpisode at all: a client error, and whatever is accepted is trainable
# ---------------------------------------------------------------------------------------------

floats32 = st.floats(width=32)
any_image = st.builds(
    env_pb2.Image,
    data=st.one_of(
        st.binary(max_size=64), st.builds(lambda h, w: png(h, w).data, st.integers(1, 9), st.integers(1, 9))
    ),
    encoding=st.sampled_from([0, 1, 2, 2, 2, 9]),
    height=st.integers(-2, 10),
    width=st.integers(-2, 10),
    channels=st.integers(-1, 4),
)
any_step = st.builds(
    pb.TrajectoryStep,
    image=any_image,
    prompt_ids=st.lists(st.integers(-5, VOCAB + 5), max_size=8),
    generated_ids=st.lists(st.integers(-5, VOCAB + 5), max_size=6),
    log_probs=st.lists(floats32, max_size=6),
    action_start=st.integers(-2, 8),
    text=odd_text(),
    action=odd_text(),
    reward=st.floats(),
    format_penalty=st.floats(),
    terminated=st.booleans(),
    truncated=st.booleans(),
    policy_version=st.integers(-2, LATEST + 2),
    temperature=st.sampled_from([TEMPERATURE, TEMPERATURE, 0.0, math.nan]),
    episode_step=st.integers(-2, 10),
)


@fuzz_settings(150)
@given(
    steps=st.lists(any_step, max_size=4),
    bootstrap=st.one_of(st.none(), any_image),
    bootstrap_ids=st.lists(st.integers(-2, VOCAB + 2), max_size=4),
    episode_id=st.one_of(odd_text(), st.just(""), huge_text()),
    agent_id=st.sampled_from(["canary", "", "nobody"]),
)
def test_any_episode_is_accepted_only_when_trainable(
    trainer: Trainer,
    steps: list[pb.TrajectoryStep],
    bootstrap: env_pb2.Image | None,
    bootstrap_ids: list[int],
    episode_id: str,
    agent_id: str,
) -> None:
    message = pb.Episode(steps=steps, bootstrap_prompt_ids=bootstrap_ids)
    if bootstrap is not None:
        message.bootstrap_image.CopyFrom(bootstrap)
    agent = trainer.agent_id if agent_id == "canary" else agent_id
    trainer.drain()
    request = pb.SubmitEpisodeRequest(agent_id=agent, episode=message, episode_id=episode_id)

    code, response = code_of(lambda: trainer.stub.SubmitEpisode(request, timeout=10))

    assert code in CLIENT_ERRORS
    if agent != trainer.agent_id:
        assert code == grpc.StatusCode.NOT_FOUND  # unregistered: refused before anything is read
    if code == grpc.StatusCode.OK:
        assert response.status == pb.SubmitEpisodeResponse.ACCEPTED
        [episode] = trainer.hub.take_batch(trainer.hub.buffered_steps, timeout=0) or []
        assert 0 < len(episode_id) <= 256
        for sample in episode.steps:
            assert len(sample.generated_ids) == len(sample.behavior_log_probs) > 0
            assert all(math.isfinite(x) and x <= 0 for x in sample.behavior_log_probs)
            assert math.isfinite(sample.reward) and sample.image.pixels().shape[2] == 3
            assert all(0 <= t < VOCAB for t in [*sample.prompt_ids, *sample.generated_ids])
            assert 0 <= sample.version <= LATEST
        assert episode.steps[-1].terminated or episode.steps[-1].truncated
    else:
        assert trainer.hub.buffered_steps == 0
    trainer.still_serves()


# ---------------------------------------------------------------------------------------------
# Register, Heartbeat, WatchVersions, FetchWeights: random fields, unknown agents, any order
# ---------------------------------------------------------------------------------------------


@fuzz_settings(80)
@given(
    name=st.one_of(odd_text(), huge_text()),
    fingerprint=st.one_of(st.just(FINGERPRINT), odd_text()),
    environments=st.lists(odd_text(), max_size=5),
    sessions=st.integers(-(2**31), 2**31 - 1),
    previous=st.one_of(st.just(""), odd_text(), st.just("canary")),
)
def test_register_with_any_fields_is_ok_exactly_for_the_trainers_model(
    trainer: Trainer, name: str, fingerprint: str, environments: list[str], sessions: int, previous: str
) -> None:
    previous_id = trainer.agent_id if previous == "canary" else previous
    request = pb.RegisterRequest(
        agent_name=name,
        model_name=name[:50],
        base_fingerprint=fingerprint,
        environments=environments,
        sessions=sessions,
        previous_agent_id=previous_id,
    )
    agents_before = set(trainer.hub.agents)

    code, response = code_of(lambda: trainer.stub.Register(request, timeout=10))

    if fingerprint != FINGERPRINT:
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert set(trainer.hub.agents) == agents_before
    else:
        assert code == grpc.StatusCode.OK
        assert response.latest_version == LATEST and response.run_id == "fuzz-run"
        if previous_id == trainer.agent_id:
            assert response.agent_id == trainer.agent_id
        else:
            assert response.agent_id not in agents_before and len(response.agent_id) <= 40 + 9
            del trainer.hub.agents[response.agent_id]  # keep the hub small
    trainer.still_serves()


@fuzz_settings(100)
@given(
    agent=st.one_of(st.just("canary"), st.just(""), odd_text(), huge_text()),
    running=INT64,
    steps=INT64,
    version=st.one_of(INT64, st.integers(0, LATEST + 1)),
    method=st.sampled_from(["Heartbeat", "WatchVersions", "FetchWeights", "SubmitEpisode"]),
)
def test_agent_calls_with_any_fields_and_before_register_get_the_documented_codes(
    trainer: Trainer, agent: str, running: int, steps: int, version: int, method: str
) -> None:
    agent_id = trainer.agent_id if agent == "canary" else agent
    known = agent_id == trainer.agent_id
    if method == "Heartbeat":
        code, response = code_of(
            lambda: trainer.stub.Heartbeat(
                pb.HeartbeatRequest(agent_id=agent_id, running_version=running, steps=steps), timeout=10
            )
        )
        if known:
            assert code == grpc.StatusCode.OK
            assert response.may_roll_out == (running >= response.min_version)
            assert response.min_version == LATEST - 1
    elif method == "WatchVersions":
        stream = trainer.stub.WatchVersions(pb.WatchVersionsRequest(agent_id=agent_id), timeout=10)
        code, first = code_of(lambda: next(stream))
        stream.cancel()
        if known:
            assert code == grpc.StatusCode.OK and first.version == LATEST
    elif method == "FetchWeights":
        request = pb.FetchWeightsRequest(agent_id=agent_id, version=version)
        code, chunks = code_of(lambda: list(trainer.stub.FetchWeights(request, timeout=10)))
        if known and version in trainer.hub.versions:
            assert code == grpc.StatusCode.OK
            data = b"".join(c.data for c in chunks)
            assert hashlib.sha256(data).hexdigest() == trainer.hub.versions[version].sha256
        elif known:
            assert code == grpc.StatusCode.NOT_FOUND
    else:
        request = pb.SubmitEpisodeRequest(agent_id=agent_id, episode=valid_episode(), episode_id="x")
        code, _ = code_of(lambda: trainer.stub.SubmitEpisode(request, timeout=10))
        if known:
            assert code == grpc.StatusCode.OK
    if not known:
        assert code == grpc.StatusCode.NOT_FOUND, (method, code)
    trainer.still_serves()


def test_episode_ids_are_bounded_and_retries_counted_once(trainer: Trainer) -> None:
    submit = trainer.stub.SubmitEpisode
    trainer.drain()
    long_id = "x" * 257
    code, _ = code_of(
        lambda: submit(
            pb.SubmitEpisodeRequest(agent_id=trainer.agent_id, episode=valid_episode(), episode_id=long_id)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and trainer.hub.buffered_steps == 0
    request = pb.SubmitEpisodeRequest(
        agent_id=trainer.agent_id, episode=valid_episode(), episode_id="é" * 256
    )
    assert submit(request, timeout=10).reason == ""
    assert submit(request, timeout=10).reason == "already accepted"
    assert trainer.hub.buffered_steps == 2
    trainer.drain()


# ---------------------------------------------------------------------------------------------
# message size limit
# ---------------------------------------------------------------------------------------------


def test_an_episode_over_the_message_limit_is_resource_exhausted_and_nothing_is_kept(
    trainer: Trainer,
) -> None:
    message = valid_episode(2)
    message.steps[0].image.data = bytes(int(MAX_MESSAGE_MB * 1024 * 1024) + 1)
    trainer.drain()
    request = pb.SubmitEpisodeRequest(agent_id=trainer.agent_id, episode=message, episode_id="big")
    code, _ = code_of(lambda: trainer.stub.SubmitEpisode(request, timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trainer.hub.buffered_steps == 0
    register = pb.RegisterRequest(base_fingerprint=FINGERPRINT, environments=["e" * 1000] * 1100)
    assert (
        code_of(lambda: trainer.stub.Register(register, timeout=10))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    trainer.still_serves()
