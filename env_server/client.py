"""A Python client of any visact environment server (whatever language the server is in).

Every failure comes back as one exception type, :class:`EnvCallError`, carrying
the gRPC status code and the server's message. Images arrive as numpy arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from visact import images, rpc
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc
from visact.env_server.core import ExpertMove
from visact.env_server.stream import BatchStream, StreamBroken
from visact.memory import tune_allocator
from visact.rpc.auth import token_metadata

DEFAULT_TIMEOUT = 30.0


class EnvCallError(Exception):
    """A call to an environment server failed; ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str, *, session_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.session_id = session_id


@dataclass(frozen=True)
class Observation:
    """What an agent sees: the image, the task text, the legal actions, maybe the expert's move."""

    image: np.ndarray
    task: str
    legal_actions: tuple[str, ...]
    expert: ExpertMove | None = None


@dataclass(frozen=True)
class ResetResult:
    observation: Observation
    seed: int
    episode: int


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    episode_step: int = 0

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True)
class ResetCall:
    """A reset inside a batch."""

    session_id: str
    seed: int | None = None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StepCall:
    """A step inside a batch."""

    session_id: str
    action: str


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class EnvClient:
    """Calls one environment server. Thread-safe; one channel per client."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        channel: grpc.Channel | None = None,
        stream: bool = True,
        png_decode_cache_mb: float = 64.0,
        **dial_options: Any,
    ) -> None:
        """``stream``: send batches over one BatchStepStream when the server offers it.
        ``png_decode_cache_mb``: MiB of PNG files kept decoded, by their bytes (0: decode every one).
        ``dial_options``: fields of ``visact.rpc.Dial`` (``tls_ca``, ``tls_cert``, ``tls_key``...)."""
        tune_allocator()
        self.address = address
        self.timeout = timeout
        self._channel = channel or rpc.dial(address, rpc.Dial(**dial_options))
        self._stub = pb_grpc.EnvironmentStub(self._channel)
        self._metadata = token_metadata(token)
        self._spec: pb.EnvironmentSpec | None = None
        self._want_stream = stream
        self._stream: BatchStream | None = None
        self._stream_lock = threading.Lock()
        self.pngs = images.DecodedPngs(int(png_decode_cache_mb * (1 << 20)))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._channel.close()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects; raises EnvCallError(UNAVAILABLE) after ``timeout``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise EnvCallError(
                grpc.StatusCode.UNAVAILABLE, f"no environment server answered at {self.address} in {timeout}s"
            ) from None

    # ------------------------------------------------------------------ calls
    def describe(self) -> pb.EnvironmentSpec:
        """The server's environment spec (cached after the first call)."""
        if self._spec is None:
            self._spec = self._call(self._stub.Describe, pb.DescribeRequest()).spec
        return self._spec

    def create_session(self, *, encoding: str = "raw", want_expert: bool = False, label: str = "") -> str:
        """Open a session; ``encoding`` is "raw" or "png"."""
        request = pb.CreateSessionRequest(
            image_encoding=images.ENCODING_NAMES[encoding], want_expert=want_expert, client_label=label
        )
        return str(self._call(self._stub.CreateSession, request).session_id)

    def reset(
        self, session_id: str, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> ResetResult:
        response = self._call(
            self._stub.Reset, _reset_request(ResetCall(session_id, seed, options)), session_id
        )
        return _reset_result(response, images.decode(response.observation.image, self.pngs))

    def step(self, session_id: str, action: str) -> StepResult:
        request = pb.StepRequest(session_id=session_id, action=action)
        response = self._call(self._stub.Step, request, session_id)
        return _step_result(response, images.decode(response.observation.image, self.pngs))

    def batch(self, calls: Sequence[ResetCall | StepCall]) -> list[ResetResult | StepResult | EnvCallError]:
        """Many resets and steps in one round trip (several when more than the server's
        max_batch_items); a failed item comes back as an EnvCallError."""
        limit = self.describe().max_batch_items or len(calls) or 1
        results: list[ResetResult | StepResult | EnvCallError] = []
        for start in range(0, len(calls), limit):
            results += self._batch(calls[start : start + limit])
        return results

    def _batch(self, calls: Sequence[ResetCall | StepCall]) -> list[ResetResult | StepResult | EnvCallError]:
        items = [
            pb.BatchItem(reset=_reset_request(c))
            if isinstance(c, ResetCall)
            else pb.BatchItem(step=pb.StepRequest(session_id=c.session_id, action=c.action))
            for c in calls
        ]
        response = self._batch_call(pb.BatchStepRequest(items=items))
        decoded = _decode_images(response.results, self.pngs)
        results: list[ResetResult | StepResult | EnvCallError] = []
        for call, result, image in zip(calls, response.results, decoded, strict=True):
            kind = result.WhichOneof("result")
            if kind == "reset":
                results.append(_reset_result(result.reset, image))
            elif kind == "step":
                results.append(_step_result(result.step, image))
            else:
                code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
                results.append(EnvCallError(code, result.error.message, session_id=call.session_id))
        return results

    def close_session(self, session_id: str) -> None:
        self._call(self._stub.CloseSession, pb.CloseSessionRequest(session_id=session_id), session_id)

    def _batch_call(self, request: pb.BatchStepRequest) -> pb.BatchStepResponse:
        """One BatchStep, over the stream when the server offers it (unary otherwise)."""
        if not (self._want_stream and "batch_step_stream" in self.describe().capabilities):
            return self._call(self._stub.BatchStep, request)
        with self._stream_lock:
            if self._stream is None or self._stream.broken:
                self._stream = BatchStream(self._stub, self._metadata)
            stream = self._stream
        try:
            return stream.call(request, self.timeout)
        except StreamBroken as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:  # declared but not served: stop trying
                self._want_stream = False
                return self._call(self._stub.BatchStep, request)
            raise EnvCallError(exc.code, exc.details) from None

    def _call(self, method: Any, request: Any, session_id: str = "") -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise EnvCallError(exc.code(), exc.details() or "", session_id=session_id) from None


# ---------------------------------------------------------------------- conversions
def _reset_request(call: ResetCall) -> pb.ResetRequest:
    request = pb.ResetRequest(session_id=call.session_id)
    if call.seed is not None:
        request.seed = call.seed
    if call.options:
        request.options.CopyFrom(_struct(call.options))
    return request


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def _decode_images(
    results: Sequence[pb.BatchResult], pngs: images.DecodedPngs | None = None
) -> list[np.ndarray | None]:
    """The images of a batch's results (None for errors), the PNG ones decoded on several threads;
    raises the first ImageDecodeError in item order, as decoding them one by one would."""
    fields: list[tuple[int, bytes, int, int, int] | None] = []
    for result in results:
        kind = result.WhichOneof("result")
        if kind in ("reset", "step"):
            image = getattr(result, kind).observation.image
            fields.append((image.encoding, image.data, image.height, image.width, image.channels))
        else:
            fields.append(None)
    png = [(i, f) for i, f in enumerate(fields) if f is not None and f[0] == images.PNG]

    def decode(fields: tuple[int, bytes, int, int, int]) -> np.ndarray:
        return images.decode_parts(*fields, pngs)

    arrays = images.parallel_map(decode, [f for _, f in png])
    done = {i: array for (i, _), array in zip(png, arrays, strict=True)}
    decoded: list[np.ndarray | None] = []
    for i, f in enumerate(fields):
        array = done[i] if i in done else None if f is None else decode(f)
        if isinstance(array, BaseException):
            raise array
        decoded.append(array)
    return decoded


def observation_from_message(message: pb.Observation, image: np.ndarray | None = None) -> Observation:
    """The wire observation as a typed one with a decoded image (``image``: decoded already)."""
    expert = None
    if message.HasField("expert"):
        expert = ExpertMove(
            action=message.expert.action,
            thoughts=message.expert.thoughts,
            facts=tuple((f.key, f.value) for f in message.expert.facts),
        )
    return Observation(
        image=images.decode(message.image) if image is None else image,
        task=message.task,
        legal_actions=tuple(message.legal_actions),
        expert=expert,
    )


def _reset_result(message: pb.ResetResponse, image: np.ndarray | None = None) -> ResetResult:
    return ResetResult(observation_from_message(message.observation, image), message.seed, message.episode)


def _step_result(message: pb.StepResponse, image: np.ndarray | None = None) -> StepResult:
    return StepResult(
        observation=observation_from_message(message.observation, image),
        reward=message.reward,
        terminated=message.terminated,
        truncated=message.truncated,
        info=json_format.MessageToDict(message.info),
        episode_step=message.episode_step,
    )
