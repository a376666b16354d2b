"""Property-based fuzzing of every RPC of the env server over real gRPC (an in-process server on
port 0 with the real wiring: interceptors, message limits, the NumberLine game).

Whatever comes (random bytes, messages with odd unicode, empty and huge fields, unknown sessions,
calls out of order, reset options with NaN and infinities), the server answers with a documented
client-error code, the exact one the protocol names where the request's meaning is clear, and
keeps serving: a session opened before the fuzzing still plays afterwards.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from PIL import Image

from tests.fuzz.rpc import CLIENT_ERRORS, fuzz_settings, huge_text, json_values, odd_text, parses, raw_call
from tests.processes import command, start
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc
from visact.env_server.server import RunningServer, ServerConfig, start_server

SERVICE = pb.DESCRIPTOR.services_by_name["Environment"]
MAX_MESSAGE_MB = 1.0
MAX_POSITION = 5  # NumberLine's default: positions 0..5
INT64 = st.integers(-(2**63), 2**63 - 1)


@dataclass
class Server:
    running: RunningServer
    channel: grpc.Channel
    stub: pb_grpc.EnvironmentStub
    canary: str  # a session opened before any fuzzing

    @property
    def max_batch_items(self) -> int:
        return self.running.servicer.limits.max_batch_items

    def canary_still_plays(self) -> None:
        reset = self.stub.Reset(pb.ResetRequest(session_id=self.canary, seed=1), timeout=10)
        step = self.stub.Step(
            pb.StepRequest(session_id=self.canary, action=reset.observation.legal_actions[0]), timeout=10
        )
        assert step.episode_step == 1


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    config = ServerConfig(
        env="numberline",
        port=0,
        host="127.0.0.1",
        max_sessions=100_000,
        idle_timeout=0,
        max_message_mb=MAX_MESSAGE_MB,
        grace=0,
    )
    running = start_server(config)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.EnvironmentStub(channel)
    canary = stub.CreateSession(pb.CreateSessionRequest(client_label="canary"), timeout=10).session_id
    fixture = Server(running, channel, stub, canary)
    fixture.canary_still_plays()
    yield fixture
    fixture.canary_still_plays()
    channel.close()
    running.drain(grace=0)


def code_of(call: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as exc:
        return exc.code(), None


def check_image(image: pb.Image, encoding: int) -> None:
    """The server's own images match what they declare."""
    assert image.encoding == encoding
    assert (image.height, image.width, image.channels) == (300, 300, 3)
    if encoding == pb.IMAGE_ENCODING_RAW_RGB:
        assert len(image.data) == image.height * image.width * image.channels
    else:
        with Image.open(io.BytesIO(image.data)) as pil:
            assert (pil.format, pil.height, pil.width) == ("PNG", image.height, image.width)


# ---------------------------------------------------------------------------------------------
# random bytes to every method
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=[m.name for m in SERVICE.methods])
@fuzz_settings(60)
@given(data=st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=8).map(lambda b: b * 500)))
def test_random_bytes_to_any_method_get_a_client_error_and_the_server_keeps_serving(
    server: Server, method: Any, data: bytes
) -> None:
    message_type = getattr(pb, method.input_type.name)
    code, _ = raw_call(server.channel, method, data)

    assert code in CLIENT_ERRORS, (code, data[:60])
    if not parses(message_type, data):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, data[:60])
    server.canary_still_plays()


def test_bytes_that_do_not_parse_name_the_message_expected(server: Server) -> None:
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (session_id), a string, with invalid UTF-8
    for method, type_name in (("Step", "StepRequest"), ("BatchStepStream", "BatchStepRequest")):
        path = f"/visact.env.v1.Environment/{method}"
        data = bad_utf8 if method == "Step" else b"\x0a\x06\x12\x04" + bad_utf8  # items[0].step
        try:
            if method == "Step":
                server.channel.unary_unary(path)(data, timeout=10)
            else:
                list(server.channel.stream_stream(path)(iter([data]), timeout=10))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"do not parse as visact.env.v1.{type_name}" in exc.details()
        else:
            raise AssertionError(f"{method} took bytes that do not parse")
    server.canary_still_plays()


# ---------------------------------------------------------------------------------------------
# reset options: anything a Struct holds, NaN and infinities included
# ---------------------------------------------------------------------------------------------


def numberline_options_valid(options: dict[str, Any]) -> bool:
    if set(options) - {"target", "start"}:
        return False
    for value in options.values():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not (math.isfinite(value) and float(value).is_integer() and 0 <= value <= MAX_POSITION):
            return False
    return not ("target" in options and "start" in options and options["target"] == options["start"])


option_values = st.one_of(st.integers(-2, MAX_POSITION + 2), st.floats(-1, 7), json_values())
options_strategy = st.one_of(
    st.dictionaries(st.sampled_from(["target", "start"]), option_values, max_size=2),
    st.dictionaries(st.one_of(st.sampled_from(["target", "start"]), odd_text(12)), json_values(), max_size=3),
)


@fuzz_settings(120)
@given(options=options_strategy, seed=st.one_of(st.none(), INT64))
def test_reset_options_of_any_shape_are_applied_or_refused_as_invalid(
    server: Server, options: dict[str, Any], seed: int | None
) -> None:
    request = pb.ResetRequest(session_id=server.canary)
    request.options.CopyFrom(struct_pb2.Struct())
    request.options.update(options)
    if seed is not None:
        request.seed = seed
    code, response = code_of(lambda: server.stub.Reset(request, timeout=10))

    wire = {k: v for k, v in _struct_to_python(request.options).items()}
    if numberline_options_valid(wire):
        assert code == grpc.StatusCode.OK, (code, options)
        if seed is not None:
            assert response.seed == seed
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, options)
    server.canary_still_plays()


def _struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct's values as Python (numbers as floats), without json_format (NaN-safe)."""

    def value(v: struct_pb2.Value) -> Any:
        kind = v.WhichOneof("kind")
        if kind == "number_value":
            return v.number_value
        if kind == "struct_value":
            return {k: value(x) for k, x in v.struct_value.fields.items()}
        if kind == "list_value":
            return [value(x) for x in v.list_value.values]
        if kind == "null_value":
            return None
        return getattr(v, kind) if kind else None

    return {k: value(v) for k, v in struct.fields.items()}


# ---------------------------------------------------------------------------------------------
# sessions, out of order: a model of every session predicts the exact code of every call
# ---------------------------------------------------------------------------------------------


@dataclass
class SessionModel:
    encoding: int
    want_expert: bool
    state: str = "needs_reset"  # running, ended, closed
    legal: tuple[str, ...] = ()


#: which session a call names: one this test created (playing, open, or any, closed included),
#: or an id never given out
session_refs = st.tuples(
    st.sampled_from(["running", "running", "running", "open", "known", "empty", "odd", "hex"]),
    st.integers(0, 1 << 20),
    st.one_of(odd_text(24), huge_text()),
)


def actions() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["+", "-", "+", "-", " +", "PLUS", "", "+\x00"]), odd_text(), huge_text()
    )


class Sessions(RuleBasedStateMachine):
    """Random CreateSession/Reset/Step/BatchStep/BatchStepStream/CloseSession calls on real sessions."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.stub = server.stub
        self.model: dict[str, SessionModel] = {}

    def session(self, ref: tuple[str, int, str]) -> str:
        kind, index, text = ref
        wanted = {"running": ("running",), "open": ("needs_reset", "running", "ended")}.get(kind)
        known = [k for k, v in self.model.items() if wanted is None or v.state in wanted] or list(self.model)
        if kind in ("running", "open", "known") and known:
            return known[index % len(known)]
        if kind == "empty":
            return ""
        if kind == "hex":
            return f"{index:016x}"
        return text

    # ------------------------------------------------------------------ predictions
    def predict_reset(self, session_id: str, options: dict[str, Any] | None) -> grpc.StatusCode:
        session = self.model.get(session_id)
        if session is None or session.state == "closed":
            return grpc.StatusCode.NOT_FOUND
        if options is not None and not numberline_options_valid(options):
            return grpc.StatusCode.INVALID_ARGUMENT
        return grpc.StatusCode.OK

    def predict_step(self, session_id: str, action: str) -> grpc.StatusCode:
        session = self.model.get(session_id)
        if session is None or session.state == "closed":
            return grpc.StatusCode.NOT_FOUND
        if session.state != "running":
            return grpc.StatusCode.FAILED_PRECONDITION
        if action not in session.legal:
            return grpc.StatusCode.INVALID_ARGUMENT
        return grpc.StatusCode.OK

    def observed(self, session_id: str, observation: pb.Observation, *, ended: bool) -> None:
        session = self.model[session_id]
        check_image(observation.image, session.encoding)
        session.state = "ended" if ended else "running"
        session.legal = tuple(observation.legal_actions)
        if session.want_expert and not ended:
            assert observation.expert.action in session.legal
        if not ended:
            assert set(session.legal) <= {"+", "-"} and session.legal

    # ------------------------------------------------------------------ rules
    @initialize(seed=INT64)
    def two_playing_sessions(self, seed: int) -> None:
        """A raw session and a PNG one with the expert, both playing, to start from."""
        for encoding, want_expert in ((pb.IMAGE_ENCODING_RAW_RGB, False), (pb.IMAGE_ENCODING_PNG, True)):
            self.create(encoding, want_expert, "start")
        for session_id in list(self.model):
            response = self.stub.Reset(pb.ResetRequest(session_id=session_id, seed=seed), timeout=10)
            self.observed(session_id, response.observation, ended=False)

    @rule(
        encoding=st.sampled_from([0, 1, 2, 2, 7, -1]),
        want_expert=st.booleans(),
        label=st.one_of(odd_text(), huge_text()),
    )
    def create(self, encoding: int, want_expert: bool, label: str) -> None:
        request = pb.CreateSessionRequest(
            image_encoding=encoding, want_expert=want_expert, client_label=label
        )  # type: ignore[arg-type]
        code, response = code_of(lambda: self.stub.CreateSession(request, timeout=10))
        if encoding not in (0, 1, 2):
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            return
        assert code == grpc.StatusCode.OK
        session_id = str(response.session_id)
        assert len(session_id) >= 16 and session_id not in self.model
        self.model[session_id] = SessionModel(encoding or pb.IMAGE_ENCODING_RAW_RGB, want_expert)

    @rule(
        ref=session_refs,
        seed=st.one_of(st.none(), INT64),
        options=st.one_of(st.none(), st.none(), options_strategy),
    )
    def reset(self, ref: tuple[str, int, str], seed: int | None, options: dict[str, Any] | None) -> None:
        session_id = self.session(ref)
        request = pb.ResetRequest(session_id=session_id)
        if seed is not None:
            request.seed = seed
        wire = None
        if options is not None:
            request.options.update(options)
            request.options.SetInParent()
            wire = _struct_to_python(request.options)
        expected = self.predict_reset(session_id, wire)
        code, response = code_of(lambda: self.stub.Reset(request, timeout=10))
        assert code == expected, (code, expected, session_id, options)
        if code == grpc.StatusCode.OK:
            self.observed(session_id, response.observation, ended=False)
            if seed is not None:
                assert response.seed == seed

    @rule(ref=session_refs, action=actions(), play_legal=st.integers(0, 3), pick=st.integers(0, 1))
    def step(self, ref: tuple[str, int, str], action: str, play_legal: int, pick: int) -> None:
        session_id = self.session(ref)
        session = self.model.get(session_id)
        if play_legal and session is not None and session.legal:
            action = session.legal[pick % len(session.legal)]
        expected = self.predict_step(session_id, action)
        request = pb.StepRequest(session_id=session_id, action=action)
        code, response = code_of(lambda: self.stub.Step(request, timeout=10))
        assert code == expected, (code, expected, session_id, action[:40])
        if code == grpc.StatusCode.OK:
            assert not (response.terminated and response.truncated)
            ended = response.terminated or response.truncated
            if ended:
                assert "success" in response.info
            self.observed(session_id, response.observation, ended=ended)

    @rule(
        items=st.lists(
            st.tuples(
                st.sampled_from(["reset", "step", "step", "empty"]), st.integers(0, 1 << 30), actions()
            ),
            max_size=5,
        ),
        refs=st.lists(session_refs, min_size=1, max_size=3),
        stream=st.booleans(),
    )
    def batch(
        self, items: list[tuple[str, int, str]], refs: list[tuple[str, int, str]], stream: bool
    ) -> None:
        ids = [self.session(ref) for ref in refs]
        request = pb.BatchStepRequest()
        calls = []
        for kind, index, action in items:
            session_id = ids[index % len(ids)]
            session = self.model.get(session_id)
            if kind == "step" and session is not None and session.legal and index % 3:
                action = session.legal[index % len(session.legal)]
            if kind == "reset":
                request.items.add(reset=pb.ResetRequest(session_id=session_id, seed=index))
            elif kind == "step":
                request.items.add(step=pb.StepRequest(session_id=session_id, action=action))
            else:
                request.items.add()
            calls.append((kind, session_id, action))
        if request.ByteSize() > MAX_MESSAGE_MB * 1024 * 1024:
            code, _ = code_of(lambda: self.stub.BatchStep(request, timeout=10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            return
        if stream:
            code, responses = code_of(lambda: list(self.stub.BatchStepStream(iter([request]), timeout=10)))
            response = responses[0] if responses else None
        else:
            code, response = code_of(lambda: self.stub.BatchStep(request, timeout=10))
        if len(items) > self.server.max_batch_items:
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            return
        assert code == grpc.StatusCode.OK, code
        assert len(response.results) == len(calls)
        for (kind, session_id, action), result in zip(calls, response.results, strict=True):
            if kind == "empty":
                expected = grpc.StatusCode.INVALID_ARGUMENT
            elif kind == "reset":
                expected = self.predict_reset(session_id, None)
            else:
                expected = self.predict_step(session_id, action)
            got = result.WhichOneof("result")
            if expected == grpc.StatusCode.OK:
                assert got == kind, (got, result.error)
                if kind == "reset":
                    self.observed(session_id, result.reset.observation, ended=False)
                else:
                    step = result.step
                    self.observed(session_id, step.observation, ended=step.terminated or step.truncated)
            else:
                assert got == "error" and result.error.code == expected.value[0], (kind, expected, result)

    @rule(ref=session_refs)
    def close(self, ref: tuple[str, int, str]) -> None:
        session_id = self.session(ref)
        session = self.model.get(session_id)
        code, _ = code_of(
            lambda: self.stub.CloseSession(pb.CloseSessionRequest(session_id=session_id), timeout=10)
        )
        if session is None or session.state == "closed":
            assert code == grpc.StatusCode.NOT_FOUND
        else:
            assert code == grpc.StatusCode.OK
            session.state = "closed"

    def teardown(self) -> None:
        for session_id, session in self.model.items():
            if session.state != "closed":
                self.stub.CloseSession(pb.CloseSessionRequest(session_id=session_id), timeout=10)
        self.server.canary_still_plays()


def test_sessions_called_in_any_order_get_exactly_the_documented_codes(server: Server) -> None:
    run_state_machine_as_test(lambda: Sessions(server), settings=fuzz_settings(50, stateful_step_count=40))


# ---------------------------------------------------------------------------------------------
# message size limits
# ---------------------------------------------------------------------------------------------

OVERSIZE = int(MAX_MESSAGE_MB * 1024 * 1024) + 1024


@pytest.mark.parametrize(
    "build",
    [
        lambda: ("CreateSession", pb.CreateSessionRequest(client_label="x" * OVERSIZE)),
        lambda: ("Step", pb.StepRequest(session_id="s", action="+" * OVERSIZE)),
        lambda: ("Reset", pb.ResetRequest(session_id="x" * OVERSIZE)),
        lambda: (
            "BatchStep",
            pb.BatchStepRequest(
                items=[pb.BatchItem(step=pb.StepRequest(session_id="s", action="+" * 70_000))] * 16
            ),
        ),
    ],
    ids=["CreateSession", "Step", "Reset", "BatchStep"],
)
def test_a_request_over_the_message_limit_is_resource_exhausted(server: Server, build: Any) -> None:
    method, request = build()
    assert request.ByteSize() > MAX_MESSAGE_MB * 1024 * 1024
    code, _ = code_of(lambda: getattr(server.stub, method)(request, timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    server.canary_still_plays()


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


OVERSIZE_MB, WARMUP, MEASURED, RSS_BOUND_MB = 4, 10, 30, 48


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read a process's RSS")
def test_oversize_requests_to_an_env_server_process_cost_no_memory(tmp_path: Path) -> None:
    """Requests of 4 MiB to `env-server --max-message-mb 1`: each RESOURCE_EXHAUSTED, and the
    server's RSS grows by far less than they add up to (it never holds them: 30 of them would be
    120 MiB; after a warm-up it grows a few MiB, allocator arenas settling)."""
    ready = tmp_path / "port"
    argv = [*command("env-server"), "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)]
    process = start(
        "env", [*argv, "--max-message-mb", "1", "--log-format", "text"], tmp_path, ready_file=ready
    )
    try:
        channel = grpc.insecure_channel(process.address, options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb_grpc.EnvironmentStub(channel)
        session = stub.CreateSession(pb.CreateSessionRequest(), timeout=10).session_id
        stub.Reset(pb.ResetRequest(session_id=session, seed=0), timeout=10)
        big = pb.StepRequest(session_id=session, action="+" * (OVERSIZE_MB << 20))
        for _ in range(WARMUP):
            code_of(lambda: stub.Step(big, timeout=10))
        before = vm_rss_kb(process.popen.pid)
        codes = [code_of(lambda: stub.Step(big, timeout=10))[0] for _ in range(MEASURED)]
        after = vm_rss_kb(process.popen.pid)
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert after - before < RSS_BOUND_MB * 1024, (
            f"RSS grew {after - before} KiB over {MEASURED} oversize requests of {OVERSIZE_MB} MiB"
        )
        stub.Step(pb.StepRequest(session_id=session, action="+"), timeout=10)  # the session still plays
        channel.close()
    finally:
        assert process.stop(timeout=20) == 0
    print(
        f"\nenv-server RSS {before} KiB -> {after} KiB over {MEASURED} x {OVERSIZE_MB} MiB oversize requests"
    )
